"""``ottotrain check``: validate a config and its data the way ``fit`` would, train nothing.

Everything ``fit`` checks before it creates a run directory is run here, through
the same functions (``fit.prepare``, ``common.class_weights``, ``engine.build.check_model``),
so a config that passes ``check`` fails ``fit`` only for reasons that need training
(a diverging loss, a full disk).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict

import numpy as np

from ottotrain import engine
from ottotrain.config import Config, normalize_named
from ottotrain.data import data_paths
from ottotrain.data.tables import column_info
from ottotrain.log import Log
from ottotrain.workflows.common import class_weights, load_data, require_tensorboard
from ottotrain.workflows.fit import prepare


def check(cfg: Config, log=None) -> dict:
    """Load, check and split the data, build the model; report what ``fit`` would do.

    Args:
        cfg: a validated ``Config`` (see ``load_config``).
        log: progress output (stderr); quiet by default.

    Returns:
        A dict with the data, class balance, split, test file, model and training
        plan, plus ``warnings`` (things that work but are probably not intended).

    Raises:
        DataError: a file is missing, unreadable or inconsistent.
        ConfigError: the model or optimizer cannot be built for this data.
    """
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

    t = cfg.train
    opt_name, opt_args = normalize_named(t.optimizer)
    return {
        "config": cfg.source,
        "train": {
            "path": str(train_path),
            "rows": int(n),
            "features": len(train.features),
            "model_inputs": int(pre.n_outputs),
            "inputs": pre.describe_inputs(),
        },
        "columns": [asdict(c) for c in columns],
        "classes": [
            {"name": c, "rows": int(k), "share": round(float(k) / n, 6), "validation_rows": int(v)}
            for c, k, v in zip(classes, counts, val_counts)
        ],
        "imbalance": round(float(counts.max()) / max(1, int(counts.min())), 3),
        "split": {
            "train_rows": int(len(arrays.y_train)),
            "validation_rows": int(len(arrays.y_val)),
            "validation_split": cfg.data.validation_split,
            "stratify": cfg.data.stratify,
            "seed": cfg.seed,
        },
        "test": ({"path": str(test_path), "rows": int(len(x_test[0]))} if x_test is not None else None),
        "model": {
            "parameters": int(model.count_params()),
            "trainable_parameters": trainable,
            "summary": engine.build.summary_text(model),
        },
        "fit": {
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "steps_per_epoch": -(-len(arrays.y_train) // t.batch_size),
            "optimizer": {"name": opt_name, **opt_args},
            "loss": normalize_named(t.loss)[0],
            "early_stopping": t.early_stopping.model_dump() if t.early_stopping else None,
            "checkpoint_monitor": t.checkpoint.monitor,
            "lr_schedule": t.lr_schedule.model_dump() if t.lr_schedule else None,
            "class_weight": t.class_weight,
            "preprocessing": {
                "transform": cfg.data.transform,
                "tfidf": cfg.data.tfidf,
                "knn": cfg.data.knn.k if cfg.data.knn else None,
                "scaling": cfg.data.scaling,
            },
        },
        "warnings": warnings,
    }


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


def _model_inputs(tr: dict) -> str:
    """' (N inputs: ...)' when the model's inputs are not just the feature columns."""
    return "" if tr["model_inputs"] == tr["features"] else f" ({tr['inputs']})"


