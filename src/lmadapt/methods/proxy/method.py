"""proxy: proxy-tuning (Liu et al., 2024, arXiv 2401.08565, §2 Eq. 1) as a tune/compare method.

A small model M- is tuned on the task with the shared loop into the expert M+ (LoRA by default,
or every weight); the large base M is never trained. At every position the base is steered by
the expert's difference from its untuned self:

    p(x_t | x_<t) = softmax( s_M(x_<t) + alpha * (s_M+(x_<t) - s_M-(x_<t)) )      (Eq. 1)

Classification scores each label by its log-likelihood under that distribution; generation
decodes greedily from it (lmadapt.decoding). With LoRA, M+ and M- are ONE model with the
adapter on/off (`SharedLoraProxySource`); with `full`, M- is a second, untuned copy.

Chat data: the three models read the same token ids, so the prompt is rendered once, with the
base model's chat template; the expert is tuned on conversations rendered with that template
too (`with_base_template`), whatever template the small model ships.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch
from peft import PeftModel

from lmadapt.data.task import Task
from lmadapt.decoding import (
    LogitSource,
    ProxySource,
    SharedLoraProxySource,
    check_tokenizers_match,
    sequence_logprobs,
)
from lmadapt.decoding.engine import left_pad, pad_id_of, position_ids_for
from lmadapt.decoding.scoring import next_token_logprobs
from lmadapt.errors import LmadaptError
from lmadapt.eval.metrics import score_predictions
from lmadapt.methods.base import Adapted, RunContext, task_model_for
from lmadapt.methods.full import Full, FullConfig
from lmadapt.methods.lora import Lora, LoraMethodConfig
from lmadapt.methods.proxy.config import ProxyConfig
from lmadapt.models.chat import chat_template_for
from lmadapt.models.load import (
    count_params,
    load_config,
    load_tokenizer,
    model_kind,
    resolve_model_ref,
)
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult
from lmadapt.utils import atomic_write_text

ARTIFACT = "proxy.json"
EXPERT_DIR = "expert"


def step_parts(source: ProxySource | SharedLoraProxySource, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Last-position logits (B, V) of the proxy (Eq. 1) and of its parts, one pass per model.

    ids, mask: (B, T) left-padded prompts. Returns {"proxy", "base", "expert"}; the parts cost
    nothing extra, so the record can report base and expert alone from the same forward passes.
    """
    positions = position_ids_for(mask)  # (B, T)
    source.reset()
    base = source.base.step(ids, mask, positions, keep=1)[:, -1]  # (B, V): s_M
    expert, anti = (t[:, -1] for t in source.parts(ids, mask, positions, keep=1))  # s_M+, s_M-
    source.reset()
    proxy = base + source.alpha * (expert.to(base.device) - anti.to(base.device))  # Eq. 1
    return {"proxy": proxy, "base": base, "expert": expert}


@torch.inference_mode()
def next_token_scores(source: LogitSource, tokenizer, prompts: list[str], token_ids: list[int],
                      max_length: int, batch_size: int = 16) -> dict[str, torch.Tensor]:
    """{"proxy", "base", "expert"} → (N, L) log p(token_l | prompt_n): single-token labels."""
    encoded = [tokenizer(p)["input_ids"][-(max_length - 1):] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # less padding per batch
    scores = {name: torch.zeros(len(prompts), len(token_ids)) for name in ("proxy", "base", "expert")}
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        ids, mask = left_pad([encoded[i] for i in batch], pad_id_of(tokenizer))  # (B, T) each
        for name, logits in step_parts(source, ids, mask).items():
            scores[name][batch] = next_token_logprobs(logits, token_ids).cpu()
    return scores


def label_scores(source: LogitSource, tm: TaskModel, texts: list[str],
                 batch_size: int = 16) -> dict[str, torch.Tensor]:
    """(N, L) label log-likelihoods under `source` ("proxy"; with single-token labels also "base"
    and "expert" alone), in the TaskModel's prompt/label layout."""
    task, tokenizer = tm.task, tm.tokenizer
    prompts = engine_prompts(tm, texts)
    label_ids = [tokenizer(task.label_prefix + label, add_special_tokens=False)["input_ids"]
                 for label in task.labels]
    if all(len(ids) == 1 for ids in label_ids):
        return next_token_scores(source, tokenizer, prompts, [ids[0] for ids in label_ids],
                                 tm.max_length, batch_size)
    flat_prompts = [p for p in prompts for _ in task.labels]
    flat_labels = [task.label_prefix + label for _ in prompts for label in task.labels]
    logprobs, counts = sequence_logprobs(source, tokenizer, flat_prompts, flat_labels, batch_size)
    if tm.normalize_scores:
        logprobs = logprobs / counts
    return {"proxy": logprobs.view(len(prompts), len(task.labels))}


SWEEP_ALPHAS = (0.25, 0.5, 1.0, 2.0)


def alpha_predictions(parts: dict[str, torch.Tensor], alpha_run: float, alpha: float) -> torch.Tensor:
    """Label indices (N,) the proxy picks at `alpha`, from one run's scores at `alpha_run` != 0.

    Eq. 1 is linear in alpha and per-row normalising constants never change the winner, so
    argmax s(alpha) = argmax [s_base + (alpha / alpha_run) * (s_proxy - s_base)].
    """
    step = (parts["proxy"] - parts["base"]) / alpha_run  # s_expert - s_anti (+ row constants)
    return (parts["base"] + alpha * step).argmax(dim=1)


NLL_ALPHAS = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)


