"""``ottotrain check``: validate a config and its data the way ``fit`` would, train nothing.

Everything ``fit`` checks before it creates a run directory is run here, through
the same functions (``fit.prepare``, ``common.class_weights``, ``engine.build.check_model``),
so a config that passes ``check`` fails ``fit`` only for reasons that need training
(a diverging loss, a full disk).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass

import numpy as np

from ottotrain import engine
from ottotrain.config import Config
from ottotrain.config.train_section import EarlyStoppingConfig, LrSchedule
from ottotrain.data import data_paths
from ottotrain.data.tables import ColumnInfo, column_info
from ottotrain.log import Log
from ottotrain.workflows.common import class_weights, load_data, refuse_stack, require_tensorboard
from ottotrain.workflows.fit import prepare


@dataclass
class TrainSummary:
    path: str
    rows: int
    features: int
    model_inputs: int  # columns of the model's input block (TF-IDF and KNN features added)
    inputs: str  # that block in words


@dataclass
class ClassCount:
    name: str
    rows: int
    share: float
    validation_rows: int


@dataclass
class SplitSummary:
    train_rows: int
    validation_rows: int
    validation_split: float
    stratify: bool
    seed: int


@dataclass
class TestSummary:
    path: str
    rows: int


@dataclass
class ModelSummary:
    parameters: int
    trainable_parameters: int
    summary: str


@dataclass
class Preprocessing:
    transform: str
    tfidf: bool
    knn: list[int] | None
    scaling: str


@dataclass
class FitPlan:
    epochs: int
    batch_size: int
    steps_per_epoch: int
    optimizer: dict  # {name: ..., the arguments given to Keras}
    loss: str
    early_stopping: EarlyStoppingConfig | None
    checkpoint_monitor: str
    lr_schedule: LrSchedule | None
    class_weight: str | dict | None
    preprocessing: Preprocessing


@dataclass
class CheckResult:
    """What ``check`` found and what ``fit`` would do (``--json`` prints ``to_dict()``)."""

    config: str
    train: TrainSummary
    columns: list[ColumnInfo]
    classes: list[ClassCount]
    imbalance: float  # rows of the largest class / of the smallest
    split: SplitSummary
    test: TestSummary | None
    model: ModelSummary
    fit: FitPlan
    warnings: list[str]  # things that work but are probably not intended

    def to_dict(self) -> dict:
        """Plain data (the config sections in it as mappings), for JSON."""
        return asdict(self, dict_factory=lambda kv: {k: _plain(v) for k, v in kv})


def _plain(value):
    return value.model_dump() if hasattr(value, "model_dump") else value


def check(cfg: Config, log=None) -> CheckResult:
    """Load, check and split the data, build the model; report what ``fit`` would do.

    Args:
        cfg: a validated ``Config`` (see ``load_config``).
        log: progress output (stderr); quiet by default.

    Returns:
        The data, class balance, split, test file, model and training plan, plus
        ``warnings`` (things that work but are probably not intended).

    Raises:
        DataError: a file is missing, unreadable or inconsistent.
        ConfigError: the model or optimizer cannot be built for this data.
    """
    refuse_stack(cfg, "check")
    log = log or Log(0)
    train_path, test_path = data_paths(cfg.data)
    log(f"Reading {train_path}" + (f" and {test_path}" if test_path else ""), 1)
    loaded = load_data(cfg)
    columns = column_info(loaded[0])
    data = prepare(cfg, loaded=loaded)
    train, pre, arrays, x_test = data.train, data.pre, data.arrays, data.x_test
    classes = list(train.classes)
    n = len(train.y)
    counts = np.bincount(train.y, minlength=len(classes))
    val_counts = np.bincount(arrays.y_val, minlength=len(classes))
    class_weights(cfg, arrays.y_train, classes)  # unknown class names in train.class_weight
    require_tensorboard(cfg)

    with log.phase("Building the model"):
        model = engine.build.build_model(
            cfg, pre.n_outputs, len(classes), compile=False, inputs=pre.input_block()
        )
        engine.build.compile_model(model, cfg, len(arrays.y_train))  # optimizer and loss arguments
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    warnings = [*_warnings(cfg, model, arrays, classes, counts, test_path), *data.notes]

    return CheckResult(
        config=cfg.source,
        train=TrainSummary(
            str(train_path), int(n), len(train.features), int(pre.n_outputs), pre.describe_inputs()
        ),
        columns=columns,
        classes=[
            ClassCount(c, int(k), round(float(k) / n, 6), int(v))
            for c, k, v in zip(classes, counts, val_counts)
        ],
        imbalance=round(float(counts.max()) / max(1, int(counts.min())), 3),
        split=SplitSummary(
            int(len(arrays.y_train)),
            int(len(arrays.y_val)),
            cfg.data.validation_split,
            cfg.data.stratify,
            cfg.seed,
        ),
        test=TestSummary(str(test_path), int(len(x_test[0]))) if x_test is not None else None,
        model=ModelSummary(int(model.count_params()), trainable, engine.build.summary_text(model)),
        fit=_fit_plan(cfg, len(arrays.y_train)),
        warnings=warnings,
    )


def _fit_plan(cfg: Config, train_rows: int) -> FitPlan:
    t, d = cfg.train, cfg.data
    return FitPlan(
        epochs=t.epochs,
        batch_size=t.batch_size,
        steps_per_epoch=-(-train_rows // t.batch_size),
        optimizer=t.optimizer.given(),
        loss=t.loss.name,
        early_stopping=t.early_stopping,
        checkpoint_monitor=t.checkpoint.monitor,
        lr_schedule=t.lr_schedule,
        class_weight=t.class_weight,
        preprocessing=Preprocessing(d.transform, d.tfidf, d.knn.k if d.knn else None, d.scaling),
    )


def _warnings(cfg, model, arrays, classes, counts, test_path) -> list[str]:
    out = []
    val_counts = np.bincount(arrays.y_val, minlength=len(classes))
    # The loss expects probabilities; a model without a final softmax trains on nonsense.
    p = np.asarray(model(arrays.x_val[:8], training=False), dtype=np.float64)
    if (p < -1e-6).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        out.append(
            f"{cfg.source}: model.layers: the model's outputs are not probabilities "
            f"(a row sums to {p.sum(axis=1)[0]:.3g}); end the layers with {{Activation: softmax}}"
        )
    missing = [c for c, v in zip(classes, val_counts) if v == 0]
    if missing:
        out.append(
            f"class(es) {', '.join(missing[:10])} have no validation rows; raise "
            "data.validation_split or use more data"
        )
    if cfg.data.stratify and counts.min() < 2:
        out.append(
            "a class has a single row, so the validation split cannot be stratified "
            "and falls back to a random split"
        )
    if test_path is None:
        out.append("no data.test: fit will train and score but write no submission.csv")
    return out


def fit_command(config, overrides=()) -> str:
    """The ``ottotrain fit`` command line for CONFIG with its ``--set`` options, shell-quoted."""
    args = [config, *(a for o in overrides for a in ("--set", o))]
    return " ".join(["ottotrain", "fit", *(shlex.quote(str(a)) for a in args)])


def _model_inputs(tr: TrainSummary) -> str:
    """' (N inputs: ...)' when the model's inputs are not just the feature columns."""
    return "" if tr.model_inputs == tr.features else f" ({tr.inputs})"


def format_check(r: CheckResult, overrides=()) -> str:
    """The human-readable report of ``check``: one block per topic, fixed-width columns.

    ``overrides`` (the ``--set`` options check ran with) go into the suggested fit command.
    """
    tr, sp = r.train, r.split
    lines = [
        f"Config      {r.config}: valid",
        f"Train data  {tr.path}: {tr.rows:,} rows, {tr.features} features, "
        f"{len(r.classes)} classes" + _model_inputs(tr),
        f"Split       {sp.train_rows:,} train / {sp.validation_rows:,} validation rows "
        f"({sp.validation_split:.0%}{', stratified' if sp.stratify else ''}, seed {sp.seed})",
        f"Test data   {r.test.path}: {r.test.rows:,} rows, same feature columns"
        if r.test
        else "Test data   none (no submission)",
        "",
        *_columns_block(r.columns),
        "",
        *_classes_block(r.classes, r.imbalance),
        "",
        f"Model       {r.model.parameters:,} parameters ({r.model.trainable_parameters:,} trainable)",
        r.model.summary.rstrip(),
        "",
        *_plan_block(r.fit),
    ]
    if r.warnings:
        lines += [""] + [f"Warning: {w}" for w in r.warnings]
    lines += ["", f"OK: ready for: {fit_command(r.config, overrides)}"]
    return "\n".join(lines)


def _classes_block(classes: list[ClassCount], imbalance: float) -> list[str]:
    width = max(len("class"), *(len(c.name) for c in classes))
    lines = [
        f"Class balance (largest / smallest = {imbalance:.1f}):",
        f"  {'class':<{width}}  {'rows':>9}  {'share':>6}  {'validation':>10}",
    ]
    for c in classes:
        bar = "#" * max(1, round(c.share * 40)) if c.rows else ""
        lines.append(f"  {c.name:<{width}}  {c.rows:>9,}  {c.share:>6.1%}  {c.validation_rows:>10,}  {bar}")
    return lines


def _plan_block(fit: FitPlan) -> list[str]:
    opt = dict(fit.optimizer)
    opt_text = opt.pop("name") + (f" ({', '.join(f'{k}={v}' for k, v in opt.items())})" if opt else "")
    es, pre = fit.early_stopping, fit.preprocessing
    return [
        f"Fit         up to {fit.epochs} epochs x {fit.steps_per_epoch:,} steps of "
        f"{fit.batch_size} rows; optimizer {opt_text}; loss {fit.loss}",
        f"            preprocessing: transform {pre.transform}, scaling {pre.scaling}"
        + (", TF-IDF" if pre.tfidf else "")
        + (f", KNN features (k = {pre.knn})" if pre.knn else ""),
        "            "
        + (f"early stopping on {es.monitor} (patience {es.patience})" if es else "no early stopping")
        + f"; best model by {fit.checkpoint_monitor}"
        + (f"; lr schedule {fit.lr_schedule.name}" if fit.lr_schedule else "")
        + (f"; class weights {fit.class_weight}" if fit.class_weight else ""),
    ]


def _columns_block(columns: list[ColumnInfo]) -> list[str]:
    """One entry per feature column: type, distinct and missing counts; side by side when many."""
    width = max(len("column"), *(len(c.name) for c in columns))
    cell = lambda name, kind, distinct, missing: f"{name:<{width}}  {kind:<11}  {distinct:>9}  {missing:>9}"
    entries = [
        cell(
            c.name,
            c.type,
            "" if c.distinct is None else f"{c.distinct:,}",
            "" if c.missing is None else f"{c.missing:,}",
        )
        + (f"  {c.note}" if c.note else "")
        for c in columns
    ]
    per_line = 1 if len(columns) <= 20 or any(c.note for c in columns) else 2
    head = "  ".join([cell("column", "type", "distinct", "missing")] * per_line)
    rows = ["  ".join(entries[i : i + per_line]) for i in range(0, len(entries), per_line)]
    return ["Columns:", f"  {head}", *(f"  {r}" for r in rows)]


def one_line(r: CheckResult) -> str:
    """The ``check -q`` verdict."""
    return (
        f"OK: {r.config}: {r.train.rows:,} rows, {r.train.features} features, {len(r.classes)} classes, "
        f"{r.model.parameters:,} parameters"
        + (f"; {len(r.warnings)} warning(s), run without -q to see them" if r.warnings else "")
    )
