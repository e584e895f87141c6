import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)  # tiny models: one thread is fastest and steady on shared CPUs

from tiny import make_bert, make_llama, toy_rows, write_jsonl  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_collection_modifyitems(config, items):
    """The named third-party warning filters of pyproject's `filterwarnings` hold under
    `-W error::FutureWarning` too (a -W option outranks the ini's filters; a mark outranks -W),
    so that flag fails on lmadapt's own warnings only."""
    named = config.getini("filterwarnings")
    for item in items:
        for spec in named:
            item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    return (write_jsonl(folder / "train.jsonl", toy_rows(64, seed=1)),
            write_jsonl(folder / "eval.jsonl", toy_rows(24, seed=2)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is absent (it exists only beside the project's own checkout)")
    return SHARED / "data"


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run the `lmadapt` console entry point in-process: run_cli([...]) -> (exit code, stderr)."""
    from lmadapt.cli import main

    def run(args: list) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["lmadapt", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        return code, capsys.readouterr().err

    return run


@pytest.fixture(scope="session")
def tiny_chat_llama(tmp_path_factory) -> Path:
    from tiny import make_chat_llama

    return make_chat_llama(tmp_path_factory.mktemp("chat_llama"))


# ---- vector-index embedders (test_index.py, test_index_safety.py) ----------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random BERT embedders (tests/index_tiny.py): a, b (same dim, other weights), small (other dim)."""
    from index_tiny import make_tiny_bert

    root = tmp_path_factory.mktemp("models")
    return {
        "a": make_tiny_bert(root / "a", seed=0),
        "b": make_tiny_bert(root / "b", seed=1),  # same dim, other weights
        "small": make_tiny_bert(root / "small", hidden=16, seed=2),  # other dim
    }


@pytest.fixture(scope="module")
def embedder(models):
    from lmadapt.index import Embedder

    return Embedder(str(models["a"]), batch_size=16)
