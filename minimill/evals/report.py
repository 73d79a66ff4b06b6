"""The scoreboard as a Markdown table and as a price-vs-quality plot (PNG)."""

from __future__ import annotations

from pathlib import Path

from minimill.evals.scoreboard import Scoreboard


def markdown(board: Scoreboard, default: str | None = None) -> str:
    """One row per model: mean quality, cost and latency per item, then accuracy [95% CI] per suite."""
    suites = sorted({name for m in board.models.values() for name in m.suites})
    head = ["model", "quality", "$/1k items", "s/item", *suites]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in sorted(board.models.values(), key=lambda m: -m.quality):
        cells = [f"**{model.model}** (default)" if model.model == default else model.model,
                 f"{model.quality:.3f}", f"{model.cost_per_item * 1000:.4f}", f"{model.latency_s:.2f}"]
        for name in suites:
            s = model.suites.get(name)
            cells.append(f"{s.accuracy:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]" if s else "–")
        lines.append("| " + " | ".join(cells) + " |")
    counts = sorted({s.n for m in board.models.values() for s in m.suites.values()})
    lines.append("")
    lines.append(f"Quality: mean accuracy over suites (each suite weighs the same); items per suite: "
                 f"{', '.join(map(str, counts))}; intervals: Wilson 95%; cost from each response's usage.cost.")
    return "\n".join(lines) + "\n"


def plot(board: Scoreboard, path: Path, default: str | None = None) -> Path:
    """Quality against cost per 1,000 items, one labelled point per model; written to `path` (PNG)."""
    from matplotlib.figure import Figure  # not pyplot: no global figure state, safe in a server thread

    figure = Figure(figsize=(7, 4.5), dpi=120)
    axes = figure.add_subplot()
    for model in board.models.values():
        cost = model.cost_per_item * 1000
        marker = "*" if model.model == default else "o"
        axes.scatter([cost], [model.quality], s=160 if marker == "*" else 60, marker=marker)
        axes.annotate(model.model + (" (default)" if model.model == default else ""), (cost, model.quality),
                      textcoords="offset points", xytext=(6, 6), fontsize=9)
    axes.set_xlabel("USD per 1,000 eval items (price book)")
    axes.set_ylabel("mean accuracy over suites")
    axes.set_ylim(0, 1)
    most = max((m.cost_per_item * 1000 for m in board.models.values()), default=0.0)
    axes.set_xlim(0, most * 1.3 or 1.0)  # room for the labels right of the dearest point
    axes.grid(alpha=0.3)
    axes.set_title("minimill scoreboard: quality vs price")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
