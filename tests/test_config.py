"""Bad configs through the CLI: one line on stderr naming file, line, key, what is wrong and
how to fix it; exit code 1; no traceback; no run directory; YAML tags never executed."""

import copy

import pytest
import yaml

from tests.conftest import error_line as _error_line
from tests.conftest import load_tool, tiny_config


def _set(tree, dotted, value):
    """Return a copy of a config dict with ``a.b.c`` set (or deleted when value is _DEL)."""
    tree = copy.deepcopy(tree)
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DEL:
        del node[last]
    else:
        node[last] = value
    return tree


_DEL = object()
LAYERS = "model.layers"


def _layers(*items):
    return list(items) + [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]


# (id, edit of the tiny config as (dotted key, value) pairs, expected message fragments)
BAD_TREES = [
    ("unknown-top-key", [("trian", {"epochs": 3})], ["trian", "did you mean 'train'", "allowed keys"]),
    ("misspelt-train-key", [("train.epoch", 3)], ["train.epoch", "did you mean 'epochs'"]),
    (
        "misspelt-data-key",
        [("data.valdation_split", 0.2)],
        ["data.valdation_split", "did you mean 'validation_split'"],
    ),
    ("epochs-wrong-type", [("train.epochs", "many")], ["train.epochs", "must be an integer", "'many'"]),
    ("epochs-float", [("train.epochs", 2.5)], ["train.epochs", "must be an integer", "2.5"]),
    ("epochs-zero", [("train.epochs", 0)], ["train.epochs", ">= 1", "got 0"]),
    ("batch-size-zero", [("train.batch_size", 0)], ["train.batch_size", ">= 1", "got 0"]),
    ("batch-size-negative", [("train.batch_size", -5)], ["train.batch_size", ">= 1", "-5"]),
    ("validation-split-above-1", [("data.validation_split", 1.5)], ["data.validation_split", "< 1", "1.5"]),
    ("validation-split-zero", [("data.validation_split", 0)], ["data.validation_split", "> 0"]),
    (
        "patience-negative",
        [("train.early_stopping", {"patience": -1})],
        ["train.early_stopping.patience", ">= 0", "-1"],
    ),
    (
        "learning-rate-negative",
        [("train.optimizer", {"name": "adam", "learning_rate": -1})],
        ["train.optimizer.learning_rate", "(0, 10]", "-1"],
    ),
    (
        "learning-rate-huge",
        [("train.optimizer", {"name": "adam", "learning_rate": 100})],
        ["train.optimizer.learning_rate", "(0, 10]", "100"],
    ),
    (
        "learning-rate-text",
        [("train.optimizer", {"name": "adam", "learning_rate": "fast"})],
        ["train.optimizer.learning_rate", "must be a number", "'fast'"],
    ),
    ("seed-negative", [("seed", -1)], ["seed", ">= 0"]),
    ("shuffle-not-bool", [("train.shuffle", "maybe")], ["train.shuffle", "true or false", "'maybe'"]),
    (
        "unknown-layer",
        [(LAYERS, _layers({"Dens": {"units": 8}}))],
        ["model.layers[0]", "unknown layer 'Dens'", "did you mean 'Dense'"],
    ),
    (
        "unknown-layer-argument",
        [(LAYERS, _layers({"Dense": {"unit": 8}}))],
        ["model.layers[0].Dense.unit", "no argument 'unit'", "did you mean 'units'"],
    ),
    (
        "layer-argument-wrong-type",
        [(LAYERS, _layers({"Dense": {"units": "many"}}))],
        ["model.layers[0].Dense.units", "integer >= 1", "'many'"],
    ),
    (
        "layer-bool-argument-wrong-type",
        [(LAYERS, _layers({"Dense": {"units": 8, "use_bias": 3}}))],
        ["model.layers[0].Dense.use_bias", "true or false", "got 3"],
    ),
    (
        "dropout-rate-out-of-range",
        [(LAYERS, _layers({"Dropout": {"rate": 1.5}}))],
        ["model.layers[0].Dropout.rate", "[0, 1)", "1.5"],
    ),
    (
        "unknown-activation",
        [(LAYERS, _layers({"Dense": {"units": 8, "activation": "rleu"}}))],
        ["model.layers[0].Dense.activation", "unknown activation 'rleu'", "did you mean 'relu'"],
    ),
    (
        "unknown-activation-layer",
        [(LAYERS, [{"Dense": {"units": "n_classes"}}, {"Activation": "softmaxx"}])],
        ["model.layers[1].Activation.activation", "did you mean 'softmax'"],
    ),
    (
        "unknown-optimizer",
        [("train.optimizer", {"name": "adamm"})],
        ["train.optimizer.name", "unknown optimizer 'adamm'", "did you mean 'adam'", "known:"],
    ),
    ("unknown-optimizer-string", [("train.optimizer", "sgdd")], ["train.optimizer", "did you mean 'sgd'"]),
    (
        "unknown-optimizer-argument",
        [("train.optimizer", {"name": "adam", "learning_rat": 0.1})],
        ["train.optimizer.learning_rat", "did you mean 'learning_rate'"],
    ),
    (
        "unknown-loss",
        [("train.loss", "categorical_crossentropyy")],
        ["train.loss", "unknown loss", "did you mean 'categorical_crossentropy'"],
    ),
    (
        "optimizer-without-name",
        [("train.optimizer", {"learning_rate": 0.1})],
        ["train.optimizer.name", "needs a name", "sgd"],
    ),
    (
        "optimizer-argument-wrong-type",
        [("train.optimizer", {"name": "sgd", "momentum": "high"})],
        ["train.optimizer.momentum", "must be a number", "'high'"],
    ),
    (
        "optimizer-argument-of-another-optimizer",
        [("train.optimizer", {"name": "Adam", "momentum": 0.9})],
        ["train.optimizer.momentum", "unknown key 'momentum'", "allowed keys", "beta_1"],
    ),
    (
        "optimizer-not-for-configs",
        [("train.optimizer", "MultiOptimizer")],
        ["train.optimizer", "cannot be used", "optimizer objects"],
    ),
    (
        "loss-misspelt-argument",
        [("train.loss", {"name": "categorical_crossentropy", "label_smothing": 0.1})],
        ["train.loss.label_smothing", "did you mean 'label_smoothing'"],
    ),
    (
        "loss-argument-wrong-type",
        [("train.loss", {"name": "CategoricalCrossentropy", "label_smoothing": "some"})],
        ["train.loss.label_smoothing", "must be a number", "'some'"],
    ),
    (
        "loss-bad-reduction",
        [("train.loss", {"name": "categorical_crossentropy", "reduction": "avg"})],
        ["train.loss.reduction", "'sum_over_batch_size'", "'avg'"],
    ),
    (
        "loss-for-integer-labels",
        [("train.loss", {"name": "sparse_categorical_crossentropy"})],
        ["train.loss.name", "integer labels", "use categorical_crossentropy"],
    ),
    (
        "layer-not-for-rows",
        [(LAYERS, _layers({"Conv1D": {"filters": 8, "kernel_size": 3}}))],
        ["model.layers[0]", "unknown layer 'Conv1D'", "Dense", "BatchNormalization"],
    ),
    (
        "layer-wrapper",
        [(LAYERS, _layers({"SpectralNormalization": {"layer": "Dense"}}))],
        ["model.layers[0]", "unknown layer 'SpectralNormalization'"],
    ),
    (
        "unknown-regularizer",
        [(LAYERS, _layers({"Dense": {"units": 8, "kernel_regularizer": "l3"}}))],
        ["model.layers[0].Dense.kernel_regularizer", "unknown regularizer 'l3'", "known: l1, l2"],
    ),
    (
        "regularizer-bad-argument",
        [(LAYERS, _layers({"Dense": {"units": 8, "kernel_regularizer": {"name": "l2", "l3": 0.1}}}))],
        ["kernel_regularizer.l3", "no argument 'l3'"],
    ),
    (
        "unknown-schedule",
        [("train.lr_schedule", {"name": "cosin"})],
        ["train.lr_schedule.name", "did you mean 'cosine'"],
    ),
    (
        "unknown-monitor",
        [("train.early_stopping", {"monitor": "val_los"})],
        ["train.early_stopping.monitor", "did you mean 'val_loss'"],
    ),
    ("unknown-transform", [("data.transform", "log")], ["data.transform", "did you mean 'log1p'"]),
    ("knn-k-zero", [("data.knn", {"k": [0, 4]})], ["data.knn.k", "increasing integers", "got [0, 4]"]),
    ("knn-k-not-increasing", [("data.knn", {"k": [8, 2]})], ["data.knn.k", "increasing", "got [8, 2]"]),
    ("knn-unknown-key", [("data.knn", {"neighbors": [4]})], ["data.knn.neighbors", "allowed keys: k"]),
    ("knn-not-a-mapping", [("data.knn", 5)], ["data.knn", "mapping"]),
    (
        "lambda-layer",
        [(LAYERS, _layers({"Lambda": {"function": "x"}}))],
        ["model.layers[0]", "Lambda layers run arbitrary code"],
    ),
    ("missing-data", [("data", _DEL)], ["data", "required"]),
    ("missing-model", [("model", _DEL)], ["model", "required"]),
    ("missing-layers", [("model", {})], ["model.layers", "required"]),
    ("missing-train-file", [("data.train", _DEL)], ["data", "needs 'train'"]),
    ("layers-not-a-list", [(LAYERS, "Dense")], ["model.layers", "must be a list"]),
    ("data-not-a-mapping", [("data", "train.csv")], ["data", "must be a mapping"]),
    ("name-not-a-directory-name", [("name", "../evil")], ["name", "'../evil'", "names a directory"]),
    ("cv-folds-one", [("cv", {"folds": 1})], ["cv.folds", ">= 2", "got 1"]),
    ("cv-unknown-key", [("cv", {"variant": []})], ["cv.variant", "did you mean 'variants'"]),
    ("cv-variant-not-a-mapping", [("cv", {"variants": ["tfidf"]})], ["cv.variants[0]", "mapping"]),
    (
        "cv-variant-bad-value",
        [("cv", {"variants": [{}, {"train.batch_size": 0}]})],
        ["cv.variants[1]", "train.batch_size", ">= 1", "got 0"],
    ),
    (
        "cv-variant-misspelt-key",
        [("cv", {"variants": [{"data.tfdif": True}]})],
        ["cv.variants[0]", "data.tfdif", "did you mean 'tfidf'"],
    ),
    (
        "cv-variant-bad-layer",
        [("cv", {"variants": [{"model.layers[0].Dense.units": "many"}]})],
        ["cv.variants[0]", "model.layers[0].Dense.units", "integer >= 1"],
    ),
    (
        "cv-variant-bad-key-path",
        [("cv", {"variants": [{"train..epochs": 3}]})],
        ["cv.variants[0]", "not a key path"],
    ),
    (
        "cv-variant-changes-data",
        [("cv", {"variants": [{"data.train": "other.csv"}]})],
        ["cv.variants[0].data.train", "cannot change 'data.train'"],
    ),
    (
        "cv-variant-changes-seed",
        [("cv", {"variants": [{"seed": 3}]})],
        ["cv.variants[0].seed", "cannot change 'seed'"],
    ),
]


@pytest.mark.parametrize("edits,fragments", [c[1:] for c in BAD_TREES], ids=[c[0] for c in BAD_TREES])
def test_bad_config_is_one_clear_line(edits, fragments, tiny_data, write_config, cli, tmp_path):
    tree = tiny_config(tiny_data)
    for key, value in edits:
        tree = _set(tree, key, value)
    _assert_one_clear_line(cli, write_config(tree), fragments, tmp_path)


def _assert_one_clear_line(cli, path, fragments, tmp_path):
    """fit fails with one line naming the file and each fragment, and makes no run directory."""
    runs = tmp_path / "runs"
    line = _error_line(cli("fit", path, "--runs-root", runs))
    assert str(path) in line
    for frag in fragments:
        assert frag in line, line
    assert not runs.exists()


BAD_TEXTS = [
    ("syntax-error", "name: t\ndata:\n  train: [a, b\nmodel: x\n", [":4:", "invalid YAML"]),
    ("tab-indent", "name: t\n\tdata: 1\n", [":2:", "invalid YAML", "'\\t'"]),
    ("duplicate-key", "seed: 1\nseed: 2\n", [":2:", "duplicate key 'seed'"]),
    ("top-level-list", "- a\n- b\n", ["top level must be a mapping", "got list"]),
    ("top-level-scalar", "hello\n", ["top level must be a mapping", "got str"]),
    ("empty-file", "", ["the config is empty"]),
    ("only-comments", "# nothing here\n", ["the config is empty"]),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in BAD_TEXTS], ids=[c[0] for c in BAD_TEXTS])
