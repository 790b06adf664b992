"""Reports: what a scenario run shows, drawn for people who would rather look than read.

:mod:`~lab.report.ladder` classifies a cell's capture (any agent's; the spec's steps for dp2pt's)
on lanes A, NAT-A, server, NAT-B, B, :mod:`~lab.report.draw` draws ladders and the outcome heatmap
(matplotlib),
:mod:`~lab.report.build` assembles a run's report (``RUN_DIR/report/``) and its Markdown summary,
:mod:`~lab.report.cli` is ``dp2pt-lab report`` / ``python3 -m lab.report``.
"""

from lab.report.build import STEPS, cell_dirs, load_result, outcome_panels, report, summary_markdown
from lab.report.cli import add_arguments, handler, main, register

__all__ = ["STEPS", "add_arguments", "cell_dirs", "handler", "load_result", "main", "outcome_panels", "register",
           "report", "summary_markdown"]
