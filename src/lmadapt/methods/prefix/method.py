"""prefix: prefix tuning (peft PrefixTuningConfig); prefixes enter as past key/values."""

from __future__ import annotations

from peft import PrefixTuningConfig, TaskType

from lmadapt.data.task import Task
from lmadapt.errors import LmadaptError
from lmadapt.methods.base import RunContext, TaskModelAdapted
from lmadapt.methods.peft_common.build import PeftMethod
from lmadapt.methods.prefix.config import PrefixMethodConfig
from lmadapt.models.load import load_config, model_kind, resolve_model_ref
from lmadapt.models.task_model import TaskModel
from lmadapt.train.loop import TrainResult


def prefix_config(cfg: PrefixMethodConfig, tm: TaskModel, task_type: TaskType) -> PrefixTuningConfig:
    return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=cfg.prefix_virtual_tokens,
                              prefix_projection=cfg.prefix_projection, encoder_hidden_size=cfg.prefix_hidden)


class Prefix(PeftMethod):
    name = "prefix"
    config_class = PrefixMethodConfig
    model_kinds = ("causal", "seq2seq")  # transformers 5 encoders take no past key values
    summary = "prefix tuning: learned key/value prefixes in every layer (peft)"
    default_lr_field = "prefix_default_lr"
    lr_range = (1e-3, 3e-2)  # learning rates a search tries (log scale)
    merge_note = "prefix tuning adds key/value tokens, not a weight update"
    # training the 135M decoder alone would take longer than the whole demo on 2 CPU cores
    demo_note = ("trains SmolLM2-135M itself: over the demo's CPU budget; run `lmadapt tune --method prefix "
                 "--model smollm2-135m --train rotten-tomatoes` (docs/peft.md)")
    peft_config = staticmethod(prefix_config)

    def fit(self, train: Task, eval_task: Task | None, cfg: PrefixMethodConfig,
            ctx: RunContext) -> tuple[TaskModelAdapted, TrainResult]:
        if model_kind(load_config(resolve_model_ref(ctx.model.model))) == "encoder":
            raise LmadaptError("prefix (peft) needs a model whose forward takes past_key_values, and "
                               "transformers 5 encoders (BERT-like) do not; use unipelt (its own prefix), "
                               "prompt or ptuning with an encoder, or a causal LM")
        return super().fit(train, eval_task, cfg, ctx)