@torch.inference_mode()
def reference_nll(source: ProxySource | SharedLoraProxySource, tm: TaskModel, texts: list[str],
                  references: list[str], alphas: tuple[float, ...] = NLL_ALPHAS,
                  batch_size: int = 4) -> dict[str, float]:
    """Generation tasks: the mean per-token negative log-likelihood of the reference outputs under
    Eq. 1 at each alpha, teacher-forced after each prompt (the answer's tokens, no end marker).

    Eq. 1 is linear in alpha, so one forward pass of each model gives every alpha here. Greedy
    generation does not share this (each alpha picks other tokens), so this is a diagnostic of
    where the expert - anti-expert direction points, not the accuracy an alpha would score:
    alpha 0 is the base alone; a falling curve means the small pair steers toward the references.
    """
    tokenizer = tm.tokenizer
    prompts = tm.prompt_ids([tm.prompt(text) for text in texts])
    rows = [(prompt, tokenizer(reference, add_special_tokens=False)["input_ids"])
            for prompt, reference in zip(prompts, references, strict=True)]
    rows = [(prompt[-max(1, tm.max_length - len(answer)):], answer) for prompt, answer in rows if answer]
    totals, count = torch.zeros(len(alphas), dtype=torch.float64), 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        ids, mask = left_pad([prompt + answer for prompt, answer in batch], pad_id_of(tokenizer))  # (B, T)
        keep = max(len(answer) for _, answer in batch) + 1  # the positions that predict an answer token
        positions = position_ids_for(mask)
        source.reset()
        base = source.base.step(ids, mask, positions, keep=keep)  # (B, K, V)
        expert, anti = source.parts(ids, mask, positions, keep=keep)
        source.reset()
        delta = expert.to(base.device) - anti.to(base.device)
        targets = torch.zeros(len(batch), keep, dtype=torch.long)  # (B, K): the token each position predicts
        scored = torch.zeros(len(batch), keep, dtype=torch.bool)  # where that token is an answer's
        for row, (_, answer) in enumerate(batch):
            n = len(answer)  # position K-1-n+j predicts answer token j
            targets[row, keep - 1 - n:keep - 1] = torch.tensor(answer)
            scored[row, keep - 1 - n:keep - 1] = True
        targets, scored = targets.to(base.device), scored.to(base.device)
        for i, alpha in enumerate(alphas):
            logp = (base + alpha * delta).float().log_softmax(-1)  # (B, K, V)
            totals[i] -= logp.gather(-1, targets[..., None])[..., 0][scored].double().sum().cpu()
        count += int(scored.sum())
    return {str(alpha): float(totals[i] / max(count, 1)) for i, alpha in enumerate(alphas)}


def mean_label_margins(parts: dict[str, torch.Tensor], alpha_run: float) -> dict[str, float]:
    """Two-label tasks: mean of s(label 0) - s(label 1) for base, expert and anti-expert, i.e.
    how far each leans to one label. A large expert - anti-expert gap with a near-balanced base
    is the small model's own label bias being carried over (docs/proxy.md)."""
    anti = parts["expert"] - (parts["proxy"] - parts["base"]) / alpha_run  # s_anti (+ constants)
    named = {"base": parts["base"], "expert": parts["expert"], "anti_expert": anti}
    return {name: float((m[:, 0] - m[:, 1]).mean()) for name, m in named.items()}


