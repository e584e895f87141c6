"""`lmadapt generate`: plain or proxy-tuned generation from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from lmadapt.decoding.config import GenerationConfig
from lmadapt.decoding.engine import generate
from lmadapt.decoding.sources import LogitSource, ProxySource, SharedLoraProxySource
from lmadapt.decoding.vocab import check_tokenizers_match
from lmadapt.errors import LmadaptError

generate_app = typer.Typer(help="Generate text with one model or with proxy-tuning.")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve(ref: str) -> str:
    """A pull name → local folder via `lmadapt.assets.resolve_model` when available, else `ref`."""
    try:
        from lmadapt.assets import resolve_model  # type: ignore[attr-defined]
    except ImportError:
        return ref
    return str(resolve_model(ref))


def _load(ref: str, dtype: str, device: str, trust_remote_code: bool = False) -> tuple[torch.nn.Module, Any]:
    """Load a causal LM and its tokenizer by hub id, local folder or pull name (code shipped
    with a model runs only with `trust_remote_code`, i.e. --trust-remote-code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _resolve(ref)
    torch_dtype = "auto" if dtype == "auto" else _DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LmadaptError(
            f"cannot load model {ref!r} ({first_line}); give a local folder, a hub id, "
            "or a name fetched with `lmadapt pull model`"
        ) from err
    return model.to(device).eval(), tokenizer


def _read_prompts(prompt: list[str] | None, prompts: Path | None) -> list[str]:
    """Prompts from --prompt options and/or a file (one per line, or JSONL with "prompt")."""
    collected = list(prompt or [])
    if prompts is not None:
        if not prompts.is_file():
            raise LmadaptError(f"prompts file {prompts} does not exist; pass a text or JSONL file")
        for number, line in enumerate(prompts.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if prompts.suffix == ".jsonl" or line.lstrip().startswith("{"):
                try:
                    collected.append(str(json.loads(line)["prompt"]))
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise LmadaptError(
                        f'{prompts}:{number}: expected a JSON object with a "prompt" field ({err})'
                    ) from err
            else:
                collected.append(line)
    if not collected:
        raise LmadaptError("no prompts given; pass --prompt TEXT or --prompts FILE")
    return collected


def _build_source(
    base: torch.nn.Module,
    tokenizer: Any,
    expert: str | None,
    anti_expert: str | None,
    expert_adapter: Path | None,
    alpha: float,
    dtype: str,
    device: str,
    trust_remote_code: bool = False,
) -> torch.nn.Module | LogitSource:
    """The base model alone, or a proxy source from (expert, anti-expert) or (adapter, anti-expert)."""
    if expert is None and anti_expert is None and expert_adapter is None:
        return base
    if anti_expert is None or (expert is None) == (expert_adapter is None):
        raise LmadaptError(
            "proxy-tuning needs --anti-expert plus exactly one of --expert or --expert-adapter"
        )
    small, small_tokenizer = _load(anti_expert, dtype, device, trust_remote_code)
    check_tokenizers_match(tokenizer, small_tokenizer, "anti-expert")
    if expert_adapter is not None:
        from peft import PeftModel

        if not (expert_adapter / "adapter_config.json").is_file():
            raise LmadaptError(
                f"{expert_adapter} has no adapter_config.json; pass a PEFT LoRA folder"
            )
        lora_model = PeftModel.from_pretrained(small, str(expert_adapter)).eval()
        return SharedLoraProxySource(base, lora_model, alpha, vocab_size=len(tokenizer))
    expert_model, expert_tokenizer = _load(expert, dtype, device, trust_remote_code)
    check_tokenizers_match(tokenizer, expert_tokenizer, "expert")
    return ProxySource(base, expert_model, small, alpha, vocab_size=len(tokenizer))


@generate_app.command("generate")
def generate_cmd(
    model: Annotated[str, typer.Argument(help="Base model: hub id, local folder or pull name.")],
    prompt: Annotated[
        list[str] | None, typer.Option("--prompt", "-p", help="A prompt; repeat for several.")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help='File of prompts: one per line, or JSONL with a "prompt" field.'),
    ] = None,
    expert: Annotated[
        str | None, typer.Option(help="Proxy-tuning: the tuned small model (M+).")
    ] = None,
    anti_expert: Annotated[
        str | None,
        typer.Option(help="Proxy-tuning: the untuned small model (M-), same tokenizer as MODEL."),
    ] = None,
    expert_adapter: Annotated[
        Path | None,
        typer.Option(
            help="Proxy-tuning: a PEFT LoRA folder on --anti-expert that makes the expert (one batched pass)."
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="Proxy strength: logits = base + alpha * (expert - anti-expert).")
    ] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens to generate per prompt.")] = 64,
    temperature: Annotated[
        float, typer.Option(help="Sampling temperature; 0 means greedy decoding.")
    ] = 0.0,
    top_k: Annotated[
        int, typer.Option(help="Sample only from the k most likely tokens (0 = off).")
    ] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1.0 = off).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Random seed for sampling.")] = None,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop string (output is cut before it); repeatable.")
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="Weights dtype: auto, float32, bfloat16 or float16.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="Device: auto, cpu, cuda, cuda:1, mps ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together (left-padded).")] = 8,
    jsonl: Annotated[
        bool,
        typer.Option(help='Print one JSON line {"prompt", "output"} per prompt instead of text.'),
    ] = False,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Allow code shipped with the models (only if you trust them; never taken from a folder).",
        ),
    ] = False,
) -> None:
    """Generate a continuation for each prompt, optionally proxy-tuned (Liu et al., 2024)."""
    try:
        if dtype != "auto" and dtype not in _DTYPES:
            raise LmadaptError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_k=top_k,
            top_p=top_p,
            stop=list(stop or []),
            seed=seed,
        )
        texts_in = _read_prompts(prompt, prompts)
        base, tokenizer = _load(model, dtype, device, trust_remote_code)
        source = _build_source(
            base, tokenizer, expert, anti_expert, expert_adapter, alpha, dtype, device,
            trust_remote_code,
        )
        outputs = generate(source, tokenizer, texts_in, cfg, batch_size=batch_size)
    except LmadaptError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    for text_in, text_out in zip(texts_in, outputs, strict=True):
        typer.echo(json.dumps({"prompt": text_in, "output": text_out}) if jsonl else text_out)
