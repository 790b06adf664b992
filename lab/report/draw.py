"""Pictures of a run: the ladder diagram of one exchange and the outcome heatmap of many.

matplotlib with the Agg backend (no display; PNG and SVG).  Drawing only: the data comes from
:mod:`lab.report.ladder` (events with steps) and :mod:`lab.report` (cell outcomes).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lab.report.ladder import LANES, Ladder  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from lab.report.build import Tally

PANELS_PER_ROW = 2
MAX_ARROWS = 120  # a ladder taller than this is unreadable; the rest is summarised in the title
ROW_HEIGHT = 0.28  # inches per arrow
COLORS = {"control": "tab:blue", "stun": "tab:green", "punch": "tab:orange", "reply": "tab:red",
          "data": "tab:purple", "ack": "tab:purple", "check": "tab:orange", "relay": "tab:cyan", "other": "0.6"}


def draw_ladder(ladder: Ladder, out: Path, title: str = "") -> list[Path]:
    """Lanes A, NAT-A, server, NAT-B, B; one arrow per packet labelled "step N: what ports".

    Dropped packets end at the NAT that dropped them, with a red X.  Returns the files written.
    """
    events = ladder.events[:MAX_ARROWS]
    x = {lane: i for i, lane in enumerate(LANES)}
    height = max(3.0, 1.2 + ROW_HEIGHT * len(events))
    fig, ax = plt.subplots(figsize=(11, height))
    n = max(len(events), 1)
    for lane, i in x.items():
        ax.plot([i, i], [0, n + 0.5], color="0.75", lw=1, zorder=0)
        ax.text(i, -0.6, lane, ha="center", va="bottom", fontsize=10, weight="bold")
    for row, e in enumerate(events, start=1):
        x0, x1 = x[e.src_lane], x[e.dst_lane]
        color = COLORS.get(e.kind, "0.6")
        ax.annotate("", xy=(x1, row), xytext=(x0, row),
                    arrowprops=dict(arrowstyle="->", color=color, lw=1.2, linestyle="--" if e.dropped_at else "-"))
        if e.dropped_at:
            ax.plot([x1], [row], marker="x", color="red", markersize=9, mew=2)
        step = f"{e.step}: " if e.step is not None else ""
        note = " DROPPED" if e.dropped_at else ""
        ax.text((x0 + x1) / 2, row - 0.12, f"{step}{e.label}{note}", ha="center", va="bottom", fontsize=7,
                color=color)
        ax.text(-0.55, row, f"{e.t * 1000:.1f} ms", ha="right", va="center", fontsize=6, color="0.4")
    ax.set_xlim(-1.2, len(LANES) - 0.5)
    ax.set_ylim(n + 0.8, -1.0)
    ax.axis("off")
    more = f" (first {MAX_ARROWS} of {len(ladder.events)} packets)" if len(ladder.events) > MAX_ARROWS else ""
    ctl = "" if ladder.control_captured else " — TCP control not in the capture"
    ax.set_title(f"{title}{more}{ctl}", fontsize=10)
    return _save(fig, out)


def draw_heatmap(panels: dict[str, dict[tuple[str, str], "Tally"]], out: Path) -> list[Path]:
    """One panel per agent and variant: NAT-A (and its cut-ins) down, NAT-B (and its cut-ins) across.

    ``panels`` is :func:`lab.report.build.outcome_panels`. A cell's colour is what the runs did
    (all direct, all relayed, all failed, or mixed); its text is the observed outcome with the count
    (``D 3/3``) over the expected one (``exp D``); a cell that did not end as expected gets a thick
    frame and a ``≠``. Laid out by matplotlib's constrained layout, so titles and tick labels never
    overlap a neighbour panel.
    """
    from matplotlib.patches import Patch, Rectangle

    names = list(panels) or ["(none)"]
    ncols = min(len(names), PANELS_PER_ROW)
    nrows = -(-len(names) // ncols)
    most_rows = max((len({a for a, _ in p}) for p in panels.values()), default=1)
    most_cols = max((len({b for _, b in p}) for p in panels.values()), default=1)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, layout="constrained",
                             figsize=(ncols * (2.6 + 0.62 * most_cols), nrows * (1.9 + 0.42 * most_rows) + 0.6))
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(flat, names):
        cells = panels.get(name, {})
        rows, cols = _ordered({a for a, _ in cells}), _ordered({b for _, b in cells})
        ax.imshow([[_colour(cells.get((a, b))) for b in cols] for a in rows] or [[(1, 1, 1)]], aspect="auto")
        for i, a in enumerate(rows):
            for j, b in enumerate(cols):
                tally = cells.get((a, b))
                if tally is None:
                    continue
                seen = "/".join(OUTCOME_LETTER[o] for o in sorted(tally.outcomes))
                main = max(tally.outcomes, key=tally.outcomes.get)
                text = f"{seen} {tally.outcomes[main]}/{tally.runs}"
                if tally.expected:
                    text += "\nexp " + "/".join(OUTCOME_LETTER[o] for o in sorted(tally.expected))
                if tally.as_expected is False:
                    text += " ≠"
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2.5, ec="black"))
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, linespacing=1.1)
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", rotation_mode="anchor", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_xticks([j - 0.5 for j in range(1, len(cols))], minor=True)
        ax.set_yticks([i - 0.5 for i in range(1, len(rows))], minor=True)
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("NAT-B (+ cut-ins on B's side)", fontsize=8)
        ax.set_ylabel("NAT-A (+ cut-ins on A's side)", fontsize=8)
        ax.set_title(name, fontsize=10)
    legend = [Patch(color=OUTCOME_COLOURS[o], label=f"{OUTCOME_LETTER[o]} = {o}") for o in OUTCOME_LETTER]
    legend.append(Patch(color=OUTCOME_COLOURS["mixed"], label="runs differ"))
    legend.append(Patch(fill=False, ec="black", lw=2.5, label="≠ not as expected"))
    fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False)
    return _save(fig, out)


#: Observed outcome -> colour (RdYlBu ends, so that red/green colour blindness still tells them apart).
OUTCOME_COLOURS = {"direct": "#1a9850", "relayed": "#4575b4", "failed": "#d73027", "mixed": "#fee08b"}
OUTCOME_LETTER = {"direct": "D", "relayed": "R", "failed": "F"}


def _colour(tally) -> tuple:
    from matplotlib.colors import to_rgb

    if tally is None or not tally.runs:
        return (1.0, 1.0, 1.0)
    kinds = set(tally.outcomes)
    return to_rgb(OUTCOME_COLOURS[kinds.pop() if len(kinds) == 1 and kinds <= set(OUTCOME_LETTER) else "mixed"])


def _ordered(labels: set[str]) -> list[str]:
    """Profiles in the lab's order (lab.world.nat), a profile's cut-in rows right after it."""
    from lab.world.nat import PROFILE_NAMES

    def key(label: str) -> tuple:
        profile, _, cuts = label.partition("  +")
        base = profile.split(":")[0]
        rank = PROFILE_NAMES.index(base) if base in PROFILE_NAMES else len(PROFILE_NAMES)
        return (rank, profile, int(cuts.split()[0]) if cuts else 0)

    return sorted(labels, key=key)


def _save(fig, out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
