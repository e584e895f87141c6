"""Side-by-side views of RunRecords: terminal table, Markdown report, Pareto plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from lmadapt.report.record import RunRecord

HEADERS = ("method", "model", "score (95% CI)", "macro-F1", "trainable", "total", "train s",
           "eval ex/s", "peak mem", "artifact")


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.2M' (bytes with unit='B' use powers of 1024)."""
    base = 1024.0 if unit == "B" else 1000.0
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < base:
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= base
    return f"{n:.1f}P{unit}"


def row(record: RunRecord) -> list[str]:
    model = Path(record.model).name if "/" in record.model and Path(record.model).exists() else record.model
    f1 = f"{record.macro_f1:.3f}" if record.macro_f1 is not None else "-"
    return [record.method, model,
            f"{record.score:.3f} ({record.ci_low:.3f}–{record.ci_high:.3f})", f1,
            human(record.trainable_params), human(record.total_params), f"{record.train_seconds:.1f}",
            f"{record.eval_examples_per_second:.1f}", human(record.peak_memory_bytes, "B"),
            human(record.artifact_bytes, "B")]


def terminal_table(records: list[RunRecord], title: str = "") -> Table:
    table = Table(title=title or None)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("method", "model") else "right")
    for record in sorted(records, key=lambda r: -r.score):
        table.add_row(*row(record))
    return table


def print_table(records: list[RunRecord], title: str = "") -> None:
    Console(width=160).print(terminal_table(records, title))


def markdown_report(records: list[RunRecord], title: str, notes: list[str] | None = None) -> str:
    metric = records[0].metric if records else "score"
    lines = [f"# {title}", "", f"Metric: **{metric}** on the eval set, with a bootstrap 95% CI.", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in sorted(records, key=lambda r: -r.score)]
    if records:
        r0 = records[0]
        lines += ["", f"Task: `{r0.task}`; eval examples: {r0.eval_examples}; hardware: {r0.hardware}; "
                  f"versions: {', '.join(f'{k} {v}' for k, v in r0.versions.items())}."]
    lines += ["", "![Pareto plot](pareto.png)", ""]
    lines += notes or []
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower cost x and higher score y are better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def pareto_plot(records: list[RunRecord], path: Path) -> None:
    """Two panels: score vs trainable parameters (log x) and score vs train time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [("trainable parameters (log)", lambda r: max(r.trainable_params, 1), True),
              ("train time (s)", lambda r: r.train_seconds, False)]
    for ax, (label, cost, log) in zip(axes, panels, strict=True):
        points = [(cost(r), r.score) for r in records]
        front = set(pareto_front(points))
        for i, (r, (x, y)) in enumerate(zip(records, points, strict=True)):
            ax.errorbar(x, y, yerr=[[y - r.ci_low], [r.ci_high - y]], fmt="o",
                        color="tab:red" if i in front else "tab:blue", capsize=3)
            ax.annotate(r.method, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        frontier = sorted(points[i] for i in front)
        if len(frontier) > 1:
            ax.plot(*zip(*frontier, strict=True), "--", color="tab:red", alpha=0.5)
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(records[0].metric if records else "score")
        ax.grid(alpha=0.3)
    fig.suptitle("quality vs cost (red: Pareto front)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
