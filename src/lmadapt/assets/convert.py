"""GGUF → plain transformers folder (safetensors), so later loads skip dequantization."""

from __future__ import annotations

from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


def gguf_to_safetensors(gguf_path: Path, out_dir: Path, dtype: str = "float32") -> None:
    """Dequantize `gguf_path` with transformers and save model, tokenizer and generation
    config into `out_dir` as an ordinary, unquantized checkpoint in `dtype`."""
    import torch  # imported here: `lmadapt pull data` and `list` need no torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    # The weights are now dense tensors; drop every trace of the GGUF quantizer so that
    # save_pretrained writes (and from_pretrained later reads) a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch_dtype
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out_dir)
