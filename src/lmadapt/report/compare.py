"""Side-by-side views of RunRecords: terminal table, Markdown and HTML reports, Pareto plot and
learning curves of a compare."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lmadapt.report.record import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox

HEADERS = ("method", "model", "score (95% CI)", "vs best (95% CI)", "p", "tied", "trainable", "total",
           "train s", "latency ms/ex", "peak mem", "artifact", "selected")
TEXT_COLUMNS = {"method", "model", "selected"}  # left-aligned; the others are figures


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.2M' (bytes with unit='B' use powers of 1024)."""
    base = 1024.0 if unit == "B" else 1000.0
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < base:
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= base
    return f"{n:.1f}P{unit}"


def short_model(model: str) -> str:
    """A local path's last component; a hub id ('org/name') as it is."""
    if Path(model).exists() or model.startswith(("/", ".", "~")) or model.count("/") > 1:
        return Path(model).name
    return model


def _number(value: object) -> str:
    """A hyperparameter value, short: 3e-04, 0.1, 8, True."""
    if isinstance(value, float) and value != 0 and not 1e-2 <= abs(value) < 1e4:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def selected_text(selected: Mapping[str, object]) -> str:
    """'lr=3e-04, lora_r=8' for what a search chose; '-' when nothing was."""
    return ", ".join(f"{k}={_number(v)}" for k, v in selected.items()) or "-"


def p_text(p: float | None) -> str:
    return "-" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def row(record: RunRecord) -> list[str]:
    """One table row, in HEADERS' order; '-' where an (older) record lacks the figure."""
    score = f"{record.score:.3f}"
    if record.score_sd is not None and len(record.seed_scores) >= 2:
        score += f" ± {record.score_sd:.3f}"
    score += f" ({record.ci_low:.3f}–{record.ci_high:.3f})"
    diff = "-"
    if record.diff_vs_best is not None:
        diff = f"{record.diff_vs_best:+.3f}"
        if record.diff_ci_low is not None and record.diff_ci_high is not None:
            diff += f" ({record.diff_ci_low:+.3f}, {record.diff_ci_high:+.3f})"
    tied = {True: "=best", False: "below", None: ""}[record.tied_best]
    ms = record.eval_latency_ms
    latency = "-" if ms <= 0 else f"{ms:.1f}" if ms >= 1 else f"{ms:.2f}"
    return [record.label or record.method, short_model(record.model), score, diff,
            p_text(record.p_vs_best), tied, human(record.trainable_params),
            human(record.total_params), f"{record.train_seconds:.1f}", latency,
            human(record.peak_memory_bytes, "B"), human(record.artifact_bytes, "B"),
            selected_text(record.selected)]


def _ranked(records: Sequence[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: -r.score)


def terminal_table(records: list[RunRecord], title: str = "") -> Table:
    table = Table(title=title or None)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in TEXT_COLUMNS else "right")
    for record in _ranked(records):
        table.add_row(*(Text(cell) for cell in row(record)))  # Text: no rich markup in values
    return table


def print_table(records: list[RunRecord], title: str = "") -> None:
    Console(width=160).print(terminal_table(records, title))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_report(records: list[RunRecord], title: str, notes: list[str] | None = None,
                    recommendation: list[str] | None = None, curves: bool = False) -> str:
    """report.md: title, the recommendation (Markdown lines, as given), the table, the setting,
    the plots (learning_curves.png only with `curves`), then the notes."""
    metric = records[0].metric if records else "score"
    lines = [f"# {title}", ""]
    if recommendation:
        lines += [*recommendation, ""]
    legend = f"Metric: **{metric}** on the eval set, with a bootstrap 95% CI"
    if any(r.score_sd is not None and len(r.seed_scores) >= 2 for r in records):
        legend += "; ± sd: spread across training seeds"
    if any(r.diff_vs_best is not None for r in records):
        legend += ("; vs best: paired difference to the top method on the same eval examples "
                   "(bootstrap 95% CI), p Holm-corrected across methods; =best: not significantly "
                   "different from the best, below: significantly worse")
    lines += [legend + ".", ""]
    lines += ["| " + " | ".join(HEADERS) + " |",
              "|" + "".join("---|" if h in TEXT_COLUMNS else "---:|" for h in HEADERS)]
    lines += ["| " + " | ".join(_cell(c) for c in row(r)) + " |" for r in _ranked(records)]
    if records:
        r0 = records[0]
        lines += ["", f"Task: `{r0.task}`; eval examples: {r0.eval_examples}; hardware: {r0.hardware}; "
                  f"versions: {', '.join(f'{k} {v}' for k, v in r0.versions.items())}."]
    lines += ["", "![quality vs cost](pareto.png)", ""]
    if curves:
        lines += ["![learning curves](learning_curves.png)", ""]
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


