"""The package's shape: no import cycle, counting imports made inside functions."""

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its body (functions too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import engines` names a module
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else target)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "pipeline.data.decode" in graph["pipeline.features.extract"]  # inside _compute
    assert "pipeline.features.engines" in graph["pipeline.features.extract"]  # from . import engines
    assert "pipeline.backbones" in graph["pipeline.features.spec"]  # from .. import backbones


def test_no_import_cycle_in_the_package():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


# The tree from the bottom up (README, "How the code is laid out"): a module
# imports only modules of its own layer or of layers before it. The registries'
# tables (backbones, classifiers, augmentations) sit under the settings, which check
# names against them; an entry's constructor, in the registry's own package, is
# imported when it is built.
REGISTRIES = ("pipeline.backbones.registry", "pipeline.heads.registry", "pipeline.heads.vocabulary",
              "pipeline.finetune.augment", "pipeline.loop.strategies")
LAYERS = ("pipeline.errors", "pipeline._files", "pipeline._blas", "pipeline.words", "pipeline.console",
          *REGISTRIES,
          "pipeline.config", "pipeline.data", "pipeline.backbones",
          "pipeline.features", "pipeline.heads", "pipeline.runs", "pipeline.deploy.compose", "pipeline.compare",
          "pipeline.finetune", "pipeline.predict", "pipeline.deploy", "pipeline.loop", "pipeline.workflow",
          "pipeline.cli", "pipeline")


def _layer(module: str) -> int:
    return next(i for i, top in enumerate(LAYERS) if module == top or module.startswith(top + "."))


def test_imports_point_down_the_tree():
    upward = [(a, b) for a, edges in import_graph().items() for b in edges if _layer(b) > _layer(a)
              and not (a in REGISTRIES and b.rsplit(".", 1)[0] == a.rsplit(".", 1)[0])]
    assert upward == []


def test_leaf_helpers_import_nothing_of_the_package():
    graph = import_graph()
    assert graph["pipeline._files"] == set() and graph["pipeline.errors"] == set()
    assert graph["pipeline.words"] == set() and graph["pipeline.console"] == set()
    assert graph["pipeline._blas"] == set()


def test_the_package_s_functions_stay_functions_after_their_modules_are_imported():
    import importlib

    import pipeline

    for name in ("compare", "finetune", "predict"):
        importlib.import_module(f"pipeline.{name}")  # records the submodule under the same name
        assert callable(getattr(pipeline, name)) and getattr(pipeline, name).__name__ == name
    assert set(pipeline.__all__) >= {"compare", "extract_features", "ExtractConfig", "CLASSIFIERS"}


def _literals(path: Path) -> set[str]:
    """The module's string constants that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docs}


def test_each_run_and_cache_file_name_is_spelt_in_one_module():
    """Every other module reaches a run's or the cache's files through their owner's names."""
    from pipeline.features import hashing, manage, store
    from pipeline.runs import export_folder, folder

    owned = {name: "pipeline/runs/folder.py" for name in (
        folder.MANIFEST, folder.LEADERBOARD, folder.LEADERBOARD_MD, folder.LEADERBOARD_CSV, folder.PER_CLASS,
        folder.SEARCH, folder.INSIGHTS, folder.REPORT, folder.CONFIG, folder.RESOLVED, folder.FINETUNED)}
    owned.update({store.SPEC_FILE: "pipeline/features/store.py", store.SEGMENTS: "pipeline/features/store.py",
                  manage.SET_ASIDE: "pipeline/features/manage.py",
                  hashing.STAT_CACHE: "pipeline/features/hashing.py",
                  export_folder.LISTING: "pipeline/runs/export_folder.py"})
    root = Path(__file__).resolve().parents[1]
    spelt: dict[str, set[str]] = {}
    for path in sorted((root / "pipeline").rglob("*.py")):
        for text in _literals(path):
            name = "plots/" if text.startswith("plots/") else text
            spelt.setdefault(name, set()).add(path.relative_to(root).as_posix())
    # Files of other owners that share a name: the report's Jinja template, a KerasHub preset's config.
    spelt[folder.REPORT].discard("pipeline/runs/report.py")
    spelt[folder.CONFIG].discard("pipeline/backbones/hub.py")
    spelt[folder.CONFIG].discard("pipeline/heads/numpy_head.py")  # inside a .keras file
    assert spelt.pop("plots/") == {"pipeline/runs/folder.py"}
    assert {name: spelt.get(name) for name in owned} == {name: {module} for name, module in owned.items()}


def test_a_wheel_holds_every_subpackage_and_the_report_templates(tmp_path):
    """A user installs a wheel, not the checkout: a subpackage missing from it fails on import."""
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(PACKAGE.parent)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in PACKAGE.rglob("__init__.py"):
        assert init.relative_to(PACKAGE.parent).as_posix() in names
    for template in (PACKAGE / "runs" / "templates").iterdir():
        assert template.relative_to(PACKAGE.parent).as_posix() in names


def test_only_runs_reads_a_run_s_manifest():
    """A run folder has one reader, pipeline.runs.run.Run: no other module opens its manifest."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "runs" and path.parent.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf-8")
        for pattern in (r"manifest\[", r"manifest\.get\(", r"read_manifest", r"\bMANIFEST\b", "manifest.json"):
            found += [f"{path.relative_to(PACKAGE.parent)}: {pattern}" for _ in re.findall(pattern, text)]
    assert found == []


def test_modules_and_functions_stay_small():
    """No module of the package over 400 lines, no function over 60: each says what it owns."""
    long_modules = [f"{p.relative_to(PACKAGE.parent)}: {n}" for p in sorted(PACKAGE.rglob("*.py"))
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400]
    long_functions = [f"{p.relative_to(PACKAGE.parent)}:{node.name}: {node.end_lineno - node.lineno + 1}"
                      for p in sorted(PACKAGE.rglob("*.py"))
                      for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > 60]
    assert long_modules == [] and long_functions == []
