"""The method contract (issue 12): a method declares what it can do, run.tune checks it once,
nothing outside the method keys on its name, and the package's layers never point back up."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmadapt.data.task import KINDS, Task
from lmadapt.methods import REGISTRY
from lmadapt.methods.base import MODEL_KINDS, Adapted, RunContext, check_declaration
from lmadapt.train.loop import TrainResult

SRC = Path(__file__).resolve().parents[1] / "src"


# ---- a toy method: one class, declared attributes, one registry line -------------------------

@dataclass
class ToyConfig:
    """The toy method's one setting."""

    toy_answer: str = field(default="", metadata={"help": "always predict this (empty: the majority label)"})


@dataclass
class ToyAdapted(Adapted):
    answer: str = ""
    trainable_params: int = 0
    total_params: int = 1

    def predict(self, texts: list[str], batch_size: int = 16) -> list[str]:
        return [self.answer] * len(texts)

    def save(self, artifact_dir: Path) -> None:
        artifact_dir.mkdir(parents=True, exist_ok=True)
        (artifact_dir / "toy.json").write_text(json.dumps({"answer": self.answer}))


class Toy:
    name = "toy"
    config_class = ToyConfig
    summary = "predicts one label for everything"
    model_kinds = ("encoder", "causal", "seq2seq")
    task_kinds = ("classification",)
    trains = False

    def fit(self, train: Task, eval_task: Task | None, cfg: ToyConfig, ctx: RunContext
            ) -> tuple[ToyAdapted, TrainResult | None]:
        targets = train.targets()
        return ToyAdapted(answer=cfg.toy_answer or max(set(targets), key=targets.count)), None

    def load(self, artifact_dir: Path, task: Task, cfg: ToyConfig, ctx: RunContext) -> ToyAdapted:
        return ToyAdapted(answer=json.loads((artifact_dir / "toy.json").read_text())["answer"])


@pytest.fixture
def toy_registered(monkeypatch):
    check_declaration(Toy)
    monkeypatch.setitem(REGISTRY, "toy", Toy)  # the one registry line


def test_a_new_method_runs_through_tune_compare_and_eval(toy_registered, run_cli, tiny_bert, toy_data, tmp_path):
    run = tmp_path / "toy"
    code, err = run_cli(["tune", "--method", "toy", "--model", tiny_bert, "--train", toy_data[0],
                         "--eval", toy_data[1], "--out", run, "toy_answer=positive"])
    assert code == 0, err
    record = json.loads((run / "record.json").read_text())
    assert record["method"] == "toy" and record["score"] == pytest.approx(0.5)
    code, err = run_cli(["eval", run, "--data", toy_data[1], "--json"])
    assert code == 0, err
    code, err = run_cli(["compare", "--methods", "toy,features", "--model", tiny_bert, "--train", toy_data[0],
                         "--eval", toy_data[1], "--out", tmp_path / "cmp", "toy_answer=negative", "cv_folds=2"])
    assert code == 0, err
    results = [json.loads(line) for line in (tmp_path / "cmp" / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in results] == ["toy", "features"]


def test_declared_capabilities_are_checked_once_in_tune(toy_registered, run_cli, tiny_llama, tmp_path):
    gen = tmp_path / "gen.jsonl"
    gen.write_text("".join(json.dumps({"text": f"q {i}", "output": "a"}) + "\n" for i in range(10)))
    code, err = run_cli(["tune", "--method", "toy", "--model", tiny_llama, "--train", gen, "--out", tmp_path / "o"])
    assert code == 2 and err.strip() == ("error: method 'toy' needs a classification task, not a generation task "
                                         "(see `lmadapt methods`)")
    assert not (tmp_path / "o").exists()


def test_a_wrong_declaration_fails_at_registration():
    class NoKinds:
        name, config_class, summary, trains = "x", ToyConfig, "x", False
        model_kinds = ("encoder",)

        def fit(self): ...

        def load(self): ...

    with pytest.raises(TypeError, match="does not declare task_kinds"):
        check_declaration(NoKinds)
    NoKinds.task_kinds = ("images",)
    with pytest.raises(TypeError, match="task_kinds"):
        check_declaration(NoKinds)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_registered_method_declares_its_capabilities(name):
    cls = REGISTRY[name]
    assert cls.name == name
    assert cls.model_kinds and set(cls.model_kinds) <= set(MODEL_KINDS)
    assert cls.task_kinds and set(cls.task_kinds) <= set(KINDS)
    assert isinstance(cls.trains, bool) and isinstance(cls.mergeable, bool)
    assert isinstance(cls.demo_note, str) and isinstance(cls.merge_note, str)


# ---- layers -----------------------------------------------------------------------------------

def _import_graph() -> dict[str, set[str]]:
    """lmadapt module → lmadapt modules it imports (module-level and inside functions)."""
    modules = {}
    for path in (SRC / "lmadapt").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("lmadapt") and (found := resolve(target)) and found != module:
                    graph[module].add(found)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                out.append(sorted([v, *component]))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_and_no_arrow_back_up():
    graph = _import_graph()
    assert _cycles(graph) == []
    upper = ("lmadapt.run", "lmadapt.cli", "lmadapt.compare", "lmadapt.demo", "lmadapt.merge")
    back_up = sorted((m, t) for m, ts in graph.items() for t in ts
                     if m.startswith(("lmadapt.methods", "lmadapt.data", "lmadapt.models", "lmadapt.train",
                                      "lmadapt.decoding", "lmadapt.eval")) and t in upper)
    assert back_up == []
    data_to_methods = sorted((m, t) for m, ts in graph.items() for t in ts
                             if m.startswith("lmadapt.data") and t.startswith("lmadapt.methods"))
    assert data_to_methods == []


def test_nothing_outside_a_method_folder_keys_on_a_method_name():
    """Outside methods/, no comparison with a method's name and no table (tuple, list, set, dict
    keys) of method names: what a method can do is declared on its class."""
    names = set(REGISTRY)

    def named(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in names

    offenders = []
    for path in (SRC / "lmadapt").rglob("*.py"):
        rel = path.relative_to(SRC / "lmadapt")
        if rel.parts[0] == "methods":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            equality = isinstance(node, ast.Compare) and all(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)
            if equality and any(named(n) for n in [node.left, *node.comparators]):  # `"prompt" in row`: a field
                offenders.append(f"{rel}:{node.lineno} compares with a method name")
            elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and sum(map(named, elements)) >= 2:
                offenders.append(f"{rel}:{node.lineno} holds a table of method names")
    assert offenders == []


def test_a_runs_task_section_keeps_every_task_setting():
    """What Task.meta() writes is exactly what the manifest reader (TaskMeta) accepts, and a
    skeleton rebuilt from it has the same settings."""
    import dataclasses

    from lmadapt.data.task import Example
    from lmadapt.manifest import TaskMeta

    task = Task("t", "classification", [Example("a", "x"), Example("b", "y")])
    meta = task.meta()
    assert set(meta) == {f.name for f in dataclasses.fields(TaskMeta)}
    rebuilt = Task.skeleton(**meta)
    assert rebuilt.meta() == meta and rebuilt.examples == []