def param_axis(counts: Sequence[int]) -> tuple[list[float], float | None]:
    """x positions of trainable-parameter counts on a log axis, and where 0 sits (None: no 0).

    A log axis has no 0, so 0 (prompting methods) is drawn one decade below the decade of the
    smallest positive count, at a tick labelled "0". With no positive count the axis is linear and
    the counts are their own positions (zero_x None)."""
    positive = [c for c in counts if c > 0]
    if not positive or len(positive) == len(counts):
        return [float(c) for c in counts], None
    zero_x = 10.0 ** (math.floor(math.log10(min(positive))) - 1)
    return [float(c) if c > 0 else zero_x for c in counts], zero_x


def _log_axis_with_zero(ax: Axes, zero_x: float, largest: float) -> None:
    """Decade ticks plus the "0" tick at zero_x, and a '//' break between them."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    first, last = round(math.log10(zero_x)) + 1, math.ceil(math.log10(largest))
    ax.xaxis.set_major_locator(FixedLocator([zero_x] + [10.0 ** k for k in range(first, last + 1)]))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: "0" if math.isclose(x, zero_x) else f"$10^{{{round(math.log10(x))}}}$"))
    ax.xaxis.set_minor_locator(FixedLocator([m * 10.0 ** k for k in range(first, last) for m in range(2, 10)]))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(zero_x / 10 ** 0.4, largest * 10 ** 0.4)
    ax.axvspan(zero_x * 10 ** 0.35, zero_x * 10 ** 0.65, color="0.92", zorder=0)
    ax.text(zero_x * 10 ** 0.5, 0, "//", transform=ax.get_xaxis_transform(), ha="center",
            va="center", fontsize=9, backgroundcolor="white", clip_on=False)


def _label_box(annotation: Annotation, renderer: RendererBase) -> Bbox:
    """The text's own box in display pixels (Annotation's extent also covers its leader line)."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def point_labels(ax: Axes) -> list[Annotation]:
    """The point labels (annotations) of a panel."""
    from matplotlib.text import Annotation

    return [t for t in ax.texts if isinstance(t, Annotation)]


def spread_labels(ax: Axes, pad: float = 2.0) -> None:
    """Nudge a panel's point labels vertically so that no two text boxes overlap.

    Deterministic, one pass from the lowest label up: each keeps its place if free, else moves to
    the nearest free height (just above or below a label already placed that it collides with),
    at least `pad` pixels from the others. Offsets change in points, so they survive resizing."""
    fig = ax.get_figure()
    renderer = fig.canvas.get_renderer()
    labels = point_labels(ax)
    boxes = [_label_box(a, renderer) for a in labels]
    placed: list[tuple[float, float, float, float]] = []  # x0, x1, y0, y1 in pixels

    def free(x0: float, x1: float, y0: float, y1: float) -> bool:
        return not any(x0 < px1 + pad and px0 < x1 + pad and y0 < py1 + pad - 1e-6
                       and py0 < y1 + pad - 1e-6 for px0, px1, py0, py1 in placed)

    for i in sorted(range(len(labels)), key=lambda i: (boxes[i].y0, i)):
        box = boxes[i]
        height = box.y1 - box.y0
        near = [p for p in placed if box.x0 < p[1] + pad and p[0] < box.x1 + pad]
        candidates = [box.y0] + [p[3] + pad for p in near] + [p[2] - pad - height for p in near]
        y0 = min((c for c in candidates if free(box.x0, box.x1, c, c + height)),
                 key=lambda c: (abs(c - box.y0), -c))
        dx, dy = labels[i].xyann
        labels[i].xyann = (dx, dy + (y0 - box.y0) * 72 / fig.dpi)
        placed.append((box.x0, box.x1, y0, y0 + height))


def _point_names(records: Sequence[RunRecord]) -> list[str]:
    """Each record's plot label: its label, else METHOD (METHOD@MODEL when models differ)."""
    several = len({r.model for r in records}) > 1
    return [r.label or (f"{r.method}@{short_model(r.model)}" if several else r.method) for r in records]


