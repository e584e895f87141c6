"""`lmadapt merge RUN_DIR --out DIR` (mounted on the main app as app.command("merge")(merge_cmd))."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def merge_cmd(run_dir: Annotated[Path, typer.Argument(help="a tune output folder of a lora or ia3 run")],
              out: Annotated[Path, typer.Option("--out", "-o", help="folder for the merged HF model")],
              overwrite: Annotated[bool, typer.Option("--overwrite", help="write into an --out folder that holds other files (lmadapt's earlier output there is replaced; your files stay)")] = False,
              trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="allow code shipped with the base model (only if you trust it; a run folder never turns this on)")] = False) -> None:
    """Merge a LoRA/IA3 adapter into its base model and save a plain HF model folder."""
    from lmadapt.methods.peft_common.merge import merge_run

    typer.echo(f"merged model written to {merge_run(run_dir, out, overwrite, trust_remote_code)}")