class ProxyAdapted(Adapted):
    """The base steered by the expert/anti-expert pair; `tm` is the expert (what trained)."""

    def __init__(self, base: TaskModel, expert: TaskModel, anti_expert: torch.nn.Module | None,
                 cfg: ProxyConfig, small_ref: str) -> None:
        self.base, self.tm, self.anti_expert, self.cfg, self.small_ref = base, expert, anti_expert, cfg, small_ref
        self.trainable_params = count_params(expert.model)[0]
        small_models = [expert.model] + ([anti_expert] if anti_expert is not None else [])
        self.total_params = count_params(base.model)[1] + sum(count_params(m)[1] for m in small_models)
        self._source: LogitSource | None = None
        self._parts: tuple[list[str], dict[str, torch.Tensor]] | None = None  # last scores() call
        self._batch_size = 16  # the last predict()'s: the parts alone run at the eval's batch size

    @property
    def source(self) -> LogitSource:
        """The proxy-tuned logit source (built once)."""
        if self._source is None:
            vocab = len(self.base.tokenizer)
            if self.anti_expert is None:  # one LoRA model: adapter on = M+, off = M-
                self._source = SharedLoraProxySource(self.base.model, self.tm.model, self.cfg.proxy_alpha, vocab)
            else:
                self._source = ProxySource(self.base.model, self.tm.model, self.anti_expert,
                                           self.cfg.proxy_alpha, vocab)
        return self._source

    def scores(self, texts: list[str], batch_size: int = 16) -> torch.Tensor:
        """(N, L) label log-likelihoods under Eq. 1."""
        parts = label_scores(self.source, self.base, texts, batch_size)
        self._parts = (list(texts), parts)
        return parts["proxy"]

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        self._batch_size = batch_size
        if self.base.task.kind == "classification":
            best = self.scores(texts, batch_size).argmax(dim=1)
            return [self.base.task.labels[i] for i in best.tolist()]
        # the base's own generation path with the proxy's logits: end of turn, stop strings,
        # longest prompts first, the progress bar and the eval's prediction log (resume)
        return self.base.generate([self.base.prompt(t) for t in texts], batch_size, source=self.source)

    def figures(self, task: Task) -> dict:
        """The parts alone on the eval set: base (alpha = 0) and expert, with 95% CIs and their
        per-example scores (in eval order, as predictions.jsonl: a paired test against the proxy)."""
        out: dict = {"proxy_alpha": self.cfg.proxy_alpha}
        if not self.cfg.proxy_report_parts:
            return out
        cached = self._parts[1] if self._parts and self._parts[0] == task.texts() else {}
        for name, part in (("base", self.base), ("expert", self.tm)):
            if name in cached:  # from the proxy's own forward passes
                predictions = [task.labels[i] for i in cached[name].argmax(dim=1).tolist()]
            else:
                predictions = part.predict(task.texts(), self._batch_size)
            scored = score_predictions(predictions, task.targets(), task.kind, metric=task.metric)
            out.update({f"{name}_score": scored["score"], f"{name}_ci_low": scored["ci_low"],
                        f"{name}_ci_high": scored["ci_high"],
                        f"{name}_per_example": scored["per_example"]})  # for paired tests against the proxy
        alpha_run = self.cfg.proxy_alpha
        if {"proxy", "base", "expert"} <= set(cached) and alpha_run != 0:  # free: same passes
            sweep = {}
            for alpha in SWEEP_ALPHAS:
                picked = alpha_predictions(cached, alpha_run, alpha).tolist()
                predictions = [task.labels[i] for i in picked]
                sweep[str(alpha)] = score_predictions(predictions, task.targets(), task.kind, metric=task.metric)["score"]
            out["alpha_sweep"] = sweep  # diagnostics on the eval set, not a tuned alpha
            if len(task.labels) == 2:
                out["mean_label_margin"] = mean_label_margins(cached, alpha_run)
        if task.kind == "generation" and isinstance(self.source, (ProxySource, SharedLoraProxySource)):
            out["reference_nll_by_alpha"] = reference_nll(  # diagnostics on the eval set, not a tuned alpha
                self.source, self.base, task.texts(), task.targets(), batch_size=min(self._batch_size, 2))
        return out

    def save(self, artifact_dir: Path) -> None:
        """expert/ (a PEFT folder, or full HF weights) + proxy.json naming base, small and alpha."""
        folder = artifact_dir / EXPERT_DIR
        self.tm.model.save_pretrained(str(folder), safe_serialization=True)
        self.tm.tokenizer.save_pretrained(str(folder))
        meta = {"base": self.base.ref, "small": self.small_ref, "alpha": self.cfg.proxy_alpha,
                "expert_method": self.cfg.expert_method, "expert": EXPERT_DIR}
        atomic_write_text(artifact_dir / ARTIFACT, json.dumps(meta, indent=2))


def engine_prompts(tm: TaskModel, texts: list[str]) -> list[str]:
    """The base's prompts as the decoding engine reads them. The engine tokenizes with the
    tokenizer's special tokens; a chat template that writes the BOS itself would get two, so
    the template's is dropped there."""
    prompts = [tm.prompt(t) for t in texts]
    tokenizer, bos = tm.tokenizer, tm.tokenizer.bos_token
    if tm.chat_template is None or not bos or tokenizer("x")["input_ids"][:1] != [tokenizer.bos_token_id]:
        return prompts
    return [p[len(bos):] if p.startswith(bos) else p for p in prompts]


