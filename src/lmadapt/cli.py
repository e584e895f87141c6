"""The `lmadapt` command line. Settings come from the same dataclasses as the Python API:
`--config run.yaml` and trailing `key=value` overrides (see `lmadapt tune --help`)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from lmadapt.cli_help import CompareHelp, LazyGroup, TuneHelp
from lmadapt.compare_settings import CompareConfig
from lmadapt.config import build_configs, config_keys, load_yaml, parse_overrides
from lmadapt.errors import LmadaptError
from lmadapt.methods import command_groups, config_class, method_names
from lmadapt.train.config import TrainConfig

# Imports that reach torch (data loaders, models, methods) happen inside the commands, so that
# `lmadapt --help` and `lmadapt tune --help` stay fast (docs/cli.md); the help's settings are
# read from the torch-free config modules.
if TYPE_CHECKING:
    from lmadapt.data.loaders import DataSpec
    from lmadapt.models.load import ModelSpec


def _quiet_transformers() -> None:
    """Library chatter (weight-loading bars, load reports) hides our own output; keep errors only.
    Set before transformers is imported (it reads these once), applied directly when it already is."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


def _attr(module: str, name: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module(module), name)


class _Commands(LazyGroup):
    """`lmadapt`'s commands; these are imported only when run (generate and index import torch
    and faiss). A method's own commands are named on its registry line and load their help."""

    lazy = {"generate": (_attr("lmadapt.decoding.cli", "generate_cmd"),
                         "Generate a continuation for each prompt, optionally proxy-tuned (Liu et al., 2024)."),
            "pull": (_attr("lmadapt.assets.cli", "pull_app"), "Pull named models and datasets (offline-capable)."),
            "index": (_attr("lmadapt.index.cli", "index_app"), "Build and query persistent vector indexes (RAG)."),
            **{name: (loader, "") for name, loader in command_groups().items()}}


app = typer.Typer(help="Adapt a pretrained language model to your task by every common method, "
                       "and compare them side by side.", no_args_is_help=True, cls=_Commands,
                  pretty_exceptions_enable=False, add_completion=False)
err_console = Console(stderr=True)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": False}

