"""Text embedder: a Hugging Face encoder (or sentence-transformers folder) with mean/CLS pooling.

We run the encoder through `transformers` directly, so the same code serves a sentence-transformers
folder (e.g. all-MiniLM-L6-v2, which keeps config.json and the weights at its root) and a plain
encoder such as a tiny random BERT saved with `save_pretrained`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import track

from lmadapt.errors import LmadaptError

DEFAULT_EMBEDDER = "minilm"
POOLINGS = ("mean", "cls")
PROBE_TEXT = "lmadapt embedder probe: the quick brown fox jumps over the lazy dog."


def resolve_embedder(model_ref: str) -> tuple[str, Path | str]:
    """Map a user's reference to (ref to store, what to load).

    A local folder is stored as its absolute path; a pull name (e.g. "minilm") is resolved through
    `lmadapt.assets.resolve_model` when that is available; anything else is passed on as a hub id.
    """
    local = Path(model_ref).expanduser()
    if local.is_dir():
        return str(local.resolve()), local.resolve()
    try:
        from lmadapt.assets import resolve_model  # written by the assets module; optional here
    except ImportError:
        return model_ref, model_ref
    try:
        resolved = str(resolve_model(model_ref))
        return model_ref, Path(resolved) if Path(resolved).is_dir() else resolved
    except LmadaptError:
        raise
    except Exception:  # not a known pull name: let transformers try it as a hub id
        return model_ref, model_ref


def _read_json(path: Path) -> dict:
    """A JSON file as a dict, or {} when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else {}


class Embedder:
    """Turns texts into (N, D) float32 vectors; L2-normalized by default so dot product = cosine.

    Args:
        model_ref: local folder, pull name (default "minilm") or hub id.
        pooling: "mean" (average over real tokens, using the attention mask) or "cls".
        normalize: scale every vector to unit length.
        batch_size: texts per forward pass.
        max_tokens: truncate inputs to this many tokens (default: the model's own limit).
        device: torch device; default CUDA when available, else CPU.
    """

    def __init__(
        self,
        model_ref: str = DEFAULT_EMBEDDER,
        pooling: str = "mean",
        normalize: bool = True,
        batch_size: int = 32,
        max_tokens: int | None = None,
        device: str | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise LmadaptError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        import torch  # imported here so `import lmadapt.index` (and the CLI) stays fast
        from transformers import AutoModel, AutoTokenizer

        self.ref, source = resolve_embedder(model_ref)
        self.pooling = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # keep stdout clean for `index query --json`
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source))
            self.model = AutoModel.from_pretrained(str(source)).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise LmadaptError(
                f"cannot load embedder {model_ref!r}: give a local model folder, a pull name "
                f"(see `lmadapt pull model`) or a reachable hub id ({type(err).__name__})"
            ) from None
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)
        self.max_tokens = max_tokens or self._model_max_tokens(source)

    def _model_max_tokens(self, source: Path | str) -> int:
        """Token limit: sentence-transformers' max_seq_length, else the position-embedding size."""
        if isinstance(source, Path):
            st_limit = _read_json(source / "sentence_bert_config.json").get("max_seq_length")
            if st_limit:
                return int(st_limit)
        limits = [getattr(self.model.config, "max_position_embeddings", None) or 512]
        if self.tokenizer.model_max_length < 1_000_000:  # HF uses a huge sentinel for "unset"
            limits.append(self.tokenizer.model_max_length)
        return int(min(limits))

    def describe(self) -> dict:
        """What must match between index build and query time (stored in the index metadata)."""
        probe = self.encode([PROBE_TEXT])[0]
        return {
            "ref": self.ref, "dim": self.dim, "pooling": self.pooling,
            "normalize": self.normalize, "max_tokens": self.max_tokens,
            "probe": [round(float(v), 6) for v in probe],
        }

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed `texts` in batches; returns (N, D) float32 (unit rows when `normalize`)."""
        import torch

        from lmadapt.models.embed import pool  # the one pooler (features and icl use it too)

        batches = range(0, len(texts), self.batch_size)
        if progress and len(batches) > 1:
            batches = track(batches, description="embedding", transient=True)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in batches:
            batch = list(texts[start : start + self.batch_size])
            enc = self.tokenizer(batch, padding=True, truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state  # (B, T, D)
            pooled = pool(hidden, enc["attention_mask"], self.pooling)  # (B, D)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[start : start + len(batch)] = pooled.float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.ref!r}, dim={self.dim}, pooling={self.pooling!r})"


def embedder_mismatch(stored: dict, embedder: Embedder) -> str | None:
    """Why `embedder` cannot query an index built with `stored` (its describe()), or None."""
    if stored["dim"] != embedder.dim:
        return f"dimension {stored['dim']} vs {embedder.dim}"
    if stored.get("pooling") != embedder.pooling or stored.get("normalize") != embedder.normalize:
        return "different pooling/normalization"
    probe = embedder.encode([PROBE_TEXT])[0]  # (D,)
    stored_probe = np.asarray(stored["probe"], dtype=np.float32)
    cosine = float(probe @ stored_probe) / (
        float(np.linalg.norm(probe) * np.linalg.norm(stored_probe)) or 1.0
    )
    if cosine < 0.999:  # same text, other weights: the vector spaces differ
        return f"different weights (probe cosine {cosine:.3f})"
    return None

