"""A model bound to a task: how to batch examples, what the loss is, how to predict.

Methods change which parameters train (or wrap modules), never these rules:
- encoder + classification: a sequence-classification head, cross-entropy;
- causal LM + classification: loss on the label tokens after the prompt, predict by label
  log-likelihood (`scoring.py`);
- causal LM + generation: loss on the output tokens, predict by greedy generation;
- seq2seq + either: the target is the decoder's text; classification scores labels.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
)

from lmadapt.data.chat import ChatExample, prompt_messages
from lmadapt.data.task import Example, Task
from lmadapt.decoding.config import GenerationConfig
from lmadapt.decoding.engine import (
    complete,
    eos_ids_for,
    left_pad,
    pad_id_of,
    position_ids_for,
    stop_watch_for,
)
from lmadapt.decoding.scoring import token_logprobs
from lmadapt.decoding.sources import LogitSource, ModelSource, unwrap
from lmadapt.decoding.vocab import output_width
from lmadapt.errors import LmadaptError
from lmadapt.eval.prediction_log import active_log
from lmadapt.models.chat import (
    assistant_spans,
    chat_template_for,
    encode_with_spans,
    end_of_turn_id,
    render,
)
from lmadapt.models.lm_loss import gathered_loss, head_reproduces_logits, output_head
from lmadapt.models.load import (
    ModelSpec,
    load_config,
    load_tokenizer,
    model_kind,
    resolve_model_ref,
)
from lmadapt.models.packing import check_packing, pack_rows
from lmadapt.models.scoring import (
    classify_by_likelihood,
    encode_pair,
    score_single_tokens_after_prefix,
    single_token_labels,
)


def _keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the (possibly peft-wrapped) causal LM's forward takes `logits_to_keep`."""
    import inspect

    return "logits_to_keep" in inspect.signature(type(unwrap(model)).forward).parameters


