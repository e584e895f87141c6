"""The compare report: table cells, report.md layout, plots (zero-parameter tick, label spreading),
learning curves and the self-contained report.html."""

import base64
import json
import re
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from rich.console import Console  # noqa: E402

from lmadapt.report.compare import (  # noqa: E402
    HEADERS,
    learning_curves,
    markdown_report,
    param_axis,
    pareto_figure,
    pareto_plot,
    point_labels,
    row,
    spread_labels,
    terminal_table,
)
from lmadapt.report.html import html_report  # noqa: E402
from lmadapt.report.record import RunRecord  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def record(method: str = "lora", score: float = 0.8, trainable: int = 8192, **fields) -> RunRecord:
    base = dict(method=method, model="org/base", task="sst2", metric="accuracy", score=score,
                ci_low=score - 0.05, ci_high=score + 0.05, trainable_params=trainable,
                total_params=10 ** 8, peak_memory_bytes=3 * 2 ** 30, train_seconds=12.0,
                eval_examples_per_second=50.0, artifact_bytes=10 ** 6, seed=0, eval_latency_ms=20.0)
    return RunRecord(**{**base, **fields})


def cells(r: RunRecord) -> dict[str, str]:
    return dict(zip(HEADERS, row(r), strict=True))


def test_row_shows_seed_spread_paired_difference_p_tie_and_selection():
    r = record(label="lora@m", model="/models/sub/m", seed_scores=[0.79, 0.81], score_sd=0.0141,
               diff_vs_best=-0.012, diff_ci_low=-0.03, diff_ci_high=0.006, p_vs_best=0.0031,
               tied_best=True, selected={"lr": 3e-4, "lora_r": 8})
    c = cells(r)
    assert c["method"] == "lora@m" and c["model"] == "m"
    assert c["score (95% CI)"] == "0.800 ± 0.014 (0.750–0.850)"
    assert c["vs best (95% CI)"] == "-0.012 (-0.030, +0.006)"
    assert c["p"] == "0.003" and c["tied"] == "=best"
    assert c["selected"] == "lr=3e-04, lora_r=8"
    assert c["latency ms/ex"] == "20.0"
    below = cells(record(p_vs_best=0.00002, tied_best=False, selected={"dropout": 0.1}))
    assert (below["p"], below["tied"], below["selected"]) == ("<0.001", "below", "dropout=0.1")


def test_row_of_an_older_record_prints_dashes():
    c = cells(record(eval_latency_ms=0.0, score_sd=0.01, seed_scores=[0.8]))  # one seed: no sd
    assert c["method"] == "lora" and c["model"] == "org/base"  # a hub id stays whole
    assert c["score (95% CI)"] == "0.800 (0.750–0.850)"
    assert (c["vs best (95% CI)"], c["p"], c["latency ms/ex"], c["selected"]) == ("-", "-", "-", "-")
    assert c["tied"] == ""


def test_terminal_table_sorts_by_score_and_prints_values_literally():
    console = Console(record=True, width=300)
    console.print(terminal_table([record("low", 0.5), record("high", 0.9, selected={"tag": "[red]x"})]))
    text = console.export_text()
    assert text.index("high") < text.index("low")
    assert "tag=[red]x" in text  # not taken for rich markup


def test_markdown_puts_the_recommendation_right_after_the_title():
    recommendation = ["**Use `lora`**: best score at 0.1% of the parameters.", "- runner-up: `ia3`"]
    md = markdown_report([record("ia3", 0.7), record("lora", 0.9)], "My compare", ["## Notes", "n"],
                         recommendation=recommendation, curves=True)
    lines = md.splitlines()
    assert lines[:5] == ["# My compare", "", *recommendation, ""]
    assert lines[5].startswith("Metric: **accuracy**")
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(HEADERS) + " |"
    assert table[1].startswith("| lora ") and table[2].startswith("| ia3 ")
    order = [md.index(s) for s in ("Task: `sst2`", "![quality vs cost](pareto.png)",
                                   "![learning curves](learning_curves.png)", "## Notes")]
    assert order == sorted(order)
    plain = markdown_report([record()], "T")
    assert "learning_curves.png" not in plain and plain.splitlines()[2].startswith("Metric:")


def test_markdown_escapes_pipes_in_cells():
    md = markdown_report([record(selected={"pattern": "a|b"})], "T")
    assert "pattern=a\\|b |" in md


