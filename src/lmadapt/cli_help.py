"""The CLI's help, kept fast: commands imported when they run rather than when listed
(`LazyGroup`), and the settings help of `tune` and `compare` built when asked for, grouped, from
the `--method` / `--methods` on the command line (`tune --method lora --help`). Nothing here
imports torch: the settings come from the config dataclasses, whose modules are torch-free."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

from lmadapt.compare_settings import CompareConfig
from lmadapt.methods import config_class, method_names
from lmadapt.train.config import TrainConfig

RAW_ARGS = "lmadapt.raw_args"  # ctx.meta key: the command's own arguments, as typed
Rows = list[tuple[str, str]]  # (key=default, help)
Section = tuple[str, Rows]  # (title, rows)


# ---- commands loaded on first use ------------------------------------------------------------

class LazyGroup(TyperGroup):
    """A command group whose `lazy` commands are imported when run, not when the help lists them.

    `lazy` maps a name to (loader, one-line help); the loader returns a typer app, or a command
    function. With an empty help the listing loads the command to read its own. `commands`
    holds the lazy ones too, loaded on access, so code that walks the tree sees every command."""

    lazy: ClassVar[dict[str, tuple[Callable[[], Any], str]]] = {}
    _listing = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(dict(self.commands), self.lazy)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names only: nothing is loaded

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        short_help = self.lazy.get(cmd_name, (None, ""))[1]
        if self._listing and short_help and not self.commands.is_loaded(cmd_name):
            return TyperCommand(cmd_name, help=short_help)  # a stand-in: only its help is read
        return self.commands.get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


class LazyCommands(MutableMapping):
    """name → click command; a name of `lazy` is imported and converted on first access."""

    def __init__(self, loaded: dict[str, Any], lazy: dict[str, tuple[Callable[[], Any], str]]) -> None:
        self.loaded, self.lazy = loaded, lazy

    def is_loaded(self, name: str) -> bool:
        return name in self.loaded

    def __getitem__(self, name: str) -> Any:
        if name not in self.loaded and name in self.lazy:
            loader, short_help = self.lazy[name]
            self.loaded[name] = _as_command(name, loader(), short_help)
        return self.loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]

    def __iter__(self) -> Iterator[str]:  # the same order, loaded or not
        yield from (name for name in self.loaded if name not in self.lazy)
        yield from self.lazy

    def __len__(self) -> int:
        return len(self.loaded.keys() | self.lazy.keys())


def _as_command(name: str, target: Any, help_text: str) -> Any:
    """A click command (or group) from a typer app or a command function."""
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
        command.help = help_text or command.help
    else:
        single = typer.Typer()
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


# ---- settings help ---------------------------------------------------------------------------

class SettingsHelp(TyperCommand):
    """A command whose help ends with its settings, grouped; `settings(args)` picks the groups
    from the arguments typed (click fills no parameters before the eager --help)."""

    def settings(self, args: list[str]) -> list[Section]:
        raise NotImplementedError

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        ctx.meta[RAW_ARGS] = list(args)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        sections = self.settings(ctx.meta.get(RAW_ARGS, []))
        if self.rich_markup_mode is None:  # plain click help (TYPER_USE_RICH=0)
            for title, rows in sections:
                with formatter.section(title):
                    formatter.write_dl(rows)
        else:
            print_sections(sections)


class TuneHelp(SettingsHelp):
    def settings(self, args: list[str]) -> list[Section]:
        return tune_sections(option_value(args, "--method"))


class CompareHelp(SettingsHelp):
    def settings(self, args: list[str]) -> list[Section]:
        return compare_sections(option_value(args, "--methods"))


def option_value(args: list[str], option: str) -> str | None:
    """The value of `option` among args (`--method lora`, `--method=lora`, or the trailing
    setting `method=lora`); None when absent."""
    key = option.lstrip("-") + "="
    for at, arg in enumerate(args):
        if arg == option and at + 1 < len(args):
            return args[at + 1]
        if arg.startswith(option + "=") or arg.startswith(key):
            return arg.partition("=")[2]
    return None


def setting_rows(cls: type) -> Rows:
    """One (key=default, help) row per field of a config dataclass."""
    rows = []
    for f in dataclasses.fields(cls):
        default: Any = f.default
        if default is dataclasses.MISSING:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else ""
        if isinstance(default, (tuple, list)):
            default = ",".join(map(str, default))
        rows.append((f"{f.name}={default}", str(f.metadata.get("help", ""))))
    return rows


TRAIN_TITLE = "Train settings (key=value after the options, or key: value in --config YAML)"


def method_sections(names: list[str]) -> list[Section]:
    return [(f"{name} settings", setting_rows(config_class(name)) or [("", "no settings of its own")])
            for name in names]


def tune_sections(method: str | None) -> list[Section]:
    """The shared train settings, then the named method's own (or where to find them)."""
    sections = [(TRAIN_TITLE, setting_rows(TrainConfig))]
    names = method_names()
    if method in names:
        return sections + method_sections([method])
    unknown = f"unknown method {method!r}. " if method else ""
    return sections + [("Method settings", [("", f"{unknown}Each method has its own: see `lmadapt tune --method "
                                                 f"NAME --help`, NAME one of {', '.join(names)}")])]


def compare_sections(methods: str | None) -> list[Section]:
    """Compare settings, train settings, then one group per method (those of --methods when
    given, else all)."""
    names = method_names()
    asked = [item.partition("@")[0].strip() for item in (methods or "").split(",") if item.strip()]
    picked = names if not asked or "all" in asked else [n for n in dict.fromkeys(asked) if n in names]
    return [("Compare settings (key=value; selection on a validation set, search, seeds, budgets)",
             setting_rows(CompareConfig)), (TRAIN_TITLE, setting_rows(TrainConfig)), *method_sections(picked)]


def print_sections(sections: list[Section]) -> None:
    """Each section as a panel like typer's own (key=default in the first column)."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    for title, rows in sections:
        if all(not key for key, _ in rows):  # a note, not settings
            console.print(Panel(Text("\n".join(text for _, text in rows)), title=title, title_align="left",
                                border_style="dim"))
            continue
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, help_text in rows:
            table.add_row(Text(key), Text(help_text))  # Text: brackets in defaults are no markup
        console.print(Panel(table, title=title, title_align="left", border_style="dim"))
