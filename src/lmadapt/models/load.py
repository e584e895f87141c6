"""Load any Hugging Face model by hub id, local path or pull name, with dtype/device choice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase
from transformers.models.auto import modeling_auto

from lmadapt.errors import LmadaptError

MODEL_KINDS = ("encoder", "causal", "seq2seq")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """Which model to load and how."""

    model: str = ""  # hub id, local path or pull name (see `lmadapt pull list`)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    trust_remote_code: bool = False  # run code from the model repo; only when you trust it

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise LmadaptError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def torch_device(self) -> torch.device:
        if self.device != "auto":
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_model_ref(ref: str) -> str:
    """A local path, a pull name (pulled on first use) or a hub id, as transformers accepts it."""
    if not ref:
        raise LmadaptError("no model given; pass --model with a hub id, a local path or a pull name")
    try:
        from lmadapt.assets import resolve_model
    except ImportError:  # assets package not available: accept paths and hub ids only
        return ref
    return resolve_model(ref)


def load_config(ref: str, trust_remote_code: bool = False) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except OSError as err:
        hint = "the path has no config.json" if Path(ref).exists() else (
            "it is neither a local folder, a pull name, nor a reachable hub id")
        raise LmadaptError(f"cannot load model {ref!r}: {hint} ({str(err).splitlines()[0][:120]})") from None
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise LmadaptError(f"model {ref!r} needs its own code; pass --trust-remote-code if you trust it") from None
        raise LmadaptError(f"cannot load model {ref!r}: {str(err).splitlines()[0][:160]}") from None


def model_kind(config: PretrainedConfig) -> str:
    """encoder (BERT-like), causal (decoder-only LM) or seq2seq (T5-like)."""
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    masked = config.model_type in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if masked and not getattr(config, "is_decoder", False):
        return "encoder"
    if config.model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    return "encoder"


def load_tokenizer(ref: str, kind: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token; causal LMs pad on the left for generation and scoring batches."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise LmadaptError(f"cannot load the tokenizer of {ref!r}: {str(err).splitlines()[0][:160]}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise LmadaptError(f"tokenizer of {ref!r} has neither a pad nor an eos token; add one")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left" if kind == "causal" else "right"
    return tokenizer


def load_causal_lm(spec: ModelSpec, who: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase, str]:
    """(causal LM on spec's device and dtype, its left-padding tokenizer, resolved ref).

    One-line error naming `who` (e.g. "DPO") unless the model is a causal LM.
    """
    from transformers import AutoModelForCausalLM

    ref = resolve_model_ref(spec.model)
    kind = model_kind(load_config(ref, spec.trust_remote_code))
    if kind != "causal":
        raise LmadaptError(f"{who} needs a causal LM; {spec.model!r} is a {kind} model")
    tokenizer = load_tokenizer(ref, kind, spec.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        ref, dtype=spec.torch_dtype, trust_remote_code=spec.trust_remote_code)
    return model.to(spec.torch_device()), tokenizer, ref


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def find_layer_stack(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: its longest ModuleList."""
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not stacks:
        raise LmadaptError(f"cannot find the transformer layers of {type(model).__name__}")
    return max(stacks, key=len)
