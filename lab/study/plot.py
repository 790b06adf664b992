"""Plots of the study: success probability vs k, one PNG per cut-in rate."""

from __future__ import annotations

from pathlib import Path

from lab.study.points import Row


def plot(rows: list[Row], out: Path) -> list[Path]:
    """One PNG per rate: success probability vs k, a line and Wilson band per schedule (model),
    error bars where the lab measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for rate in sorted({r.rate_per_ms for r in rows}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for n, name in enumerate(dict.fromkeys(r.schedule for r in rows)):
            color = f"C{n}"
            model = [r for r in rows if r.source == "model" and r.schedule == name and r.rate_per_ms == rate]
            if model:
                ax.plot([r.k for r in model], [r.p for r in model], marker="o", color=color, label=f"{name} (model)")
                ax.fill_between([r.k for r in model], [r.low for r in model], [r.high for r in model],
                                color=color, alpha=0.2)
            lab = [r for r in rows if r.source == "lab" and r.schedule == name and r.rate_per_ms == rate]
            if lab:
                ax.errorbar([r.k for r in lab], [r.p for r in lab],
                            yerr=[[r.p - r.low for r in lab], [r.high - r.p for r in lab]],
                            fmt="s", color=color, markerfacecolor="white", capsize=4, label=f"{name} (lab)")
        ax.set(xlabel="k (punch packets per side)", ylabel="P(direct path)", ylim=(0, 1.02),
               title=f"Improved protocol under Poisson cut-ins, {rate:g} new mappings/ms per NAT")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        path = out / f"improved-rate-{rate:g}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths
