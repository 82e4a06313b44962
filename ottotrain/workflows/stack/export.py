"""A finished stack as one graph for ``export`` and ``serve`` (``engine.export_stack``).

Only what the top uses goes into the graph: the models it weights (weight > 0), and the
level-1 members those level-2 learners read. Each must be a TensorFlow graph: a Keras member
(a cv run, exported as ``export`` exports a cv run), a logistic regression or a Keras net at
level 2. A LightGBM or KNN-vote member, or a LightGBM level-2 learner, that the top uses is
refused in one line naming it, before anything is loaded; one the top does not use is left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ottotrain import __version__, engine
from ottotrain.errors import RunError
from ottotrain.io import read_json
from ottotrain.serving.schema import CATEGORICAL, SCHEMA_FORMAT, MemberInfo, ModelSchema
from ottotrain.workflows.run_graph import columns_for, graph_inputs, na_text, open_graph
from ottotrain.workflows.stack.leaderboard import read_top
from ottotrain.workflows.stack.level2 import LEVEL2_FILE, Level2Model, load_level2
from ottotrain.workflows.stack.outputs import STACK_KIND
from ottotrain.workflows.stack.predict import (
    LEVEL2_DIR,
    is_stack_run,
    member_folder,
    read_inputs,
    stack_info,
)

KERAS_KINDS = ("config", "run")  # level-1 members that are cv runs of Keras nets
GRAPH_LEVEL2 = ("logistic", "net")
_NOT_GRAPH = {"lightgbm": "a LightGBM model", "knn": "a nearest-neighbour vote model"}
_TAIL = {
    "export": "export writes a stack whose used members are all Keras nets",
    "serve": "serve serves a stack whose used members are all Keras nets",
}


@dataclass
class GraphPlan:
    """What of a stack goes into its graph: the top's weights > 0, their level-2 learners
    (level2.json, by name) and the level-1 members they need (stack.json's entries, in order)."""

    run_dir: Path
    weights: dict[str, float]
    level2: dict[str, dict]
    members: list[dict]


def _refusal(run_dir: Path, name: str, what: str, use: str, command: str) -> RunError:
    return RunError(
        f"{run_dir}: {name} is {what}, not a TensorFlow graph, and the top uses it ({use}); "
        f"{_TAIL[command]}; 'ottotrain predict {run_dir} TEST' predicts with the stack"
    )


def _use(name: str, weights: dict[str, float], level2: dict[str, dict]) -> str:
    """How the top uses a model: its weight, or the level-2 learners that read it."""
    readers = [n for n, info in level2.items() if name in info["inputs"]]
    if name in weights:
        return f"weight {weights[name]:.3g}"
    return "read by level 2 " + ", ".join(f"'{n}'" for n in readers)


def graph_plan(run_dir, command: str = "export") -> GraphPlan:
    """The models of a finished stack that its graph needs, each checked to be a graph.

    Raises:
        RunError: not a finished stack run, damaged, or a model the top uses is no TensorFlow
            graph (one line naming it; ``command`` says which command refuses).
    """
    run_dir = Path(run_dir)
    info = stack_info(run_dir)
    weights = {n: float(w) for n, w in read_top(run_dir)["weights"].items() if w > 0}
    level2 = {}
    for name in info.get("level2", []):
        if name in weights:
            path = run_dir / LEVEL2_DIR / name / LEVEL2_FILE
            if not path.exists():
                raise RunError(f"{path}: missing; the stack's level 2 did not finish")
            level2[name] = read_json(path)
    for name, l2 in level2.items():
        if l2["kind"] not in GRAPH_LEVEL2:
            what = _NOT_GRAPH.get(l2["kind"], f"a level-2 learner of kind {l2['kind']!r}")
            raise _refusal(run_dir, f"level-2 learner '{name}'", what, _use(name, weights, level2), command)
    needed = set(weights) | {n for l2 in level2.values() for n in l2["inputs"]}
    members = [e for e in info["members"] if e["name"] in needed]
    for e in members:
        if e.get("kind") not in KERAS_KINDS:
            what = _NOT_GRAPH.get(e.get("kind"), f"a member of kind {e.get('kind')!r}")
            raise _refusal(run_dir, f"member '{e['name']}'", what, _use(e["name"], weights, level2), command)
    unknown = needed - {e["name"] for e in members} - set(level2)
    if unknown:
        raise RunError(f"{run_dir}: the top uses {', '.join(sorted(unknown))}, which the run does not hold")
    return GraphPlan(run_dir, weights, level2, members)


def _check_columns(run_dir: Path, name: str, schema: ModelSchema, kinds: dict[str, str], classes) -> None:
    """A member's inputs and classes must be the stack's (its graph reads the stack's inputs)."""
    for c in schema.columns:
        if kinds.get(c.name) != c.kind:
            theirs = f"a {kinds[c.name]} column" if c.name in kinds else "not an input"
            raise RunError(
                f"{run_dir}: member '{name}' reads column '{c.name}' as {c.kind}, in the stack it is "
                f"{theirs}; the member cannot be joined into the stack's graph"
            )
    if list(schema.classes) != list(classes):
        raise RunError(f"{run_dir}: member '{name}' has classes {schema.classes}, the stack {list(classes)}")


def _level2_graph(model: Level2Model, level1: list[str], numeric: list[str], run_dir: Path):
    """A loaded level-2 learner as the engine's ``Level2Graph``."""
    for f in model.features:
        if f not in numeric:
            raise RunError(
                f"{run_dir}: level-2 learner '{model.name}' joins column '{f}', which is not a "
                "numeric input; a graph joins numeric columns only"
            )
    fold_models = model.models if model.kind == "net" else [(m.coef, m.intercept) for m in model.models]
    return engine.export_stack.Level2Graph(
        model.name,
        model.kind,
        [level1.index(n) for n in model.inputs],
        [numeric.index(f) for f in model.features],
        [np.asarray(s.mean, np.float64) for s in model.scalers],
        [np.asarray(s.scale, np.float64) for s in model.scalers],
        fold_models,
    )


def stack_graph(run_dir, no_knn_members: bool = False, command: str = "export"):
    """(the stack's ``engine.export_stack.StackModule``, its ``ModelSchema``), built in memory."""
    run_dir = Path(run_dir)
    if no_knn_members:
        raise RunError(
            f"{run_dir}: --no-knn-members: a stack's members are exported whole, as the stack "
            "predicts with them; leave the option out"
        )
    plan = graph_plan(run_dir, command)
    state = read_inputs(run_dir).state
    columns, ignored = columns_for(state)
    kinds = {c.name: c.kind for c in columns}
    level1, infos = [], []
    for e in plan.members:
        module, schema = open_graph(member_folder(run_dir, e))
        _check_columns(run_dir, e["name"], schema, kinds, state.classes)
        level1.append(module)
        infos.append(
            MemberInfo(e["name"], plan.weights.get(e["name"], 0.0), any(m.knn for m in schema.members))
        )
    names = [e["name"] for e in plan.members]
    numeric = [c.name for c in columns if c.kind != CATEGORICAL]
    level2 = [
        _level2_graph(load_level2(run_dir / LEVEL2_DIR / n), names, numeric, run_dir) for n in plan.level2
    ]
    infos += [MemberInfo(n, plan.weights[n], False) for n in plan.level2]
    top = [
        engine.export_stack.TopWeight(1, names.index(n), w)
        if n in names
        else engine.export_stack.TopWeight(2, list(plan.level2).index(n), w)
        for n, w in plan.weights.items()
    ]
    schema = ModelSchema(
        SCHEMA_FORMAT, str(run_dir), STACK_KIND, list(state.classes), columns, ignored, infos, __version__
    )
    module = engine.export_stack.build(
        level1, level2, top, graph_inputs(schema), state.classes, na_text(state)
    )
    return module, schema


def open_any_graph(run_dir, no_knn_members: bool = False, command: str = "export"):
    """(the graph, its schema) of a finished run of any kind: fit, cv or stack."""
    if is_stack_run(run_dir):
        return stack_graph(run_dir, no_knn_members, command)
    return open_graph(run_dir, no_knn_members)
