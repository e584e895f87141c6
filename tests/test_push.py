"""`lmadapt push RUN --repo ORG/NAME` (issue 17): the artifact's shareable folder goes to the hub
in one upload; offline, without a token or on a failed upload, one line and nothing left behind.
The hub is a fake here (HfApi monkeypatched); nothing leaves the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub.errors import LocalTokenNotFoundError

import lmadapt.push


def _run_folder(root: Path, peft: bool = True) -> Path:
    """A run folder as `lmadapt tune` writes it (contents abridged)."""
    run = root / "run"
    artifact = run / "artifact"
    (artifact / "adapter" if peft else artifact).mkdir(parents=True)
    for name, text in {"record.json": "{}", "lmadapt.json": "{}", "predictions.jsonl": "", "train_log.jsonl": "",
                       ".lmadapt-owned": ""}.items():
        (run / name).write_text(text)
    (artifact / "README.md").write_text("---\nlibrary_name: peft\n---\n# card\n")
    if peft:
        (artifact / "adapter" / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
        (artifact / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        (artifact / "adapter" / "README.md").write_text("# card\n")
    else:
        (artifact / "probe.safetensors").write_bytes(b"probe")
    return run


class FakeHub:
    """Records what push asks of the hub; `fail` names a call that raises."""

    calls: list[tuple[str, dict]] = []
    exists = False
    fail = ""

    def __init__(self, token: str | None = None) -> None:
        self.calls.append(("init", {"token": token}))

    def _call(self, name: str, **kwargs):
        self.calls.append((name, kwargs))
        if self.fail == name:
            raise LocalTokenNotFoundError("no token found") if name == "whoami" else OSError("connection reset")

    def whoami(self):
        self._call("whoami")
        return {"name": "me"}

    def repo_exists(self, repo_id, repo_type=None):
        self._call("repo_exists", repo_id=repo_id)
        return self.exists

    def create_repo(self, repo_id, private=False, repo_type=None, exist_ok=False):
        self._call("create_repo", repo_id=repo_id, private=private, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        self._call("upload_folder", repo_id=repo_id, folder_path=folder_path, files=files)

        class Commit:
            oid = "abc123"
        return Commit()

    def delete_repo(self, repo_id, repo_type=None, missing_ok=False):
        self._call("delete_repo", repo_id=repo_id)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(FakeHub, "calls", [])
    monkeypatch.setattr(FakeHub, "exists", False)
    monkeypatch.setattr(FakeHub, "fail", "")
    monkeypatch.setattr(lmadapt.push, "HfApi", FakeHub)
    return FakeHub


def _named(calls: list, name: str) -> list[dict]:
    return [kwargs for call, kwargs in calls if call == name]


def test_push_uploads_the_adapter_folder_with_its_card(hub, run_cli, tmp_path):
    run = _run_folder(tmp_path)
    code, err = run_cli(["push", run, "--repo", "my-org/sst2-lora", "--private", "--token", "hf_x"])
    assert code == 0, err
    assert _named(hub.calls, "init") == [{"token": "hf_x"}]
    assert _named(hub.calls, "create_repo") == [{"repo_id": "my-org/sst2-lora", "private": True, "exist_ok": True}]
    [upload] = _named(hub.calls, "upload_folder")
    assert upload["repo_id"] == "my-org/sst2-lora" and Path(upload["folder_path"]) == run / "artifact" / "adapter"
    assert upload["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]  # nothing else


def test_an_artifact_only_lmadapt_loads_goes_whole(hub, tmp_path):
    run = _run_folder(tmp_path, peft=False)
    pushed = lmadapt.push.push_run(run, "me/probe")
    [upload] = _named(hub.calls, "upload_folder")
    assert Path(upload["folder_path"]) == run / "artifact" == pushed.folder
    assert upload["files"] == ["README.md", "probe.safetensors"]
    assert pushed.url == "https://huggingface.co/me/probe" and pushed.commit == "abc123"


def test_offline_is_one_line_and_no_hub_call(hub, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(["push", _run_folder(tmp_path), "--repo", "me/x"])
    assert code == 2 and err.strip().splitlines() == [
        "error: cannot push while HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set; unset it to upload"]
    assert hub.calls == []


def test_no_token_stops_before_anything_is_created(hub, run_cli, tmp_path):
    hub.fail = "whoami"
    code, err = run_cli(["push", _run_folder(tmp_path), "--repo", "me/x"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "hf auth login" in err
    assert _named(hub.calls, "create_repo") == [] and _named(hub.calls, "upload_folder") == []


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_upload_removes_only_a_repo_it_created(hub, run_cli, tmp_path, existed):
    hub.fail, hub.exists = "upload_folder", existed
    code, err = run_cli(["push", _run_folder(tmp_path), "--repo", "me/x"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "connection reset" in err
    assert _named(hub.calls, "delete_repo") == ([] if existed else [{"repo_id": "me/x"}])


@pytest.mark.parametrize("setup, repo, message", [
    (lambda root: root / "nothing", "me/x", "is not an lmadapt run folder"),
    (lambda root: _run_folder(root), "not a repo id", "is not a hub repo id"),
    (lambda root: (_run_folder(root) / "artifact" / "adapter" / "README.md").unlink() or root / "run", "me/x",
     "has no model card"),
])
def test_bad_input_is_one_line(hub, run_cli, tmp_path, setup, repo, message):
    code, err = run_cli(["push", setup(tmp_path), "--repo", repo])
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert _named(hub.calls, "upload_folder") == []
