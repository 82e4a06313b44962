"""The package's layers: TensorFlow stays behind ``ottotrain.engine``, light commands stay light,
and the subpackages import each other without cycles.

The checks read the package next to these tests (``ROOT / "ottotrain"``), and the
subprocesses import that same copy (``PYTHONPATH=ROOT``).
"""

import ast
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

PACKAGE = ROOT / "ottotrain"
# Libraries that ``ottotrain --help`` must never wait for.
# What "ottotrain --help" must not import: each costs tens of milliseconds or more at start-up
# (tqdm reads its package metadata; MLflow is imported only when tracking is on).
HEAVY = ("tensorflow", "keras", "pandas", "pyarrow", "sklearn", "matplotlib", "scipy", "tqdm", "mlflow")
# The nodes of the layer graph: each subpackage is one node, each top-level module another.
SUBPACKAGES = ("config", "data", "features", "engine", "runs", "workflows")


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("OTTOTRAIN_DEBUG", None)
    return env


def _python(code, timeout=120):
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=timeout
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_no_module_outside_the_engine_imports_tensorflow_or_keras():
    """Import the CLI, then every module but the engine's submodules: no TensorFlow, no Keras."""
    code = """
import importlib, json, pkgutil, sys
import ottotrain, ottotrain.cli
heavy = ("tensorflow", "keras")
first = {h: "ottotrain.cli" for h in heavy if h in sys.modules}
imported = []
for m in pkgutil.walk_packages(ottotrain.__path__, "ottotrain."):
    if m.name.startswith("ottotrain.engine."):
        continue
    importlib.import_module(m.name)
    imported.append(m.name)
    for h in heavy:
        if h in sys.modules and h not in first:
            first[h] = m.name
print(json.dumps({"imported": imported, "first": first, "file": ottotrain.__file__}))
"""
    res = json.loads(_python(code).splitlines()[-1])
    assert res["file"] == str(PACKAGE / "__init__.py")  # the package next to these tests
    # The walk did reach every layer (the engine package itself is allowed, and imported).
    for name in (
        "ottotrain.engine",
        "ottotrain.workflows.cv",
        "ottotrain.runs.lifecycle",
        "ottotrain.features.preprocess",
        "ottotrain.config.schema",
        "ottotrain.data.csv",
    ):
        assert name in res["imported"], name
    assert res["first"] == {}, f"imported TensorFlow/Keras first: {res['first']}"


def _imported_modules(importtime_stderr):
    """Module names from ``python -X importtime`` (one line per import, nested ones indented)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                names.add(name)
    return names


def test_help_imports_no_heavy_library():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ottotrain", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "fit" in out.stdout and "predict" in out.stdout
    names = _imported_modules(out.stderr)
    assert {"click", "ottotrain.cli"} <= names  # the listing is complete enough to trust
    loaded = sorted({n.split(".")[0] for n in names} & set(HEAVY))
    assert loaded == [], f"'ottotrain --help' imports {loaded}"


# --------------------------------------------------------------------------------------
# Static checks over the source (AST): who imports what


def _module_name(path, package):
    rel = path.relative_to(package.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(tree, module, is_package, top_level_only=False):
    """(line, imported module, names) for every import in ``tree``; relative ones resolved.

    ``top_level_only``: only imports that run when the module is imported (not inside a
    function body, which runs later, if ever).
    """

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and top_level_only:
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield child.lineno, a.name, ()
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join([*pkg, *([base] if base else [])])
                yield child.lineno, base, tuple(a.name for a in child.names)
            yield from walk(child)

    yield from walk(tree)


def _module_imports(package, top_level_only=False):
    """(file, module name, its imports) for every module of ``package`` (a folder)."""
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        yield path, module, list(_imports(tree, module, path.name == "__init__.py", top_level_only))


def boundary_violations(package):
    """Imports outside <package>/engine/ of TensorFlow, Keras or an engine submodule.

    The one way in is ``from ottotrain import engine`` (lazy: a submodule is imported on
    first use). Imports inside functions count too: they would still cross the boundary.
    """
    bad = []
    for path, _, imports in _module_imports(package):
        if (package / "engine") in path.parents:
            continue
        for line, target, names in imports:
            where = f"{path.relative_to(package.parent)}:{line}"
            if target.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
                bad.append(f"{where}: imports {target}")
            elif target.startswith("ottotrain.engine."):
                bad.append(f"{where}: imports {target}")
            elif target == "ottotrain.engine":
                bad.append(
                    f"{where}: "
                    + (
                        f"from ottotrain.engine import {', '.join(names)}"
                        if names
                        else "import ottotrain.engine"
                    )
                    + " (the way in is: from ottotrain import engine)"
                )
    return bad


def test_only_the_engine_imports_tensorflow_keras_or_engine_submodules():
    assert boundary_violations(PACKAGE) == []


def test_the_boundary_scan_finds_what_it_must(tmp_path):
    """The scan itself: each way round the boundary is reported, the allowed import is not."""
    pkg = tmp_path / "ottotrain"
    samples = {
        "ok.py": "from ottotrain import engine, runs\n",
        "a.py": "import tensorflow as tf\n",
        "b.py": "def f():\n    from keras import layers\n",
        "c.py": "from ottotrain.engine.build import build_model\n",
        "d.py": "from ottotrain.engine import member\n",
        "e.py": "import ottotrain.engine.loop\n",
        "sub/__init__.py": "",
        "sub/f.py": "from ..engine.env import tf\n",
        "engine/__init__.py": "",
        "engine/g.py": "import tensorflow\n",  # the engine may
    }
    for name, text in samples.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = boundary_violations(pkg)
    assert sorted(line.split(":")[0] for line in found) == [
        "ottotrain/a.py",
        "ottotrain/b.py",
        "ottotrain/c.py",
        "ottotrain/d.py",
        "ottotrain/e.py",
        "ottotrain/sub/f.py",
    ], found


def _layer(module):
    """The graph node of a module: its subpackage, else the top-level module itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ottotrain"  # "ottotrain": the package's __init__


def layer_graph(package):
    """{layer: {layer it imports at import time: the first 'file:line' doing so}}."""
    graph = {}
    for path, module, imports in _module_imports(package, top_level_only=True):
        here = _layer(module)
        edges = graph.setdefault(here, {})
        for line, target, names in imports:
            if target.split(".")[0] != "ottotrain":
                continue
            if target == "ottotrain":  # from ottotrain import engine, runs, __version__
                targets = [
                    n if (package / f"{n}.py").is_file() or (package / n).is_dir() else "ottotrain"
                    for n in names
                ]
            else:
                targets = [_layer(target)]
            for t in targets:
                if t != here:
                    edges.setdefault(t, f"{path.relative_to(package.parent)}:{line}")
    return graph


def find_cycle(graph):
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles_between_the_layers():
    graph = layer_graph(PACKAGE)
    assert set(SUBPACKAGES) <= set(graph) and {"cli", "errors", "io"} <= set(graph)
    assert "engine" in graph["workflows"] and "config" in graph["runs"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, (
        "import cycle: "
        + " -> ".join(f"{a} ({graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
        + f" -> {cycle[-1]}"
    )


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {}}) is None
    assert find_cycle({"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y": ""}, "y": {"y2": ""}, "y2": {"y": ""}}) == ["y", "y2", "y"]
