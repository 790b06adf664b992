"""The study of the improved protocol: success probability of punch schedules vs k, modelled and measured.

The improved protocol (spec, Diagram 1) sends k punches per side so that cut-ins on a sequential NAT
do not break the direct path, and says k and the order of hypotheses are to be tuned "so that the
probability of success in communication can be increased". ``dp2pt-lab study improved`` measures
that: the model's points (:mod:`~lab.study.points`) and their plots (:mod:`~lab.study.plot`), lab runs
on two ``symmetric-sequential`` kernel NATs under Poisson or scripted cut-ins
(:mod:`~lab.study.lab_runs`), and the verdict whether model and lab agree
(:mod:`~lab.study.agreement`); :mod:`~lab.study.cli` is the command. The same claims on links with a
clock (delay, loss, regions): :mod:`~lab.study.sweep` runs settings of link conditions run by run,
:mod:`~lab.study.clock` is ``study timing|cutin|fig4|loss|relay`` (the spec's timing claims next to
the round trip times they ran at).

The names below are the package's API (``from lab import study; study.parse_ks(...)``).
"""

from lab.study.agreement import (  # noqa: F401
    GRID_CSV_NAME,
    MODEL_TRIALS_FOR_LAB,
    judge_lab,
    judge_poisson,
    model_nat,
    model_prediction,
    prediction_interval,
    realized_counts,
    replay_arrivals,
    replay_prediction,
    run_timelines,
    write_grid,
)
from lab.study.cli import (  # noqa: F401
    DEFAULT_KS,
    DEFAULT_LAB_RUNS,
    DEFAULT_RATES,
    DEFAULT_SCHEDULES,
    DEFAULT_TRIALS,
    parse_ks,
    parse_rates,
    register,
    run_improved,
)
from lab.study.lab_runs import (  # noqa: F401
    GRID,
    GRID_DELTAS,
    Grid,
    LAB_PROFILE,
    LabOutcome,
    POISSON_SPAN_MS,
    Poisson,
    RUNS_JSONL,
    RUN_ATTEMPTS,
    allocation_order,
    collect_lab,
    lab_grid_run,
    lab_poisson_run,
    load_runs,
    plan_noise,
    poisson_plan,
)
from lab.study.plot import (  # noqa: F401
    plot,
)
from lab.study.points import (  # noqa: F401
    CSV_NAME,
    Row,
    SUMMARY_K,
    model_rows,
    summary,
    write_csv,
)
