"""Reports: what a scenario run shows, drawn for people who would rather look than read.

:mod:`~lab.report.ladder` classifies a cell's capture into the spec's steps (lanes A, NAT-A, server,
NAT-B, B), :mod:`~lab.report.draw` draws ladders and the success heatmap (matplotlib),
:mod:`~lab.report.build` assembles a run's report (``RUN_DIR/report/``) and its Markdown summary,
:mod:`~lab.report.cli` is ``dp2pt-lab report`` / ``python3 -m lab.report``.
"""

from lab.report.build import cell_dirs, load_result, report, success_matrix, summary_markdown
from lab.report.cli import main, register

__all__ = ["cell_dirs", "load_result", "main", "register", "report", "success_matrix", "summary_markdown"]
