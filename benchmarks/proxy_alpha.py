"""Score a finished `proxy` run at several alphas, and the base and expert alone, in one pass.

Eq. 1 of proxy-tuning is linear in alpha: per label,
    s(alpha) = s_base + alpha * (s_expert - s_anti) + c_row
where c_row is a per-example normalising constant that cannot change which label wins. So one
forward pass per model gives the exact predictions at every alpha
(`lmadapt.methods.proxy.method.alpha_predictions`; `tune` also records a small sweep in
`record.extra["alpha_sweep"]`, this script scores any list of alphas on a saved run).
The script rebuilds the run (`load_run`), scores the run's own eval examples
(`predictions.jsonl`: text + target), and reports accuracy with a bootstrap 95% CI and macro-F1
per alpha, plus each part's mean label margin (how strongly it leans to one label), which is
what decides whether adding expert - anti-expert helps.

    python benchmarks/proxy_alpha.py --run runs/proxy --alphas 0,0.25,0.5,1,2 --out alpha.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lmadapt.eval.metrics import score_predictions
from lmadapt.methods.proxy.method import alpha_predictions, label_scores, mean_label_margins
from lmadapt.run import load_run
from lmadapt.utils import atomic_write_text


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="A finished proxy run folder.")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1,1.5,2", help="Comma-separated.")
    parser.add_argument("--batch-size", type=int, default=16, help="Eval batch size.")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: the run's).")
    parser.add_argument("--out", type=Path, default=Path("proxy_alpha.json"), help="JSON output.")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    adapted, task, manifest = load_run(args.run, args.device)
    if manifest["method"] != "proxy":
        raise SystemExit(f"{args.run} is a {manifest['method']} run, not a proxy run")
    rows = [json.loads(line) for line in (args.run / "predictions.jsonl").read_text().splitlines()]
    texts, targets = [r["text"] for r in rows], [r["target"] for r in rows]
    began = time.perf_counter()
    scores = label_scores(adapted.source, adapted.base, texts, args.batch_size)  # name -> (N, L)
    seconds = time.perf_counter() - began
    if "base" not in scores:
        raise SystemExit("the labels are not single tokens: only the proxy itself is scored")
    alpha_run = adapted.cfg.proxy_alpha
    if alpha_run == 0:
        raise SystemExit("the run used alpha = 0: the expert - anti-expert term is not recoverable")
    labels = task.labels

    def scored(picked: torch.Tensor) -> dict:
        predictions = [labels[i] for i in picked.tolist()]
        out = score_predictions(predictions, targets, "classification")
        out["predicted_share"] = {lab: predictions.count(lab) / len(predictions) for lab in labels}
        return out

    result: dict = {"run": str(args.run), "alpha_run": alpha_run, "n": len(texts)}
    result["parts"] = {name: scored(scores[name].argmax(dim=1)) for name in ("base", "expert")}
    result["alphas"] = {
        a: scored(alpha_predictions(scores, alpha_run, float(a))) for a in args.alphas.split(",")
    }
    if len(labels) == 2:  # margin = s(label 0) - s(label 1): > 0 leans to label 0
        result["mean_margin"] = mean_label_margins(scores, alpha_run)
        result["margin_label"] = labels[0]
    result["seconds"] = seconds
    print(f"{len(texts)} eval examples of {args.run}, scored in {seconds:.0f} s\n")
    print(f"| scorer | accuracy (95% CI) | macro-F1 | predicted {labels[0]} |")
    print("|---|---|---|---|")
    named = [(f"{k} alone", v) for k, v in result["parts"].items()]
    named += [(f"proxy, alpha = {a}", v) for a, v in result["alphas"].items()]
    for name, r in named:
        print(
            f"| {name} | {r['score']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f}) | "
            f"{r['macro_f1']:.3f} | {r['predicted_share'][labels[0]]:.2f} |"
        )
    if "mean_margin" in result:
        print(f"\nmean label margin log p({labels[0]}) - log p({labels[1]}):")
        for name, value in result["mean_margin"].items():
            print(f"  {name:12s} {value:+.2f}")
    atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