class PromptBuilder:
    """What a method puts around an input to make the model's prompt (demonstrations, retrieved
    context). A TaskModel with one calls it instead of the task's template."""

    def __call__(self, text: str) -> str:
        raise NotImplementedError  # every builder defines it

    def shared_split(self, texts: list[str]) -> tuple[str, list[str]] | None:
        """(the prefix every prompt of texts starts with, each prompt's rest), or None when the
        prompts share none; a shared prefix lets label scoring reuse one KV cache."""
        return None

    def messages(self, text: str, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Chat data: the conversation the model sees for input `text`, whose own turns are
        `messages`. By default the builder's text for the last turn's content replaces it; a
        builder may add turns (icl: each demonstration a user/assistant pair before the query)."""
        return [*messages[:-1], {**messages[-1], "content": self(messages[-1]["content"])}]


@dataclass
class TaskModel:
    """A (possibly wrapped) HF model, its tokenizer and the task it serves."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    task: Task
    kind: str  # encoder | causal | seq2seq
    ref: str  # the resolved model reference it was loaded from
    max_length: int = 256
    max_new_tokens: int = 32
    normalize_scores: bool = False  # length-normalised label log-likelihood
    prompt_builder: PromptBuilder | Callable[[str], str] | None = field(default=None, repr=False)
    chat_template: str | None = field(default=None, repr=False)  # chat data: render with it (models/chat.py)
    loss_chunk: int = 0  # causal LMs: targets per LM-head chunk in the loss (0 = all at once)
    _head_verdict: tuple[torch.nn.Module, bool] | None = field(default=None, init=False, repr=False)
    _packing_checked: bool = field(default=False, init=False, repr=False)

    # ---- batching and loss (training) -------------------------------------------------
    def prompt(self, text: str) -> str:
        """The model input for one input text. Chat data: the conversation so far rendered with
        the chat template and its generation prompt (a PromptBuilder shapes the turns, see
        `PromptBuilder.messages`; a plain callable's text goes in the last turn)."""
        if self.chat_template is not None:
            messages = prompt_messages(text)
            if isinstance(self.prompt_builder, PromptBuilder):
                messages = self.prompt_builder.messages(text, messages)
            elif self.prompt_builder:
                messages[-1] = {**messages[-1], "content": self.prompt_builder(messages[-1]["content"])}
            return render(self.tokenizer, self.chat_template, messages, generation_prompt=True)
        return self.prompt_builder(text) if self.prompt_builder else self.task.prompt(text)

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of rendered prompts (`prompt`), uncut. A chat-rendered prompt already holds
        its special tokens, so the tokenizer adds none then; a plain prompt gets the usual ones."""
        if not prompts:  # a tokenizer cannot encode an empty batch
            return []
        return self.tokenizer(prompts, add_special_tokens=self.chat_template is None)["input_ids"]

    def target_text(self, example: Example) -> str:
        if self.task.kind == "classification":
            return self.task.label_prefix + example.target
        eos = self.tokenizer.eos_token or ""
        return example.target + (eos if self.kind == "causal" else "")

    def collate(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """A training batch of CPU tensors."""
        if self.kind == "encoder":
            enc = self.tokenizer([ex.text for ex in examples], truncation=True, padding=True,
                                 max_length=self.max_length, return_tensors="pt")
            index = {label: i for i, label in enumerate(self.task.labels)}
            enc["labels"] = torch.tensor([index[ex.target] for ex in examples])
            return dict(enc)
        if self.kind == "seq2seq":
            enc = self.tokenizer([self.prompt(ex.text) for ex in examples], truncation=True,
                                 padding=True, max_length=self.max_length, return_tensors="pt")
            tgt = self.tokenizer([self.target_text(ex).strip() for ex in examples], truncation=True,
                                 padding=True, max_length=self.max_length, return_tensors="pt")
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
            return {**dict(enc), "labels": labels}
        rows = self.token_rows(examples)
        ids, mask = left_pad([token_ids for token_ids, _ in rows], self.tokenizer.pad_token_id)
        labels, _ = left_pad([row_labels for _, row_labels in rows], -100)
        return {"input_ids": ids, "attention_mask": mask,
                "position_ids": position_ids_for(mask), "labels": labels}

    def token_rows(self, examples: list[Example]) -> list[tuple[list[int], list[int]]]:
        """Causal LMs: each example's token ids and its labels (the id where the loss reads the
        token, else -100): prompt then target, or a whole conversation rendered with the chat
        template with labels only on assistant tokens (every assistant turn, or the last with
        train_on=last), end-of-turn markers included."""
        if self.chat_template is not None and all(isinstance(ex, ChatExample) for ex in examples):
            rows = []
            for ex in examples:
                text, spans = assistant_spans(self.tokenizer, self.chat_template, ex.as_dicts(), self.task.train_on)
                token_ids, covered = encode_with_spans(self.tokenizer, text, spans, self.max_length)
                rows.append((token_ids, [t if c else -100 for t, c in zip(token_ids, covered, strict=True)]))
            return rows
        rows = []
        for ex in examples:
            token_ids, n_target = encode_pair(self.tokenizer, self.prompt(ex.text), self.target_text(ex),
                                              self.max_length)
            rows.append((token_ids, [-100] * (len(token_ids) - n_target) + token_ids[-n_target:]))
        return rows

    def collate_packed(self, examples: list[Example]) -> dict[str, torch.Tensor] | None:
        """The training batch as packed rows of max_length (`models/packing.py`); None where
        packing does not apply: encoders and seq2seq models, and peft prompt learning (its
        virtual tokens go before every row)."""
        if self.kind != "causal" or self._prompt_learning():
            return None
        return pack_rows(self.token_rows(examples), self.max_length, self.tokenizer.pad_token_id)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of one batch; `model` may be the DDP/FSDP-wrapped twin of self.model.

        A causal LM computes logits only where the loss reads them: the final hidden states of
        the positions that predict a target are gathered and only they go through the LM head,
        `loss_chunk` at a time when set (`models/lm_loss.py`). Where that does not apply (peft
        prompt learning, a model whose logits are more than its head's output), the head runs on
        the positions from the first target-predicting one to the end (`logits_to_keep`; rows are
        left-padded, so targets sit at the right end). Either way: the same mean token
        cross-entropy as the model's own loss. A packed batch (`collate_packed`) is checked once
        to keep its examples apart (`models/packing.py`); no forward builds a KV cache (with one,
        transformers would not read the packed positions)."""
        if self.kind != "causal":
            return model(**batch).loss
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_tokens")}
        if "num_tokens" in batch and not self._packing_checked:
            check_packing(model, self.model, batch["input_ids"])
            self._packing_checked = True
        head = self._gathering_head(model, batch["input_ids"])
        if head is not None and bool((labels[:, 1:] != -100).any()):
            return gathered_loss(model, head, inputs, labels, self.loss_chunk)
        keep = self._loss_positions(batch)
        if keep is None:
            return model(**inputs, labels=labels, use_cache=False).loss
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        targets = labels[:, labels.shape[1] - keep + 1:]
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                                 ignore_index=-100)

    def _prompt_learning(self) -> bool:
        peft_config = getattr(self.model, "active_peft_config", None)
        return bool(getattr(peft_config, "is_prompt_learning", False))

    def _gathering_head(self, model: torch.nn.Module, input_ids: torch.Tensor) -> torch.nn.Module | None:
        """The LM head when the gathered loss applies to this model (probed once per head on a
        few of the batch's tokens); None otherwise."""
        head = output_head(self.model)
        if head is None or self._prompt_learning():
            return None
        if self._head_verdict is None or self._head_verdict[0] is not head:
            probe = input_ids[:1, -8:]  # (1, <= 8) real tokens at the right end of a left-padded row
            self._head_verdict = (head, head_reproduces_logits(model, head, probe))
        return head if self._head_verdict[1] else None

    def _loss_positions(self, batch: dict[str, torch.Tensor]) -> int | None:
        """How many rightmost positions' logits the loss needs (None: the model cannot restrict
        them, or the batch has no target)."""
        if not _keeps_logits(self.model):
            return None
        columns = (batch["labels"] != -100).any(dim=0).nonzero()
        if len(columns) == 0:
            return None
        length = batch["labels"].shape[1]
        return min(length, length - int(columns[0]) + 1)  # the position before the first target on

    @staticmethod
    def count_tokens(batch: dict[str, torch.Tensor]) -> int:
        """Real (non-pad) tokens of a batch, padded or packed."""
        return int(batch["num_tokens"]) if "num_tokens" in batch else int(batch["attention_mask"].sum())

    # ---- prediction ----------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        """Labels (classification) or generated text (generation) for raw inputs."""
        self.model.eval()
        if self.task.kind == "classification":
            scores = self.label_scores(texts, batch_size)
            return [self.task.labels[i] for i in scores.argmax(dim=1).tolist()]
        return self.generate([self.prompt(t) for t in texts], batch_size)

    def label_scores(self, texts: list[str], batch_size: int = 16) -> torch.Tensor:
        """(N, L) scores; argmax is the predicted label."""
        if self.kind == "encoder":
            out = []
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[start:start + batch_size], truncation=True, padding=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                out.append(self.model(**enc).logits.float().cpu())
            return torch.cat(out)
        if self.kind == "seq2seq":
            return self._seq2seq_label_scores(texts, batch_size)
        shared = self._shared_prefix_scores(texts, batch_size)
        if shared is not None:
            return shared
        prompts = [self.prompt(t) for t in texts]
        return classify_by_likelihood(self.model, self.tokenizer, prompts, self.task.labels,
                                      self.task.label_prefix, self.max_length, batch_size,
                                      self.normalize_scores)

    def _shared_prefix_scores(self, texts: list[str], batch_size: int) -> torch.Tensor | None:
        """Scores via one KV-cached prefix when every prompt starts with the same text (e.g. fixed
        ICL demonstrations) and labels are single tokens; None when that does not apply."""
        if (not isinstance(self.prompt_builder, PromptBuilder) or self.normalize_scores or not texts
                or self.chat_template is not None):  # chat prompts: turns, not a text prefix
            return None
        token_ids = single_token_labels(self.tokenizer, self.task.labels, self.task.label_prefix)
        if token_ids is None:
            return None
        shared = self.prompt_builder.shared_split(texts)
        if shared is None:
            return None
        prefix, rests = shared
        return score_single_tokens_after_prefix(self.model, self.tokenizer, prefix, rests,
                                                token_ids, self.max_length, batch_size)

    def _seq2seq_label_scores(self, texts: list[str], batch_size: int) -> torch.Tensor:
        rows = []
        for text in texts:
            enc = self.tokenizer([self.prompt(text)] * len(self.task.labels), truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            tgt = self.tokenizer(list(self.task.labels), padding=True, return_tensors="pt").to(self.device)
            labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
            logits = self.model(**enc, labels=labels).logits  # (L, T, V)
            tok = token_logprobs(logits, labels.clamp(min=0)[..., None]).squeeze(-1) * (labels != -100)
            total = tok.sum(1)
            if self.normalize_scores:
                total = total / (labels != -100).sum(1)
            rows.append(total.cpu())
        return torch.stack(rows)

    def generate(self, prompts: list[str], batch_size: int = 8, source: LogitSource | None = None) -> list[str]:
        """Greedy continuation of each prompt, stripped. It ends at EOS, at the chat template's end
        of turn, before the first stop string (`task.stop`) or after `max_new_tokens`.
        `source`: the next-token logits to decode from in place of this model's own (a proxy-tuned
        `ProxySource` reading this model's prompts), through the engine.

        Causal LMs run through the decoding engine (KV cache, left padding, longest prompts first;
        a prompt over `max_length` tokens keeps its end); seq2seq models and peft prompt-learning
        models (prompt, ptuning, prefix) through `model.generate`. A progress bar (examples/s, ETA)
        shows on a terminal, and in a log for work of several batches (once a minute). Inside
        `run.evaluate`'s prediction log (eval/prediction_log.py) each finished batch is appended
        to it, and prompts it already holds are not generated again.
        """
        log = active_log()
        call = log.next_call() if log is not None else -1
        outputs: dict[int, str] = log.done(call, prompts) if log is not None else {}
        todo = [i for i in range(len(prompts)) if i not in outputs]
        engine = self._uses_engine()
        if source is not None and not engine:
            raise LmadaptError("a logit source decodes through lmadapt's engine, which this model does not use "
                               "(seq2seq or prompt learning)")
        eot = end_of_turn_id(self.tokenizer, self.chat_template) if self.chat_template is not None else None
        ids: list[list[int]] = []
        if engine and todo:
            ids = [row[-self.max_length:] for row in self.prompt_ids([prompts[i] for i in todo])]
            if any(not row for row in ids):
                raise LmadaptError("a prompt encodes to zero tokens; give every prompt some text")
            by_length = sorted(range(len(todo)), key=lambda k: -len(ids[k]))
            todo, ids = [todo[k] for k in by_length], [ids[k] for k in by_length]
        # on a terminal always; in a log file (stderr not a terminal) when the work spans several
        # batches, updated once a minute and kept at the end: a long eval run in the background
        # shows its progress and ETA there
        terminal = sys.stderr.isatty()
        with tqdm(total=len(prompts), initial=len(outputs), desc="generate", unit="ex",
                  disable=not (terminal or len(todo) > batch_size), mininterval=0.1 if terminal else 60,
                  leave=not terminal, dynamic_ncols=True) as bar:
            run = self._engine_batches(ids, batch_size, eot, source) if engine else None
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                texts = next(run) if run is not None else self._hf_generate([prompts[i] for i in chunk], eot)
                outputs.update(zip(chunk, texts, strict=True))
                if log is not None:
                    log.append(call, [(prompts[i], text) for i, text in zip(chunk, texts, strict=True)])
                bar.update(len(chunk))
        return [outputs[i] for i in range(len(prompts))]

    def _uses_engine(self) -> bool:
        """Causal LMs decode with lmadapt's engine, except peft prompt-learning models (their
        virtual tokens go in through peft's own generate)."""
        peft_config = getattr(self.model, "active_peft_config", None)
        return self.kind == "causal" and not getattr(peft_config, "is_prompt_learning", False)

    def _engine_batches(self, ids: list[list[int]], batch_size: int, eot: int | None,
                        source: LogitSource | None = None):
        """Generated texts, one list per batch of `ids` (token-id prompts); `eot`: the chat
        template's end-of-turn token, a stop like EOS; `source`: logits other than the model's."""
        tokenizer = self.tokenizer
        source = source or ModelSource(self.model, vocab_size=min(len(tokenizer), output_width(self.model)))
        eos = eos_ids_for(source, tokenizer, [eot] if eot is not None else [])
        cfg = GenerationConfig(max_new_tokens=self.max_new_tokens, stop=list(self.task.stop))
        stop_watch, pad = stop_watch_for(tokenizer, cfg.stop), pad_id_of(tokenizer)
        for start in range(0, len(ids), batch_size):
            texts = complete(source, tokenizer, ids[start:start + batch_size], cfg, eos, pad, stop_watch)
            yield [t.strip() for t in texts]

    def _hf_generate(self, prompts: list[str], eot: int | None) -> list[str]:
        """One batch through `model.generate` (seq2seq, peft prompt learning), cut at a stop string."""
        if self.kind == "causal":  # the prompt's end is kept, as on the engine's path
            input_ids, mask = left_pad([row[-self.max_length:] for row in self.prompt_ids(prompts)],
                                       pad_id_of(self.tokenizer))
            enc = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        else:
            enc = self.tokenizer(prompts, truncation=True, padding=True, max_length=self.max_length,
                                 return_tensors="pt", add_special_tokens=self.chat_template is None).to(self.device)
        extra = {}
        if eot is not None:
            config = getattr(self.model, "generation_config", None)
            eos = [e for e in _as_list(getattr(config, "eos_token_id", None)) if e is not None]
            extra["eos_token_id"] = [*eos, eot]
        generated = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                        pad_token_id=self.tokenizer.pad_token_id, **extra)
        new = generated if self.kind == "seq2seq" else generated[:, enc["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [_cut_at_stop(t, self.task.stop).strip() for t in texts]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text


def context_window(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """Longest input the model accepts (positions in its config, else the tokenizer's limit)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 1_000_000 else 2048


def build_task_model(spec: ModelSpec, task: Task, max_length: int = 256,
                     max_new_tokens: int = 32, normalize_scores: bool = False) -> TaskModel:
    """Load `spec.model` in the form `task` needs (classifier head, causal LM or seq2seq)."""
    ref = resolve_model_ref(spec.model)
    config = load_config(ref, spec.trust_remote_code)
    kind = model_kind(config)
    if kind == "encoder" and task.kind in ("generation", "rationale"):
        raise LmadaptError(f"model {spec.model!r} is an encoder and cannot generate; "
                           "use a causal LM or seq2seq model for generation tasks")
    tokenizer = load_tokenizer(ref, kind, spec.trust_remote_code)
    template = chat_template_for(tokenizer, task, spec.model)
    kwargs = {"dtype": spec.torch_dtype, "trust_remote_code": spec.trust_remote_code}
    if kind == "encoder":
        id2label = dict(enumerate(task.labels))
        model = AutoModelForSequenceClassification.from_pretrained(
            ref, num_labels=len(task.labels), id2label=id2label,
            label2id={v: k for k, v in id2label.items()}, **kwargs)
    elif kind == "seq2seq":
        model = AutoModelForSeq2SeqLM.from_pretrained(ref, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(spec.torch_device())
    window = context_window(model, tokenizer)
    return TaskModel(model=model, tokenizer=tokenizer, task=task, kind=kind, ref=ref,
                     max_length=min(max_length, window), max_new_tokens=max_new_tokens,
                     normalize_scores=normalize_scores, chat_template=template)
