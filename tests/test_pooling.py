"""The one pooler (`lmadapt.models.embed.pool`): what the index embedder, features and icl share.

Mean pooling is checked against sentence-transformers on the same tiny BERT folder (skipped when
sentence-transformers is not installed; lmadapt itself does not depend on it).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmadapt.index import Embedder
from lmadapt.models.embed import pool
from tiny import make_bert, toy_rows


@pytest.mark.parametrize("pooling", ["cls", "mean", "last"])
def test_pool_ignores_the_padding_side(pooling):
    """Each row's real tokens, padded on the right or on the left, pool to the same vector."""
    torch.manual_seed(0)
    lengths = [5, 3, 1]
    rows = [torch.randn(n, 4) for n in lengths]  # (n_i, C) real tokens of each row
    width = max(lengths)
    right, left = torch.zeros(3, width, 4), torch.zeros(3, width, 4)  # (B, T, C), pads are 0
    right_mask, left_mask = torch.zeros(3, width, dtype=torch.long), torch.zeros(3, width, dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        right[i, :n], right_mask[i, :n] = row, 1
        left[i, width - n:], left_mask[i, width - n:] = row, 1
    expected = {"cls": [r[0] for r in rows], "last": [r[-1] for r in rows], "mean": [r.mean(0) for r in rows]}
    torch.testing.assert_close(pool(right, right_mask, pooling), torch.stack(expected[pooling]))
    torch.testing.assert_close(pool(left, left_mask, pooling), torch.stack(expected[pooling]))


def test_mean_pooling_matches_sentence_transformers(tmp_path):
    """Embedder(pooling="mean", normalize=False) gives sentence-transformers' vectors for a plain
    HF encoder folder (which it wraps as transformer + mean pooling)."""
    st = pytest.importorskip("sentence_transformers")
    folder = make_bert(tmp_path / "bert", dropout=0.0)
    words = [row["text"].split() for row in toy_rows(6, seed=3)]
    texts = [" ".join(w[: 1 + i % 5]) for i, w in enumerate(words)]  # 1 to 5 words: padded batches
    ours = Embedder(str(folder), pooling="mean", normalize=False, batch_size=4, device="cpu").encode(texts)
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(
        texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
