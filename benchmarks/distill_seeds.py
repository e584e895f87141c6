"""DSS vs label-only over several seeds: one table from the `fractions.json` of each seed's
`lmadapt distill train --fractions ...` folder (same settings and eval set, another `seed=`).

    python benchmarks/distill_seeds.py runs/dss-seed0 runs/dss-seed1 --out dss_seeds.json

Per fraction: each variant's mean score over seeds with a two-way bootstrap 95% CI (examples and
seeds resampled), the per-seed scores, and DSS − label-only as a paired bootstrap over the eval
examples of the per-example scores averaged over seeds (95% CI, two-sided p, Holm-corrected over
the fractions). "detectable" is the smallest difference that test would find with 80% power at
this n and the observed per-example spread: (z_0.975 + z_0.8) · sd / sqrt(n).

Why a cell scores what it does (from each cell's predictions.jsonl, seeds pooled): "parsed" is
the share of predictions that are arithmetic expressions lmadapt evaluates (`eval.arith`), "right
when parsed" the accuracy among those, and "x for *" the share that write multiplication as `x`
(not an operator, so unparsed).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lmadapt.eval.arith import equation_match, try_eval
from lmadapt.eval.significance import (
    detectable_difference,
    holm,
    paired_bootstrap,
    seeds_and_examples_ci,
)

SAME = ("model", "train", "eval", "eval_examples", "distill")  # meta that must agree across seeds


def load(folders: list[Path]) -> tuple[list[dict], list[dict]]:
    """Each folder's meta and rows; refuses folders whose settings differ beyond the seed."""
    metas, rows = [], []
    for folder in folders:
        path = folder / "fractions.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found; pass folders written by `lmadapt distill train --fractions`")
        data = json.loads(path.read_text())
        metas.append(data["meta"])
        rows.append(data["rows"])
    for meta in metas[1:]:
        differ = [k for k in SAME if meta[k] != metas[0][k]]
        cfg = {k: v for k, v in meta["train_config"].items() if k != "seed"}
        if cfg != {k: v for k, v in metas[0]["train_config"].items() if k != "seed"}:
            differ.append("train_config")
        if differ:
            raise SystemExit(f"error: the folders differ in {', '.join(differ)}, not only the seed")
    return metas, rows


def summarise(metas: list[dict], rows: list[list[dict]]) -> list[dict]:
    fractions = sorted({r["fraction"] for seed_rows in rows for r in seed_rows})
    table = []
    for fraction in fractions:
        line: dict = {"fraction": fraction}
        per_variant = {}
        for variant in ("label-only", "dss"):
            cells = [next((r for r in seed_rows if r["fraction"] == fraction and r["variant"] == variant), None)
                     for seed_rows in rows]
            if any(c is None or not c.get("per_example") for c in cells):
                break
            matrix = np.array([c["per_example"] for c in cells], dtype=float)
            low, high = seeds_and_examples_ci(matrix)
            per_variant[variant] = matrix
            line[variant] = {"mean": float(matrix.mean()), "ci": [low, high],
                             "seeds": [c["score"] for c in cells],
                             "train_seconds": [round(c["train_seconds"], 1) for c in cells]}
            line["train_examples"] = cells[0]["train_examples"]
        if len(per_variant) < 2:
            continue
        dss, base = per_variant["dss"].mean(axis=0), per_variant["label-only"].mean(axis=0)
        pair = paired_bootstrap(dss, base, seed=0)
        line.update(diff=pair.diff, diff_ci=[pair.ci_low, pair.ci_high], p=pair.p,
                    detectable=detectable_difference(dss, base), n=len(dss))
        table.append(line)
    for line, p in zip(table, holm([line["p"] for line in table]), strict=True):
        line["p_holm"] = p
    return table


def diagnose(folders: list[Path], fractions: list[float]) -> list[dict]:
    """Per fraction and variant, over all seeds' predictions: parsed share, accuracy when parsed,
    share writing `x` for multiplication."""
    out = []
    for fraction in fractions:
        for variant in ("label-only", "dss"):
            preds = []
            for folder in folders:
                path = folder / f"{variant}-{fraction:g}" / "predictions.jsonl"
                if path.is_file():
                    preds += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if not preds:
                continue
            parsed = [p for p in preds if try_eval(p["prediction"]) is not None]
            right = sum(equation_match(p["prediction"], p["target"]) for p in parsed)
            out.append({"fraction": fraction, "variant": variant, "predictions": len(preds),
                        "parsed": len(parsed) / len(preds), "right_when_parsed": right / max(1, len(parsed)),
                        "x_for_times": sum(" x " in f" {p['prediction']} ".replace("(", " ").replace(")", " ")
                                           for p in preds) / len(preds)})
    return out


def markdown(table: list[dict], metas: list[dict]) -> str:
    seeds = [m["train_config"]["seed"] for m in metas]
    out = [f"{metas[0]['model']}, {metas[0]['eval_examples']} eval examples, seeds {seeds} "
           f"(pool of {metas[0]['train_pool']} training examples)", "",
           "| fraction | train ex. | label-only mean [95% CI] (per seed) | DSS mean [95% CI] (per seed) "
           "| DSS − label-only [paired 95% CI] | p | p (Holm) | detectable |",
           "|---:|---:|---|---|---|---:|---:|---:|"]
    for line in table:
        def cell(v: dict) -> str:
            return (f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] "
                    f"({', '.join(f'{s:.3f}' for s in v['seeds'])})")
        out.append(f"| {line['fraction']:g} | {line['train_examples']} | {cell(line['label-only'])} "
                   f"| {cell(line['dss'])} | {line['diff']:+.3f} [{line['diff_ci'][0]:+.3f}, {line['diff_ci'][1]:+.3f}] "
                   f"| {line['p']:.3f} | {line['p_holm']:.3f} | {line['detectable']:.3f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="fractions folders, one per seed")
    parser.add_argument("--out", default="dss_seeds.json", help="write the table as JSON here")
    args = parser.parse_args()
    metas, rows = load(args.folders)
    table = summarise(metas, rows)
    print(markdown(table, metas))
    causes = diagnose(args.folders, [line["fraction"] for line in table])
    print("| fraction | variant | parsed | right when parsed | x for * |\n|---:|---|---:|---:|---:|")
    for c in causes:
        print(f"| {c['fraction']:g} | {c['variant']} | {c['parsed']:.3f} | {c['right_when_parsed']:.3f} "
              f"| {c['x_for_times']:.3f} |")
    Path(args.out).write_text(json.dumps({"folders": [str(f) for f in args.folders], "meta": metas[0],
                                          "seeds": [m["train_config"]["seed"] for m in metas],
                                          "rows": table, "predictions": causes}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
