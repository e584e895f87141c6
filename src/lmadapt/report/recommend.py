"""The recommendation a compare report opens with: which method to pick, within which budget,
and how sure the evidence is (paired tests against the best, Holm-corrected)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmadapt.errors import LmadaptError
from lmadapt.report.compare import human
from lmadapt.report.record import RunRecord


def parse_bytes(text: str) -> int:
    """'8GB' / '512MB' / '2.5GiB' / '1000000' -> bytes (0 for empty); one line when unreadable."""
    if not str(text).strip():
        return 0
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise LmadaptError(f"budget_memory={text!r}: give a size like 8GB, 512MB or a number of bytes")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match[2].upper()]
    return int(float(match[1]) * scale)


@dataclass(frozen=True)
class Budgets:
    """Limits a user can set; 0 means no limit."""

    params: float = 0
    train_s: float = 0
    memory_bytes: int = 0
    latency_ms: float = 0

    @classmethod
    def from_config(cls, cfg: Any) -> Budgets:
        return cls(cfg.budget_params, cfg.budget_train_s, parse_bytes(cfg.budget_memory), cfg.budget_latency_ms)

    def limits(self) -> list[tuple[str, Any]]:
        """(phrase, test) for each limit that is set."""
        out = []
        if self.params:
            out.append((f"at most {human(self.params)} trainable parameters",
                        lambda r: r.trainable_params <= self.params))
        if self.train_s:
            out.append((f"at most {self.train_s:g} s of training", lambda r: r.train_seconds <= self.train_s))
        if self.memory_bytes:
            out.append((f"at most {human(self.memory_bytes, 'B')} peak memory",
                        lambda r: r.peak_memory_bytes <= self.memory_bytes))
        if self.latency_ms:
            out.append((f"at most {self.latency_ms:g} ms per example",
                        lambda r: r.eval_latency_ms <= self.latency_ms))
        return out


def name(record: RunRecord) -> str:
    return f"`{record.label or record.method}`"


def cost_key(record: RunRecord) -> tuple:
    """Cheaper first: fewer trainable parameters, then less training time, memory, latency."""
    return (record.trainable_params, record.train_seconds, record.peak_memory_bytes, record.eval_latency_ms)


def rank_key(record: RunRecord) -> tuple:
    """Better first: a higher score, then (equal scores) the cheaper method."""
    return (-record.score, *cost_key(record))


def _score(record: RunRecord) -> str:
    return f"{record.score:.3f} (95% CI {record.ci_low:.3f}–{record.ci_high:.3f})"


def recommend(records: list[RunRecord], budgets: Budgets, alpha: float = 0.05,
              examples_needed: int | None = None, unpaired: list[str] | None = None) -> list[str]:
    """Markdown lines: best overall, the methods tied with it, the cheapest tied one, the best
    within each budget, and the caveats (sample sizes, seeds, selection). When every method is
    tied with the best, it says so instead of naming a winner."""
    if not records:
        return []
    ranked = sorted(records, key=rank_key)
    best = ranked[0]
    metric = best.metric
    tied = [r for r in ranked if r.tied_best]
    lines = ["## Recommendation", ""]
    if len(records) == 1:
        lines.append(f"**Only {name(best)} ran**: {metric} {_score(best)}; nothing to compare it with.")
    elif len(tied) == len(records):
        cheapest = min(records, key=cost_key)
        lines.append(f"**No method is distinguishable from the best at this sample size.** "
                     f"{name(best)} scored highest ({metric} {_score(best)}), but every other method's "
                     f"difference from it is within chance (paired bootstrap, Holm-corrected p ≥ {alpha:g}). "
                     f"The cheapest of them is {name(cheapest)} ({_cost(cheapest)}); pick it unless more "
                     "eval data separates them.")
    else:
        lines.append(f"**Best: {name(best)}** — {metric} {_score(best)}.")
        others = [r for r in tied if r is not best]
        if others:
            lines.append(f"Not distinguishable from it (Holm-corrected p ≥ {alpha:g}): "
                         + ", ".join(f"{name(r)} ({r.score:.3f}, p = {_p(r.p_vs_best)})" for r in others) + ".")
            cheapest = min(tied, key=cost_key)
            lines.append(f"**Cheapest tied with the best: {name(cheapest)}** ({_cost(cheapest)}).")
        else:
            lines.append(f"Every other method is worse by a paired test (Holm-corrected p < {alpha:g}).")
    lines.append("")
    for phrase, fits in budgets.limits():
        inside = [r for r in ranked if fits(r)]
        if not inside:
            lines.append(f"- Within {phrase}: no method fits.")
            continue
        pick = inside[0]
        verdict = ("the best overall" if pick is best else
                   "tied with the best" if pick.tied_best else
                   f"below the best (p = {_p(pick.p_vs_best)})" if pick.p_vs_best is not None else "not paired")
        lines.append(f"- Within {phrase}: {name(pick)}, {metric} {pick.score:.3f} ({verdict}).")
    if budgets.limits():
        lines.append("")
    lines += ["Caveats:", ""] + [f"- {c}" for c in caveats(records, examples_needed, unpaired or [])] + [""]
    return lines


def caveats(records: list[RunRecord], examples_needed: int | None, unpaired: list[str]) -> list[str]:
    """What limits the evidence: eval and validation sizes, seeds, search trials, interval widths."""
    r0 = max(records, key=lambda r: r.score)
    seeds = max(len(r.seed_scores) for r in records) if records else 1
    out = [f"{r0.eval_examples} eval examples, scored once per final model; "
           + (f"{seeds} seeds per method (the CIs resample examples and seeds)." if seeds > 1 else
              "one seed per method (training noise is not in the CIs; `seeds=3` measures it).")]
    selections = {r.selection for r in records if r.selection}
    if any(s.startswith("validation") for s in selections):
        searched = [r for r in records if r.search_trials]
        out.append(f"Choices made on the validation set ({r0.val_examples} examples held out of training)"
                   + (f"; learning rate searched with {max(r.search_trials for r in searched)} trials per "
                      "method." if searched else "; hyperparameters at the methods' defaults (search_trials=0)."))
    else:
        out.append("No validation set: every method ran at its defaults.")
    widths = [r.ci_high - r.ci_low for r in records]
    out.append(f"Half-widths of the 95% intervals are about {min(widths) / 2:.3f}–{max(widths) / 2:.3f}; "
               "smaller differences cannot be resolved.")
    if examples_needed is not None:
        out.append(f"Separating the top two at this effect size would take about {examples_needed} eval "
                   "examples (paired test, α = 0.05, power 0.8).")
    if unpaired:
        out.append("Not in the paired tests (their method scores without per-example values): "
                   + ", ".join(f"`{u}`" for u in unpaired) + ".")
    return out


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _cost(record: RunRecord) -> str:
    return (f"{human(record.trainable_params)} trainable parameters, {record.train_seconds:.0f} s training, "
            f"{human(record.peak_memory_bytes, 'B')} peak memory, {record.eval_latency_ms:.0f} ms/example")
