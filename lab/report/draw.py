"""Pictures of a run: the ladder diagram of one exchange and the success-matrix heatmap of many.

matplotlib with the Agg backend (no display; PNG and SVG).  Drawing only: the data comes from
:mod:`lab.report.ladder` (events with steps) and :mod:`lab.report` (cell outcomes).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lab.report.ladder import LANES, Ladder  # noqa: E402

PANELS_PER_ROW = 2
MAX_ARROWS = 120  # a ladder taller than this is unreadable; the rest is summarised in the title
ROW_HEIGHT = 0.28  # inches per arrow
COLORS = {"control": "tab:blue", "stun": "tab:green", "punch": "tab:orange", "reply": "tab:red",
          "data": "tab:purple", "ack": "tab:purple", "other": "0.6"}


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


def draw_heatmap(matrix: dict[str, dict[tuple[str, str], tuple[int, int]]], out: Path) -> list[Path]:
    """One panel per variant: NAT-A profile (rows) x NAT-B profile (columns), colour = success rate.

    ``matrix[variant][(nat_a, nat_b)] = (successes, runs)``; each cell is annotated "s/n".
    """
    variants = sorted(matrix) or ["(none)"]
    profiles_a = sorted({a for v in matrix.values() for a, _ in v})
    profiles_b = sorted({b for v in matrix.values() for _, b in v})
    w = 1.2 + 0.9 * max(len(profiles_b), 1)
    h = 1.2 + 0.6 * max(len(profiles_a), 1)
    ncols = min(len(variants), PANELS_PER_ROW)
    nrows = -(-len(variants) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(variants):]:
        ax.axis("off")
    image = None
    for ax, variant in zip(flat, variants):
        cells = matrix.get(variant, {})
        grid = [[_rate(cells.get((a, b))) for b in profiles_b] for a in profiles_a]
        image = ax.imshow(grid or [[float("nan")]], vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i, a in enumerate(profiles_a):
            for j, b in enumerate(profiles_b):
                if (a, b) in cells:
                    s, n = cells[(a, b)]
                    ax.text(j, i, f"{s}/{n}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(profiles_b)), profiles_b, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(profiles_a)), profiles_a, fontsize=7)
        ax.set_xlabel("NAT-B profile")
        if ax in list(axes[:, 0]):
            ax.set_ylabel("NAT-A profile")
        ax.set_title(variant)
    if image is not None:
        fig.colorbar(image, ax=flat, label="direct path rate", shrink=0.8)
    return _save(fig, out)


def _rate(cell: tuple[int, int] | None) -> float:
    return cell[0] / cell[1] if cell and cell[1] else float("nan")


def _save(fig, out: Path) -> list[Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