def test_bad_yaml_is_one_clear_line(text, fragments, write_config, cli, tmp_path):
    _assert_one_clear_line(cli, write_config(text), fragments, tmp_path)


def test_missing_config_file(cli, tmp_path):
    line = _error_line(cli("fit", tmp_path / "nope.yaml", "--runs-root", tmp_path / "runs"))
    assert "nope.yaml" in line and "not found" in line
    assert not (tmp_path / "runs").exists()


def test_bad_override_names_the_option(tiny_config_path, cli, tmp_path):
    line = _error_line(
        cli("fit", tiny_config_path, "--set", "train.epochs=zero", "--runs-root", tmp_path / "runs")
    )
    assert "--set train.epochs" in line and "'zero'" in line
    assert not (tmp_path / "runs").exists()


PYTHON_TAGS = [
    '!!python/object/apply:os.system ["touch {marker}"]\n',
    'name: !!python/object/apply:os.system ["touch {marker}"]\n',
    'name: !!python/object/new:os.system ["touch {marker}"]\n',
    "name: !!python/name:os.system\n",
    'seed: !!python/object/apply:subprocess.call [["touch", "{marker}"]]\n',
]


@pytest.mark.parametrize("template", PYTHON_TAGS)
def test_python_yaml_tags_are_refused_and_never_executed(template, tiny_data, write_config, cli, tmp_path):
    marker = tmp_path / "pwned"
    good = yaml.safe_dump(tiny_config(tiny_data), sort_keys=False)
    text = template.format(marker=marker)
    if not text.startswith("!!"):  # a tagged value inside an otherwise valid config
        key = text.split(":", 1)[0]
        good = "\n".join(line for line in good.splitlines() if not line.startswith(key + ":"))
        text = good + "\n" + text
    path = write_config(text)
    line = _error_line(cli("fit", path, "--runs-root", tmp_path / "runs"))
    assert "YAML tag not allowed" in line and "never executed" in line
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()
    # Nor through --set, nor through summary.
    r = cli(
        "fit",
        write_config(tiny_config(tiny_data), "ok.yaml"),
        "--set",
        f'name=!!python/object/apply:os.system ["touch {marker}"]',
        "--runs-root",
        tmp_path / "runs",
    )
    assert "YAML tag not allowed" in _error_line(r)
    _error_line(cli("summary", path))
    assert not marker.exists()


