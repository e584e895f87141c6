"""`lmadapt push RUN --repo ORG/NAME`: share a run's model on the Hugging Face hub.

What goes is the artifact's shareable folder, the one its model card's loading snippet names:
`artifact/adapter` (a PEFT adapter) or `artifact/model` (full weights), each with the card as
its README.md, so `from_pretrained("ORG/NAME")` loads it; for an artifact that only lmadapt
loads, the artifact folder itself. Never the rest of the run folder (record, predictions, logs).

The upload is one hub commit (all files or none). Offline (HF_HUB_OFFLINE), without a token,
or when the hub cannot be reached, it stops with one line before anything is created; a repo it
created for an upload that then failed is deleted again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import LocalTokenNotFoundError

from lmadapt.assets.fetch import hub_offline
from lmadapt.errors import LmadaptError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # ORG/NAME


@dataclass(frozen=True)
class Pushed:
    """What `push_run` uploaded: the repo's URL, the commit and the local folder that went."""

    url: str
    commit: str
    folder: Path


def shareable_folder(run_dir: Path) -> Path:
    """The folder of run_dir to upload (see the module docstring); one line when run_dir is no
    complete lmadapt run folder or the folder has no model card."""
    run_dir = Path(run_dir)
    artifact = run_dir / "artifact"
    if not (run_dir / "record.json").is_file() or not artifact.is_dir():
        raise LmadaptError(f"{run_dir} is not an lmadapt run folder (no record.json and artifact/); "
                           "pass the --out of a tune run")
    from lmadapt.report.card import SHAREABLE, weights_in

    sub = weights_in(artifact).folder
    folder = artifact / sub if sub in SHAREABLE else artifact
    if not (folder / "README.md").is_file():
        raise LmadaptError(f"{folder} has no model card (README.md); runs of lmadapt versions before model "
                           "cards lack it: re-run the tune to get one")
    return folder


def push_run(run_dir: Path, repo: str, private: bool = False, token: str | None = None) -> Pushed:
    """Upload run_dir's shareable folder to the hub model repo `repo` (created when absent)."""
    if not REPO_ID.fullmatch(repo):
        raise LmadaptError(f"--repo {repo!r} is not a hub repo id; give ORG/NAME, e.g. my-org/sst2-lora")
    folder = shareable_folder(run_dir)
    if hub_offline():
        raise LmadaptError("cannot push while HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set; unset it to upload")
    api = HfApi(token=token)
    try:
        api.whoami()  # the token, and the hub's reachability, before anything is created
        existed = api.repo_exists(repo, repo_type="model")
    except Exception as err:  # no token, bad token, no network: all one line
        raise LmadaptError(f"cannot push to {repo}: {_reason(err)}") from None
    try:
        url = api.create_repo(repo, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                   commit_message=f"lmadapt push: {Path(run_dir).name}")
    except Exception as err:
        if not existed:  # leave no empty repo behind
            try:
                api.delete_repo(repo, repo_type="model", missing_ok=True)
            except Exception:  # the upload's error is the one to report
                pass
        raise LmadaptError(f"pushing {folder} to {repo} failed: {_reason(err)}") from None
    return Pushed(url=str(url), commit=str(getattr(commit, "oid", "") or ""), folder=folder)


def _reason(err: Exception) -> str:
    if isinstance(err, LocalTokenNotFoundError):
        return "no hub token; log in with `hf auth login`, set HF_TOKEN, or pass --token"
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:200]}"