def with_base_template(task: Task, ctx: RunContext) -> Task:
    """Chat data: the task with the base model's chat template written out (or `none` when the
    base has none and the rows may use the plain template), so the expert learns, and base,
    expert and anti-expert all read, one rendering of each conversation. Messages data on a base
    without a template: the one-line error naming the setting, before any training."""
    if not task.chat or task.chat_template != "auto":
        return task
    tokenizer = load_tokenizer(resolve_model_ref(ctx.model.model), "causal", ctx.model.trust_remote_code)
    shared = copy.copy(task)
    shared.chat_template = chat_template_for(tokenizer, task, ctx.model.model) or "none"
    return shared


def small_context(ctx: RunContext, cfg: ProxyConfig) -> RunContext:
    """The run context with the small model in place of the base."""
    return replace(ctx, model=replace(ctx.model, model=cfg.proxy_small or ctx.model.model))


def check_pair(base_ref: str, small_ref: str, trust_remote_code: bool) -> None:
    """One-line error unless both are causal LMs with the same tokenizer (before any training)."""
    refs = {"base": resolve_model_ref(base_ref), "small": resolve_model_ref(small_ref)}
    for role, ref in refs.items():
        kind = model_kind(load_config(ref, trust_remote_code))
        if kind != "causal":
            raise LmadaptError(f"proxy needs causal LMs, but the {role} model {ref!r} is a {kind} model")
    tokenizers = {role: load_tokenizer(ref, "causal", trust_remote_code) for role, ref in refs.items()}
    check_tokenizers_match(tokenizers["base"], tokenizers["small"], f"small model {small_ref!r}")


class Proxy:
    name = "proxy"
    config_class = ProxyConfig
    model_kinds = ("causal",)
    task_kinds = ("classification", "generation")
    trains = True
    lr_range = (1e-4, 5e-3)  # learning rates a search tries (log scale)

    @staticmethod
    def default_lr(cfg: ProxyConfig) -> float:  # the expert's method's default
        return LoraMethodConfig().lora_default_lr if cfg.expert_method == "lora" else FullConfig().full_default_lr
    demo_note = "needs a large base and a small model sharing its tokenizer (docs/proxy.md)"
    summary = "tune a small expert, steer the large base by expert - anti-expert logits (decoding time)"

    def fit(self, train: Task, eval_task: Task | None, cfg: ProxyConfig,
            ctx: RunContext) -> tuple[ProxyAdapted, TrainResult]:
        small = small_context(ctx, cfg)
        check_pair(ctx.model.model, small.model.model, ctx.model.trust_remote_code)
        train = with_base_template(train, ctx)
        eval_task = with_base_template(eval_task, ctx) if eval_task is not None else None
        anti_expert = None
        if cfg.expert_method == "lora":
            expert, result = Lora().fit(train, eval_task, LoraMethodConfig(lora_r=cfg.proxy_lora_r), small)
        else:
            expert, result = Full().fit(train, eval_task, FullConfig(), small)
            anti_expert = task_model_for(train, small, self.model_kinds, self.name).model.eval()
        base = task_model_for(train, ctx, self.model_kinds, self.name)  # after training: less peak memory
        return ProxyAdapted(base, expert.tm, anti_expert, cfg, small.model.model), result

    def load(self, artifact_dir: Path, task: Task, cfg: ProxyConfig, ctx: RunContext) -> ProxyAdapted:
        folder = artifact_dir / EXPERT_DIR
        if not (artifact_dir / ARTIFACT).exists() or not folder.is_dir():
            raise LmadaptError(f"{artifact_dir} has no {ARTIFACT} and {EXPERT_DIR}/; is this a proxy run folder?")
        small = small_context(ctx, cfg)
        check_pair(ctx.model.model, small.model.model, ctx.model.trust_remote_code)
        task = with_base_template(task, ctx)
        if cfg.expert_method == "lora":
            expert = task_model_for(task, small, self.model_kinds, self.name)
            expert.model = PeftModel.from_pretrained(expert.model, str(folder), is_trainable=False).eval()
            anti_expert = None
        else:
            expert = task_model_for(task, replace(small, model=replace(small.model, model=str(folder))),
                                    self.model_kinds, self.name)
            anti_expert = task_model_for(task, small, self.model_kinds, self.name).model.eval()
        base = task_model_for(task, ctx, self.model_kinds, self.name)
        return ProxyAdapted(base, expert, anti_expert, cfg, small.model.model)