def format_check(result: dict, overrides=()) -> str:
    """The human-readable report of ``check``: one block per topic, fixed-width columns.

    ``overrides`` (the ``--set`` options check ran with) go into the suggested fit command.
    """
    r = result
    tr, sp, fit = r["train"], r["split"], r["fit"]
    lines = [
        f"Config      {r['config']}: valid",
        f"Train data  {tr['path']}: {tr['rows']:,} rows, {tr['features']} features, "
        f"{len(r['classes'])} classes" + _model_inputs(tr),
        f"Split       {sp['train_rows']:,} train / {sp['validation_rows']:,} validation rows "
        f"({sp['validation_split']:.0%}{', stratified' if sp['stratify'] else ''}, seed {sp['seed']})",
    ]
    if r["test"]:
        lines.append(f"Test data   {r['test']['path']}: {r['test']['rows']:,} rows, same feature columns")
    else:
        lines.append("Test data   none (no submission)")
    lines += ["", *_columns_block(r["columns"])]
    width = max(len("class"), *(len(c["name"]) for c in r["classes"]))
    lines += [
        "",
        f"Class balance (largest / smallest = {r['imbalance']:.1f}):",
        f"  {'class':<{width}}  {'rows':>9}  {'share':>6}  {'validation':>10}",
    ]
    for c in r["classes"]:
        bar = "#" * max(1, round(c["share"] * 40)) if c["rows"] else ""
        lines.append(
            f"  {c['name']:<{width}}  {c['rows']:>9,}  {c['share']:>6.1%}  {c['validation_rows']:>10,}  {bar}"
        )
    opt = dict(fit["optimizer"])
    opt_text = opt.pop("name") + (f" ({', '.join(f'{k}={v}' for k, v in opt.items())})" if opt else "")
    es = fit["early_stopping"]
    pre = fit["preprocessing"]
    lines += [
        "",
        f"Model       {r['model']['parameters']:,} parameters "
        f"({r['model']['trainable_parameters']:,} trainable)",
        r["model"]["summary"].rstrip(),
        "",
        f"Fit         up to {fit['epochs']} epochs x {fit['steps_per_epoch']:,} steps of "
        f"{fit['batch_size']} rows; optimizer {opt_text}; loss {fit['loss']}",
        f"            preprocessing: transform {pre['transform']}, scaling {pre['scaling']}"
        + (", TF-IDF" if pre["tfidf"] else "")
        + (f", KNN features (k = {pre['knn']})" if pre.get("knn") else ""),
        "            "
        + (f"early stopping on {es['monitor']} (patience {es['patience']})" if es else "no early stopping")
        + f"; best model by {fit['checkpoint_monitor']}"
        + (f"; lr schedule {fit['lr_schedule'].get('name')}" if fit["lr_schedule"] else "")
        + (f"; class weights {fit['class_weight']}" if fit["class_weight"] else ""),
    ]
    if r["warnings"]:
        lines += [""] + [f"Warning: {w}" for w in r["warnings"]]
    lines += ["", f"OK: ready for: {fit_command(r['config'], overrides)}"]
    return "\n".join(lines)


def _columns_block(columns: list[dict]) -> list[str]:
    """One entry per feature column: type, distinct and missing counts; side by side when many."""
    width = max(len("column"), *(len(c["name"]) for c in columns))
    cell = lambda name, kind, distinct, missing: f"{name:<{width}}  {kind:<11}  {distinct:>9}  {missing:>9}"
    entries = [
        cell(
            c["name"],
            c["type"],
            "" if c["distinct"] is None else f"{c['distinct']:,}",
            "" if c["missing"] is None else f"{c['missing']:,}",
        )
        + (f"  {c['note']}" if c["note"] else "")
        for c in columns
    ]
    per_line = 1 if len(columns) <= 20 or any(c["note"] for c in columns) else 2
    head = "  ".join([cell("column", "type", "distinct", "missing")] * per_line)
    rows = ["  ".join(entries[i : i + per_line]) for i in range(0, len(entries), per_line)]
    return ["Columns:", f"  {head}", *(f"  {r}" for r in rows)]


def one_line(result: dict) -> str:
    """The ``check -q`` verdict."""
    return (
        f"OK: {result['config']}: {result['train']['rows']:,} rows, {result['train']['features']} "
        f"features, {len(result['classes'])} classes, {result['model']['parameters']:,} parameters"
        + (
            f"; {len(result['warnings'])} warning(s), run without -q to see them"
            if result["warnings"]
            else ""
        )
    )