# ---- shared options --------------------------------------------------------------------------
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="hub id, local path or pull name (lmadapt pull list)")]
TrainOpt = Annotated[str, typer.Option("--train", help="training data: .jsonl/.csv/.parquet, a datasets folder, or a pull name")]
EvalOpt = Annotated[str | None, typer.Option("--eval", help="eval data (default: split off --eval-split of --train)")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output folder (written atomically)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file of settings (key: value)")]
InputField = Annotated[str, typer.Option(help="field holding the input text")]
LabelField = Annotated[str, typer.Option(help="field holding the class label")]
OutputField = Annotated[str, typer.Option(help="field holding the target text (generation)")]
LabelsOpt = Annotated[str, typer.Option(help="comma-separated label set (default: inferred from --train)")]
TemplateOpt = Annotated[str, typer.Option(help="prompt template with a {text} slot (causal LMs)")]
KindOpt = Annotated[str, typer.Option(help="auto | classification | generation")]
FormatOpt = Annotated[str, typer.Option("--format", help="auto | messages | alpaca | prompt_completion | text (auto: from the fields); chat data also takes chat_template=auto|none|PATH and train_on=all|last")]
SplitOpt = Annotated[float, typer.Option(help="fraction of --train held out for eval when --eval is absent")]
DtypeOpt = Annotated[str, typer.Option(help="float32 | bfloat16 | float16")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N | mps")]
METRIC_HELP = "exact_match | numeric | contains | rouge_l | chrf (generation); accuracy (classification)"
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="allow code shipped with the model (only if you trust it)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="write into an --out folder that holds other files (lmadapt's earlier output there is replaced; your files stay)")]


def _resolve_data(ref: str) -> str:
    try:
        from lmadapt.assets import resolve_data
    except ImportError:
        return ref
    return resolve_data(ref)


def _settings(config: Path | None, extra: list[str]) -> dict:
    return {**load_yaml(config), **parse_overrides(extra)}


def _data_spec(settings: dict, input_field: str, label_field: str, output_field: str, labels: str,
               template: str, kind: str, data_format: str = "auto") -> DataSpec:
    from lmadapt.data.loaders import DataSpec
    from lmadapt.data.task import stop_strings

    return DataSpec(input_field=settings.pop("input_field", input_field),
                    label_field=settings.pop("label_field", label_field),
                    output_field=settings.pop("output_field", output_field),
                    kind=settings.pop("kind", kind),
                    labels=_label_list(settings.pop("labels", labels)),
                    template=settings.pop("template", template),
                    metric=str(settings.pop("metric", "")),
                    format=str(settings.pop("format", data_format)),
                    chat_template=str(settings.pop("chat_template", "auto")),
                    train_on=str(settings.pop("train_on", "all")),
                    stop=stop_strings(settings.pop("stop", ())))


def _label_list(value: str | list) -> tuple[str, ...]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(s).strip() for s in items if str(s).strip())


def _model_spec(settings: dict, model: str, dtype: str, device: str, remote: bool) -> ModelSpec:
    from lmadapt.models.load import ModelSpec

    return ModelSpec(model=str(settings.pop("model", model)), dtype=str(settings.pop("dtype", dtype)),
                     device=str(settings.pop("device", device)),
                     trust_remote_code=bool(settings.pop("trust_remote_code", remote)))


def _run_inputs(settings: dict, model: str, train: str, eval: str | None, out: Path,
                dtype: str, device: str, remote: bool) -> tuple[ModelSpec, str, str | None, Path]:
    """Model spec, train/eval refs and output folder, each from --options or the settings."""
    model_spec = _model_spec(settings, model, dtype, device, remote)
    train_ref, eval_ref = str(settings.pop("train", train)), settings.pop("eval", eval)
    if not train_ref:
        raise LmadaptError("no training data given; pass --train FILE or a pull name")
    return model_spec, train_ref, eval_ref, Path(settings.pop("out", out))


def _load_tasks(train_ref: str, eval_ref: str | None, data: DataSpec, eval_split: float, seed: int,
                methods: list[str]) -> tuple:
    from lmadapt.data.loaders import load_train_eval
    from lmadapt.methods import task_readers

    return load_train_eval(_resolve_data(train_ref), _resolve_data(eval_ref) if eval_ref else None,
                           data, eval_split, seed, readers=task_readers(methods))


@app.command(cls=TuneHelp, context_settings=EXTRA)
def tune(ctx: typer.Context, method: Annotated[str, typer.Option(help=f"one of: {', '.join(method_names())}; "
                                                                  "--method NAME --help lists its settings")] = "",
         model: ModelOpt = "", train: TrainOpt = "", eval: EvalOpt = None, out: OutOpt = Path("runs/tune"),
         config: ConfigOpt = None, input_field: InputField = "text", label_field: LabelField = "label",
         output_field: OutputField = "output", labels: LabelsOpt = "", template: TemplateOpt = "",
         kind: KindOpt = "auto", data_format: FormatOpt = "auto", eval_split: SplitOpt = 0.2, dtype: DtypeOpt = "float32",
         device: DeviceOpt = "auto", trust_remote_code: RemoteOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Adapt MODEL to the task with one METHOD; writes OUT/record.json and OUT/artifact/."""
    from lmadapt.methods import get_method
    from lmadapt.run import tune as run_tune

    settings = _settings(config, ctx.args)
    method = str(settings.pop("method", method))
    if not method:
        raise LmadaptError("no method given; pass --method (one of: " + ", ".join(method_names()) + ")")
    impl = get_method(method)
    spec = _data_spec(settings, input_field, label_field, output_field, labels, template, kind, data_format)
    model_spec, train_ref, eval_ref, out = _run_inputs(settings, model, train, eval, out, dtype, device,
                                                       trust_remote_code)
    if not model_spec.model:
        raise LmadaptError("no model given; pass --model with a hub id, a local path or a pull name")
    split = float(settings.pop("eval_split", eval_split))
    configs = build_configs([TrainConfig, impl.config_class], settings)
    train_cfg = configs[TrainConfig]
    train_task, eval_task = _load_tasks(train_ref, eval_ref, spec, split, train_cfg.seed, [method])
    record = run_tune(method, model_spec, train_task, eval_task, configs[impl.config_class], train_cfg, out,
                      overwrite=overwrite)
    from lmadapt.report.compare import print_table

    print_table([record], f"{method} on {train_task.name}")
    print(out / "record.json")


@app.command(cls=CompareHelp, context_settings=EXTRA)
def compare(ctx: typer.Context,
            methods: Annotated[str, typer.Option(help="comma-separated methods; METHOD@MODEL uses another model for that method; 'all' = every method")] = "features,head,full",
            model: ModelOpt = "", train: TrainOpt = "", eval: EvalOpt = None, out: OutOpt = Path("runs/compare"),
            config: ConfigOpt = None, input_field: InputField = "text", label_field: LabelField = "label",
            output_field: OutputField = "output", labels: LabelsOpt = "", template: TemplateOpt = "",
            kind: KindOpt = "auto", data_format: FormatOpt = "auto", eval_split: SplitOpt = 0.2, dtype: DtypeOpt = "float32",
            device: DeviceOpt = "auto", trust_remote_code: RemoteOpt = False, overwrite: OverwriteOpt = False) -> None:
    """Run several methods on the same data: OUT/results.jsonl, OUT/report.md, OUT/pareto.png."""
    from lmadapt.compare import compare as run_compare
    from lmadapt.compare import method_configs, parse_method_list
    from lmadapt.compare_settings import compare_config

    settings = _settings(config, ctx.args)
    method_list = parse_method_list(str(settings.pop("methods", methods)))
    spec = _data_spec(settings, input_field, label_field, output_field, labels, template, kind, data_format)
    model_spec, train_ref, eval_ref, out = _run_inputs(settings, model, train, eval, out, dtype, device,
                                                       trust_remote_code)
    split = float(settings.pop("eval_split", eval_split))
    if not model_spec.model and any(m is None for _, m in method_list):
        raise LmadaptError("no model given; pass --model, or METHOD@MODEL for every method")
    train_keys = {k: v for k, v in settings.items() if k in TrainConfig.__dataclass_fields__}
    train_cfg = build_configs([TrainConfig], train_keys)[TrainConfig]
    configs = method_configs(method_list, {k: v for k, v in settings.items() if k not in train_keys})
    compare_cfg = compare_config(settings)
    train_task, eval_task = _load_tasks(train_ref, eval_ref, spec, split, train_cfg.seed,
                                        [name for name, _ in method_list])
    run_compare(method_list, model_spec, train_task, eval_task, configs, train_cfg, out, overwrite=overwrite,
                settings=compare_cfg)
    print(out / "report.md")


@app.command("eval", context_settings=EXTRA)
def eval_cmd(ctx: typer.Context, run_dir: Annotated[Path, typer.Argument(help="a tune output folder")],
             data: Annotated[str, typer.Option(help="data file (same fields as training) or pull name")],
             input_field: InputField = "text", label_field: LabelField = "label",
             output_field: OutputField = "output", device: DeviceOpt = "",
             batch_size: Annotated[int, typer.Option(help="prediction batch size")] = 32,
             as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON")] = False,
             reward: Annotated[str, typer.Option(help="rlhf runs: the reward to score with (a `reward` run "
                                                     "folder, module:function or file.py:function); a run folder's "
                                                     "own Python reward is never imported without it")] = "",
             trust_remote_code: RemoteOpt = False,
             metric: Annotated[str, typer.Option(help=f"the run's own when empty; or metric=NAME: {METRIC_HELP}")] = "") -> None:
    """Score a saved run on another data file (metric with bootstrap 95% CI)."""
    from lmadapt.data.loaders import DataSpec, load_task
    from lmadapt.data.task import stop_strings
    from lmadapt.methods import task_readers
    from lmadapt.run import evaluate, load_run

    extra = parse_overrides(ctx.args)
    metric = str(extra.pop("metric", metric))
    stop = extra.pop("stop", None)
    if extra:
        raise LmadaptError(f"lmadapt eval takes no setting {next(iter(extra))}=; only metric=NAME ({METRIC_HELP}) "
                           "and stop=STRING|JSON-LIST")
    adapted, skeleton, manifest = load_run(run_dir, device or None, trust_remote_code=trust_remote_code)
    if reward:
        if not adapted.use_reward(reward):
            raise LmadaptError(f"--reward applies to rlhf runs only; {run_dir} is a {manifest['method']} run")
    spec = DataSpec(input_field=input_field, label_field=label_field, output_field=output_field,
                    kind=skeleton.kind, labels=tuple(skeleton.labels), template=skeleton.template,
                    metric=metric or skeleton.metric,
                    stop=stop_strings(stop) if stop is not None else tuple(skeleton.stop))
    task = load_task(_resolve_data(data), spec, readers=task_readers([manifest["method"]]))
    result = evaluate(adapted, task, batch_size)
    scores = {**result.scores, "examples": len(task.examples),
              "examples_per_second": result.examples_per_second, "method": manifest["method"]}
    if as_json:
        print(json.dumps(scores))
    else:
        print(f"{manifest['method']} on {task.name}: {scores['metric']} = {scores['score']:.4f} "
              f"(95% CI {scores['ci_low']:.4f}–{scores['ci_high']:.4f}), {len(task.examples)} examples")


@app.command()
def predict(run_dir: Annotated[Path, typer.Argument(help="a tune output folder")],
            data: Annotated[str | None, typer.Option(help="input file (.jsonl/.csv/.parquet) or pull name")] = None,
            text: Annotated[list[str] | None, typer.Option(help="an input text (repeatable)")] = None,
            input_field: InputField = "text", device: DeviceOpt = "",
            batch_size: Annotated[int, typer.Option(help="prediction batch size")] = 32,
            trust_remote_code: RemoteOpt = False) -> None:
    """Predict labels (or generate outputs) for new inputs; prints one JSON line per input."""
    from lmadapt.data.loaders import read_rows
    from lmadapt.run import load_run

    if not data and not text:
        raise LmadaptError("nothing to predict; pass --data FILE or --text '...'")
    if data:
        path = Path(_resolve_data(data))
        texts = []
        for line_no, row in read_rows(path):
            if input_field not in row:
                raise LmadaptError(f"{path}:{line_no}: missing field {input_field!r}; set --input-field")
            texts.append(str(row[input_field]))
    else:
        texts = list(text or [])
    adapted, _, _ = load_run(run_dir, device or None, trust_remote_code=trust_remote_code)
    for item, prediction in zip(texts, adapted.predict(texts, batch_size), strict=True):
        print(json.dumps({"text": item, "prediction": prediction}, ensure_ascii=False))


@app.command("methods")
def list_methods() -> None:
    """List the registered methods: what each adapts, the models and tasks it takes."""
    from lmadapt.methods import REGISTRY

    for name, cls in REGISTRY.items():
        traits = [f"models: {', '.join(cls.model_kinds)}", f"tasks: {', '.join(cls.task_kinds)}",
                  "trains with the shared loop" if cls.trains else "no gradient training"] + (["mergeable"] if cls.mergeable else [])
        print(f"{name:12s} {cls.summary}\n{'':12s} {'; '.join(traits)}")


@app.command()
def demo(out: OutOpt = Path("demo-out"),
         quick: Annotated[bool, typer.Option(help="a smaller subset (about 2 minutes)")] = False,
         methods: Annotated[str, typer.Option(help="comma-separated subset of methods (default: all)")] = "",
         search_trials: Annotated[int, typer.Option(help="learning-rate search trials per trainable method, on the "
                                                        "validation set (0 = defaults; the first trial runs them; each costs about one run)")] = 2,
         seeds: Annotated[int, typer.Option(help="retrain each method with N seeds (the CIs then cover training noise)")] = 1,
         overwrite: OverwriteOpt = False) -> None:
    """Pull MiniLM, SmolLM2 and a real dataset, then compare every method: the recommendation and the table."""
    from lmadapt.compare import parse_method_list
    from lmadapt.demo import run_demo

    names = [m for m, _ in parse_method_list(methods)] if methods else None
    run_demo(out, quick, names, CompareConfig(search_trials=search_trials, seeds=seeds), overwrite)


@app.command()
def merge(run_dir: Annotated[Path, typer.Argument(help="a tune output folder of a mergeable run (lora, ia3)")],
          out: Annotated[Path, typer.Option("--out", "-o", help="folder for the merged HF model")],
          overwrite: OverwriteOpt = False,
          trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="allow code shipped with the base model (only if you trust it; a run folder never turns this on)")] = False) -> None:
    """Merge a LoRA/IA3 adapter into its base model and save a plain HF model folder."""
    from lmadapt.merge import merge_run

    typer.echo(f"merged model written to {merge_run(run_dir, out, overwrite, trust_remote_code)}")


@app.command()
def push(run_dir: Annotated[Path, typer.Argument(help="a tune output folder")],
         repo: Annotated[str, typer.Option(help="the hub model repo to create or update: ORG/NAME")],
         private: Annotated[bool, typer.Option("--private", help="create the repo private (an existing repo keeps "
                                                                 "its visibility)")] = False,
         token: Annotated[str, typer.Option(help="a hub token with write access (default: HF_TOKEN, or the one "
                                                 "`hf auth login` stored)")] = "") -> None:
    """Upload a run's model to the Hugging Face hub: its adapter or weights folder, with the model card."""
    from lmadapt.push import push_run

    pushed = push_run(run_dir, repo, private, token or None)
    typer.echo(f"pushed {pushed.folder} to {pushed.url}")


class Services:
    """What a method's own command group (`lmadapt distill ...`) may run, handed over as the
    click context object: methods never import lmadapt.run or lmadapt.cli."""

    @staticmethod
    def tune(*args, **kwargs):
        from lmadapt.run import tune as run_tune

        return run_tune(*args, **kwargs)


def _print_version(value: bool) -> None:
    if value:
        from lmadapt import __version__

        typer.echo(f"lmadapt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(ctx: typer.Context,
          version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    _quiet_transformers()
    ctx.obj = Services()


def main() -> None:
    """Console entry point: user errors print one line and exit non-zero (2), no traceback.

    In non-standalone mode click *returns* the code of a `typer.Exit(code)` raised by a command
    (e.g. `pull`, `index`, `generate` after printing their own one-line error) instead of
    exiting with it, so the return value is the process's exit status."""
    warnings.showwarning = _show_warning
    # peft (PeftModel.__init__) reads transformers' deprecated is_gradient_checkpointing on every
    # adapter wrap: a line per run that the user can do nothing about (the one pytest also names)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        code = app(standalone_mode=False)
    except LmadaptError as err:
        _print_error(str(err))
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # usage errors: bad option, missing argument, bad value
        if isinstance(err, _usage_errors()):
            if type(err).__name__ == "NoArgsIsHelpError":  # `lmadapt` / `lmadapt pull` alone: the help
                err.show()
            else:
                _print_error(_usage_line(err))
            sys.exit(err.exit_code or 2)
        raise
    if isinstance(code, int) and code != 0:
        sys.exit(code)


_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """lmadapt's own warnings (duplicate texts, skipped documents) as one `warning: ...` line;
    other libraries' warnings as Python prints them."""
    if category.__module__.startswith("lmadapt"):
        flat = " ".join(str(message).split())
        err_console.print(f"[yellow]warning:[/yellow] {escape(flat)}", highlight=False, soft_wrap=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def _print_error(message: str) -> None:
    """One `error: ...` line on stderr (newlines inside the message are folded)."""
    flat = " ".join(part.strip() for part in message.strip().splitlines() if part.strip())
    err_console.print(f"[red]error:[/red] {escape(flat)}", highlight=False, soft_wrap=True)


def _usage_line(err: Exception) -> str:
    """A click usage error as one line: the message plus where to find the command's help."""
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    if (hint := _setting_hint(getattr(err, "option_name", "") or "")) is not None:
        message = f"{message}; {hint}"
    ctx = getattr(err, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", ""):
        return f"{message} (see '{ctx.command_path} --help')"
    return message


def _setting_hint(option: str) -> str | None:
    """`--epochs 1` for a setting: the key=value form it should have been, or None."""
    key = option.lstrip("-").replace("-", "_")
    if not option.startswith("--") or not key:
        return None
    known = config_keys([TrainConfig, CompareConfig, *(config_class(m) for m in method_names())])
    if key not in known:
        return None
    args = sys.argv[1:]
    at = next((i for i, a in enumerate(args) if a == option or a.startswith(option + "=")), None)
    value = ""
    if at is not None:
        value = args[at].partition("=")[2] if "=" in args[at] else (
            args[at + 1] if at + 1 < len(args) and not args[at + 1].startswith("-") else "")
    return f"{key} is a setting: pass it as {key}={value or 'VALUE'} after the options"


def _usage_errors() -> tuple[type[Exception], ...]:
    """Click's usage-error base classes: typer >= 0.2x vendors click as `typer._click`, older
    typer uses click itself; both are caught so a mistyped option never prints a traceback."""
    classes: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            classes.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


if __name__ == "__main__":
    main()