def test_cv_member_config_applies_variants_in_turn(tiny_data, write_config):
    from ottotrain.config import load_config, member_config

    tree = tiny_config(tiny_data)
    tree["cv"] = {
        "variants": [{}, {"data.tfidf": True, "train.batch_size": 16, "model.layers[0].Dense.units": 8}]
    }
    cfg = load_config(write_config(tree))
    assert cfg.cv.folds == 5 and cfg.cv.seeds is None
    plain, varied, again = (member_config(cfg, k) for k in (0, 1, 3))
    assert (plain.data.tfidf, plain.train.batch_size) == (False, 64)
    assert (varied.data.tfidf, varied.train.batch_size) == (True, 16)
    assert varied.model.layers[0] == {"Dense": {"units": 8, "activation": "relu"}}
    assert again == varied and varied.data.train == cfg.data.train
    assert "cv.variants[1]" in varied._source


# --------------------------------------------------------------------------------------
# docs/config.md, generated from the schema by tools/config_reference.py


def test_docs_config_md_is_generated_from_the_schema():
    from ottotrain.config import Config

    tool = load_tool("config_reference")
    assert tool.stale() == [], "run: python tools/config_reference.py --write"
    page = tool.DOC.read_text(encoding="utf-8")
    for key in ("data.train", "train.optimizer", "model.ensemble.k", "tune.space.<key>.choice"):
        assert f"`{key}`" in page, key
    assert all(f"`{name}`" in page for name in Config.model_fields)
    assert "`adam`" in page and "`categorical_focal_crossentropy`" in page  # the typed unions


def test_the_reference_tool_writes_the_doc_and_only_a_readme_that_holds_the_markers(tmp_path, monkeypatch):
    tool = load_tool("config_reference")
    readme, doc = tmp_path / "README.md", tmp_path / "docs" / "config.md"
    doc.parent.mkdir()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    monkeypatch.setattr(tool, "README", readme)
    monkeypatch.setattr(tool, "DOC", doc)
    readme.write_text("# Project\n\nSee docs/config.md.\n")
    assert tool.main(["--check"]) == 1 and tool.stale() == [doc]
    assert tool.main(["--write"]) == 0 and tool.main(["--check"]) == 0
    assert doc.read_text() == tool.page() and readme.read_text() == "# Project\n\nSee docs/config.md.\n"
    readme.write_text(f"# Project\n{tool.START}\nold\n{tool.END}\nrest\n")
    assert tool.stale() == [readme] and tool.main(["--write"]) == 0
    assert readme.read_text() == f"# Project\n{tool.START}\n{tool.render()}{tool.END}\nrest\n"
