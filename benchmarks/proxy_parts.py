"""The proxy-tuning table of one `lmadapt tune --method proxy` run on a generation task: the base
alone, the expert alone and the proxy, each with its 95% CI, and the paired differences between
them over the same eval examples (bootstrap CI, two-sided p, Holm-corrected over the pairs).
With `--direct RUN`, a run of the large model tuned directly on the same eval set, it adds that
row and "gap closed" = (proxy - base) / (direct - base), the paper's summary figure.

    python benchmarks/proxy_parts.py runs/proxy-gsm [--direct runs/lora-1.5b] --out proxy_parts.json

The proxy's per-example scores come from the run's predictions.jsonl, the parts' from its record
(`base_per_example`, `expert_per_example`: written with `proxy_report_parts=true`); the record's
`reference_nll_by_alpha` curve is printed when present. "detectable" is the smallest difference
the paired test would find with 80% power at this n and the pair's observed per-example spread:
(z_0.975 + z_0.8) · sd / sqrt(n) (`eval.significance.detectable_difference`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmadapt.eval.metrics import bootstrap_mean_ci
from lmadapt.eval.significance import detectable_difference, holm, paired_bootstrap


def per_example(run: Path) -> tuple[dict, list[str], np.ndarray]:
    """A run's record, its eval texts in order and its per-example scores."""
    record_path, predictions_path = run / "record.json", run / "predictions.jsonl"
    if not record_path.is_file() or not predictions_path.is_file():
        raise SystemExit(f"error: {run} has no record.json and predictions.jsonl; pass a finished lmadapt run folder")
    rows = [json.loads(line) for line in predictions_path.read_text().splitlines() if line.strip()]
    if any("score" not in row for row in rows):
        raise SystemExit(f"error: {predictions_path} has no per-example scores (a run from before they were kept)")
    return json.loads(record_path.read_text()), [row["text"] for row in rows], np.array([row["score"] for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the proxy run folder")
    parser.add_argument("--direct", type=Path, help="a run of the large model tuned directly, same eval set")
    parser.add_argument("--out", default="proxy_parts.json")
    args = parser.parse_args()

    record, texts, proxy = per_example(args.run)
    extra = record.get("extra", {})
    if record.get("method") != "proxy" or "base_per_example" not in extra:
        raise SystemExit(f"error: {args.run} is not a proxy run with its parts' per-example scores "
                         "(tune --method proxy, proxy_report_parts=true)")
    scores = {"base": np.array(extra["base_per_example"]), "expert": np.array(extra["expert_per_example"]),
              "proxy": proxy}
    if args.direct is not None:
        _, direct_texts, direct = per_example(args.direct)
        if direct_texts != texts:
            raise SystemExit(f"error: {args.direct} was scored on other eval examples than {args.run}")
        scores["direct"] = direct
    n = len(proxy)
    if any(len(v) != n for v in scores.values()):
        raise SystemExit("error: the parts' per-example scores and the predictions differ in length")
    rows = {}
    for name, values in scores.items():
        low, high = bootstrap_mean_ci(values)
        rows[name] = {"score": float(values.mean()), "ci_low": low, "ci_high": high}
    pairs = [("proxy", "base"), ("proxy", "expert"), ("expert", "base")]
    if "direct" in scores:
        pairs += [("direct", "proxy"), ("direct", "base")]
    tests = {f"{a} - {b}": paired_bootstrap(scores[a], scores[b]) for a, b in pairs}
    adjusted = holm([t.p for t in tests.values()])
    differences = {key: {"difference": t.diff, "ci_low": t.ci_low, "ci_high": t.ci_high, "p": t.p, "p_holm": p,
                         "detectable": detectable_difference(scores[a], scores[b])}
                   for (a, b), (key, t), p in zip(pairs, tests.items(), adjusted, strict=True)}
    result = {"run": str(args.run), "direct": str(args.direct) if args.direct else None, "n": n,
              "metric": record.get("metric"), "alpha": extra.get("proxy_alpha"), "rows": rows,
              "differences": differences, "reference_nll_by_alpha": extra.get("reference_nll_by_alpha")}
    if "direct" in scores and rows["direct"]["score"] != rows["base"]["score"]:
        result["gap_closed"] = ((rows["proxy"]["score"] - rows["base"]["score"])
                                / (rows["direct"]["score"] - rows["base"]["score"]))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.run}: {record.get('metric')} on {n} eval examples, alpha {extra.get('proxy_alpha')}\n")
    print("| model | score (95% CI) |\n|---|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['score']:.3f} ({row['ci_low']:.3f}–{row['ci_high']:.3f}) |")
    print("\n| difference | mean (95% CI) | p | p (Holm) | detectable |\n|---|---:|---:|---:|---:|")
    for key, d in differences.items():
        print(f"| {key} | {d['difference']:+.3f} ({d['ci_low']:+.3f}, {d['ci_high']:+.3f}) | {d['p']:.3f} "
              f"| {d['p_holm']:.3f} | {d['detectable']:.3f} |")
    if result["reference_nll_by_alpha"]:
        curve = ", ".join(f"{alpha}: {nll:.3f}" for alpha, nll in result["reference_nll_by_alpha"].items())
        print(f"\nreference answers' token NLL under Eq. 1 by alpha (0 = the base alone): {curve}")
    if "gap_closed" in result:
        print(f"\ngap closed = (proxy - base) / (direct - base) = {result['gap_closed']:.2f}")


if __name__ == "__main__":
    main()