def test_param_axis_puts_zero_one_decade_below_the_smallest_count():
    xs, zero_x = param_axis([0, 8192, 1_000_000, 0])
    assert zero_x == 100.0 and xs == [100.0, 8192.0, 1_000_000.0, 100.0]
    assert param_axis([0, 0]) == ([0.0, 0.0], None)  # all zero: linear axis, no special tick
    assert param_axis([10, 2000]) == ([10.0, 2000.0], None)


def test_pareto_plot_shows_prompting_methods_at_a_zero_tick(tmp_path):
    records = [record("prompt", 0.6, 0), record("lora", 0.8, 8192), record("full", 0.82, 10 ** 8)]
    fig = pareto_figure(records)
    fig.canvas.draw()
    params = fig.axes[0]
    assert params.get_xscale() == "log"
    ticks = {t.get_text(): t.get_position()[0] for t in params.get_xticklabels()}
    assert ticks["0"] < 8192 / 10 and ticks["0"] > params.get_xlim()[0]
    assert "prompt" in [a.get_text() for a in point_labels(params)]
    plt.close(fig)
    pareto_plot(records, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes().startswith(PNG)
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed
    fig = pareto_figure([record("a", 0.6, 0), record("b", 0.7, 0)])
    assert fig.axes[0].get_xscale() == "linear"
    plt.close(fig)


def _overlapping(labels, renderer) -> list[tuple[str, str]]:
    boxes = [(a.get_text(), Text.get_window_extent(a, renderer)) for a in labels]
    return [(na, nb) for (na, a), (nb, b) in combinations(boxes, 2) if a.overlaps(b)]


def test_spread_labels_separates_labels_of_points_at_nearly_the_same_spot():
    fig, ax = plt.subplots()
    ax.set(xlim=(0, 1), ylim=(0, 1))
    for i in range(6):
        ax.annotate(f"method-{i}", (0.5 + i * 0.001, 0.5 + i * 0.002), textcoords="offset points",
                    xytext=(6, 4), arrowprops={"arrowstyle": "-"})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert _overlapping(point_labels(ax), renderer)  # as placed, they collide
    spread_labels(ax)
    fig.canvas.draw()
    assert _overlapping(point_labels(ax), renderer) == []
    plt.close(fig)


def test_pareto_figure_leaves_no_label_overlapping_another():
    records = [record(f"method-{i}", 0.8 + i * 0.0005, 8192 + i) for i in range(6)]
    fig = pareto_figure(records)
    fig.canvas.draw()
    for ax in fig.axes:
        assert len(point_labels(ax)) == 6
        assert _overlapping(point_labels(ax), fig.canvas.get_renderer()) == []
    plt.close(fig)


def _log(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_learning_curves_need_a_train_log(tmp_path):
    records = [record("prompt", 0.6, 0), record("lora", 0.8, label="lora")]
    dirs = {"prompt": tmp_path / "runs" / "prompt", "lora": tmp_path / "runs" / "lora"}
    dirs["prompt"].mkdir(parents=True)
    out = tmp_path / "learning_curves.png"
    assert learning_curves(records, dirs, out) is False and not out.exists()
    _log(dirs["lora"], [{"step": i, "loss": 2 / i} for i in range(1, 9)]
         + [{"epoch_eval": {"epoch": e, "score": 0.5 + e / 10}} for e in (1, 2)])
    assert learning_curves(records, dirs, out) is True
    assert out.read_bytes().startswith(PNG) and not list(tmp_path.glob(".*"))


def test_html_report_is_self_contained_and_escapes_text(tmp_path):
    image = PNG + b"not really an image"
    (tmp_path / "pareto.png").write_bytes(image)
    md = markdown_report([record("lora", 0.9), record("ia3", 0.7)], "Compare <script>alert(1)</script>",
                         recommendation=["Use *lora* or **ia3**; <script>x()</script> see `a<b>`:", "",
                                         "- one", "- two",
                                         "", "```", "x < y", "```"], curves=True)
    html_report(md, tmp_path, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert f'src="data:image/png;base64,{base64.b64encode(image).decode()}"' in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;script&gt;x()&lt;/script&gt; see" in page
    assert "<h1>" in page and "<em>lora</em>" in page and "<strong>ia3</strong>" in page
    assert "<code>a&lt;b&gt;</code>" in page and "<pre><code>x &lt; y</code></pre>" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert page.count("<table>") == 1 and page.count("<tr>") == 3
    assert '<td style="text-align: right">&lt;' not in page  # p is "-" for these old records
    assert re.findall(r'(?:src|href)="(?!data:)', page) == []  # no file or address is loaded
    assert "learning curves: image not found" in page  # referenced, never written
    assert not list(tmp_path.glob(".*"))