def pareto_figure(records: list[RunRecord]) -> Figure:
    """Four panels of score (95% CI bars) vs cost: trainable parameters (log), train time, peak
    memory, eval latency. Red: the panel's Pareto front; a star: tied with the best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    gib = max((r.peak_memory_bytes for r in records), default=0) >= 2 ** 30
    memory_unit, memory_scale = ("GiB", 2 ** 30) if gib else ("MiB", 2 ** 20)
    panels = [("trainable parameters", lambda r: r.trainable_params),
              ("train time (s)", lambda r: r.train_seconds),
              (f"peak memory ({memory_unit})", lambda r: r.peak_memory_bytes / memory_scale),
              ("eval latency (ms/example)", lambda r: r.eval_latency_ms if r.eval_latency_ms > 0 else None)]
    names = _point_names(records)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, (label, cost) in zip(axes.flat, panels, strict=True):
        shown = [i for i, r in enumerate(records) if cost(r) is not None]
        points = [(float(cost(records[i])), records[i].score) for i in shown]
        front = {shown[j] for j in pareto_front(points)}
        xs = [x for x, _ in points]
        zero_x = None
        if label == "trainable parameters":
            xs, zero_x = param_axis([records[i].trainable_params for i in shown])
            if any(x > 0 for x in xs):
                ax.set_xscale("log")
                label += " (log)"
        for i, x in zip(shown, xs, strict=True):
            r = records[i]
            ax.errorbar(x, r.score, yerr=[[max(r.score - r.ci_low, 0)], [max(r.ci_high - r.score, 0)]],
                        fmt="*" if r.tied_best else "o", markersize=13 if r.tied_best else 6,
                        color="tab:red" if i in front else "tab:blue", capsize=3)
            ax.annotate(names[i], (x, r.score), textcoords="offset points", xytext=(6, 4), fontsize=8,
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6, "shrinkA": 0, "shrinkB": 4})
        frontier = sorted((x, records[i].score) for i, x in zip(shown, xs, strict=True) if i in front)
        if len(frontier) > 1:
            ax.plot(*zip(*frontier, strict=True), "--", color="tab:red", alpha=0.5)
        if zero_x is not None:
            _log_axis_with_zero(ax, zero_x, max(xs))
        if not shown:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color="0.5")
        ax.set_xlabel(label)
        ax.set_ylabel(records[0].metric if records else "score")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], marker="o", ls="", color="tab:red", label="Pareto front (per panel)"),
               Line2D([], [], marker="o", ls="", color="tab:blue", label="dominated")]
    if any(r.tied_best for r in records):
        handles.append(Line2D([], [], marker="*", ls="", markersize=12, color="0.3",
                              label="tied with the best (not significantly different)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle("quality vs cost (bars: 95% CI)")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    for ax in axes.flat:
        spread_labels(ax)
    return fig


def _save(fig: Figure, path: Path) -> None:
    """Write a PNG through a temporary sibling and a rename; closes the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def pareto_plot(records: list[RunRecord], path: Path) -> None:
    """pareto.png: the four quality-vs-cost panels of `pareto_figure`."""
    _save(pareto_figure(records), path)


def _train_log(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, loss) and (epoch, validation score) rows of a run's train_log.jsonl."""
    losses, epochs = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if "loss" in entry:
            losses.append((int(entry["step"]), float(entry["loss"])))
        elif "epoch_eval" in entry and "score" in entry["epoch_eval"]:
            epochs.append((int(entry["epoch_eval"]["epoch"]), float(entry["epoch_eval"]["score"])))
    return losses, epochs


def learning_curves(records: list[RunRecord], run_dirs: Mapping[str, Path], path: Path) -> bool:
    """learning_curves.png: training loss per optimizer step and validation score per epoch, one
    line per method. `run_dirs` maps a record's label (else method) to its run folder. False, and
    nothing written, when no run has a train_log.jsonl (e.g. only prompting methods)."""
    logs = []
    for name, record in zip(_point_names(records), records, strict=True):
        folder = run_dirs.get(record.label or record.method)
        if folder is not None and (Path(folder) / "train_log.jsonl").is_file():
            logs.append((name, *_train_log(Path(folder) / "train_log.jsonl")))
    if not logs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, losses, epochs in logs:
        if losses:
            loss_ax.plot(*zip(*losses, strict=True), lw=1, label=name)
        if epochs:
            val_ax.plot(*zip(*epochs, strict=True), "o-", label=name)
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    val_ax.set(xlabel="epoch", ylabel="validation score", title="validation score per epoch")
    if not any(epochs for _, _, epochs in logs):
        val_ax.text(0.5, 0.5, "no per-epoch evaluation", transform=val_ax.transAxes, ha="center", color="0.5")
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return True
