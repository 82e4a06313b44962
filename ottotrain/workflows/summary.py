"""``ottotrain summary``: the Keras model summary of a config or a run, without training."""

from __future__ import annotations

from pathlib import Path

from ottotrain import engine, runs
from ottotrain.config import load_config, member_config
from ottotrain.config.stack_section import StackConfig
from ottotrain.data import load_train, train_val_split
from ottotrain.errors import DataError, RunError
from ottotrain.features import Preprocessor
from ottotrain.features.preprocess import KnnState
from ottotrain.io import read_json
from ottotrain.workflows.common import first_layer_bins
from ottotrain.workflows.predictor import is_cv_run, open_run
from ottotrain.workflows.stack.leaderboard import format_leaderboard
from ottotrain.workflows.stack.predict import is_stack_run


def data_sizes(cfg):
    """(model input width, number of classes, the ``InputBlock`` of embeddings or None, the
    inputs in words).

    The preprocessing is fitted on the training part of fit's split, as fit fits it: the
    "was missing" columns, the categories' encodings and the bins depend on those rows. KNN
    features are counted, not computed (one per class and k).
    """
    train = load_train(cfg.data)
    data_cfg = cfg.data.model_copy(update={"knn": None})
    try:
        tr, _ = train_val_split(train.y, cfg.data.validation_split, cfg.seed, cfg.data.stratify)
        x = train.x[tr]
        pre = Preprocessor.fit(x, data_cfg, train.features, train.classes, train.y[tr], train.types)
    except DataError as e:
        raise DataError(f"{train.path}: {e}") from None
    if bins := first_layer_bins(cfg):  # a PiecewiseLinearEmbedding's bins, as fit finds them
        pre.fit_bins(pre.transform(x), bins)
    if cfg.data.knn:  # counted only: no reference rows
        pre.state.knn = KnnState(list(cfg.data.knn.k), "")
    return pre.n_outputs, len(train.classes), pre.input_block(), pre.describe_inputs()


def _run_summary(run_dir: Path) -> str:
    if is_stack_run(run_dir):
        return format_leaderboard(run_dir)
    if not is_cv_run(run_dir):
        return engine.build.summary_text(open_run(run_dir).members[0].model)
    runs.check_safe(run_dir)
    out = []
    for m in read_json(run_dir / runs.CV_FILE)["members"]:
        if m["fold"] == 1:  # every fold has the same architectures
            model = engine.inference.load_model(run_dir / runs.MODELS / f"{m['name']}.keras")
            variant = "" if m.get("variant") is None else f" (cv.variants[{m['variant']}])"
            out.append(f"{m['name']}{variant}\n{engine.build.summary_text(model)}")
    return "\n\n".join(out)


def summarize(target, overrides=()) -> str:
    """Return the model summary text for a config file or a run directory.

    A config with ``cv.variants`` gets one summary per variant; a cv run one per
    seed (the models of fold 1); a stack config its members and levels, a stack run its
    leaderboard.
    """
    target = Path(target)
    if target.is_dir():
        return _run_summary(target)
    if not target.exists() and target.suffix not in (".yaml", ".yml"):
        raise RunError(
            f"{target}: no such run directory or config file; give a CONFIG.yaml "
            "or a RUN_DIR made by 'ottotrain fit' or 'ottotrain cv'"
        )
    cfg = load_config(target, overrides)
    if cfg.stack is not None:
        return stack_plan(cfg.stack)
    variants = cfg.cv.variants
    out = []
    for k in range(max(1, len(variants))):
        mcfg = member_config(cfg, k)
        n_features, n_classes, inputs, described = data_sizes(mcfg)
        model = engine.build.build_model(mcfg, n_features, n_classes, compile=False, inputs=inputs)
        head = f"cv.variants[{k}] {variants[k]}: " if variants else ""
        out.append(f"{head}{described}; {n_classes} classes\n" + engine.build.summary_text(model))
    return "\n\n".join(out)


def stack_plan(stack: StackConfig) -> str:
    """A stack config in words: its members, level-2 learners and top (nothing is trained)."""
    members = [f"  {m.name}: {m.kind} {m.config or m.run or ''}".rstrip() for m in stack.members]
    level2 = [
        f"  {s.name}: {s.kind}" + (f", features {', '.join(s.features)}" if s.features else "")
        for s in stack.level2
    ]
    top = stack.top
    offered = "level 2 and level 1" if top.level1 else "level 2"
    rounds = f", {top.rounds} rounds" if top.method == "greedy" else ""
    return "\n".join(
        [f"{len(stack.members)} level-1 member(s):", *members]
        + [f"{len(stack.level2)} level-2 learner(s):", *level2]
        + [f"top: {top.method}{rounds} over {offered}; a finished stack run's summary is its leaderboard"]
    )
