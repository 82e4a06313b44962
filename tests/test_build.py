"""Model building from every documented layer form, optimizer and loss form."""

import pytest

from ottotrain.config import validate_tree


def _cfg(layers, **train):
    return validate_tree({"data": {"train": "x.csv"}, "model": {"layers": layers}, "train": train})


def _build(layers, n_features=93, n_classes=9, **train):
    from ottotrain.engine.build import build_model

    return build_model(_cfg(layers, **train), n_features, n_classes)


HEAD = [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]


def test_tutorial_logreg_and_mlp_parameter_counts():
    # The tutorial's summaries: 846 parameters, then 9,400 + 909 = 10,309.
    assert _build(HEAD).count_params() == 846
    assert _build([{"Dense": {"units": 100}}] + HEAD).count_params() == 10309


@pytest.mark.parametrize(
    "layers",
    [
        ["BatchNormalization", {"Dense": {"units": 32}}, "PReLU"],
        [
            {
                "Dense": {
                    "units": 32,
                    "activation": "relu",
                    "use_bias": False,
                    "kernel_initializer": "he_normal",
                    "bias_initializer": "zeros",
                    "kernel_regularizer": {"name": "l2", "l2": 1e-4},
                    "bias_regularizer": "l1",
                    "activity_regularizer": {"name": "L1L2", "l1": 0.0, "l2": 1e-5},
                    "kernel_constraint": {"name": "max_norm", "max_value": 3},
                    "bias_constraint": "non_neg",
                }
            }
        ],
        [
            {"Dense": {"units": 32, "kernel_initializer": {"name": "random_normal", "stddev": 0.05}}},
            {"Dropout": 0.5},
            {"LeakyReLU": {"negative_slope": 0.1}},
        ],
        [
            {"Dense": {"units": 32}},
            "ELU",
            {"GaussianNoise": {"stddev": 0.1}},
            {"ActivityRegularization": {"l1": 0.001}},
            {"Dropout": {"rate": 0.2}},
        ],
        [
            {"Reshape": {"target_shape": ["n_features", 1]}},
            {"Permute": {"dims": [2, 1]}},
            "Flatten",
            {"Dense": {"units": 16, "activation": "tanh"}},
            {"LayerNormalization": {}},
        ],
        [
            {"Dense": {"units": 16}},
            {"Activation": {"activation": "relu"}},
            {"AlphaDropout": 0.1},
            {"GaussianDropout": {"rate": 0.1}},
            {"UnitNormalization": None},
        ],
    ],
)
def test_layer_forms_build(layers):
    model = _build(layers + HEAD)
    assert model.output_shape == (None, 9)


def test_sizes_come_from_the_data():
    model = _build([{"Dense": {"units": 8}}] + HEAD, n_features=5, n_classes=3)
    assert model.input_shape == (None, 5) and model.output_shape == (None, 3)


@pytest.mark.parametrize(
    "optimizer",
    [
        "sgd",
        "adam",
        {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4},
        {"name": "RMSprop"},
    ],
)
def test_optimizer_forms(optimizer):
    model = _build(HEAD, optimizer=optimizer)
    assert model.optimizer is not None


def test_loss_with_arguments_and_clipping():
    model = _build(
        HEAD, loss={"name": "categorical_crossentropy", "label_smoothing": 0.1}, gradient_clip_norm=1.0
    )
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert model.optimizer.clipnorm == 1.0


@pytest.mark.parametrize(
    "layers,fragment",
    [
        ([{"Dense": {"units": 5}}, {"Activation": "softmax"}], "output shape is (None, 5)"),
        ([{"Reshape": {"target_shape": [7, 7]}}] + HEAD, "model.layers[0].Reshape"),
    ],
)
def test_keras_rejections_name_the_layer(layers, fragment):
    from ottotrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _build(layers)
    assert fragment in str(e.value)


def test_summary_text_lists_layers_and_totals():
    from ottotrain.engine.build import summary_text

    text = summary_text(_build([{"Dense": {"units": 100}}] + HEAD))
    assert "Dense" in text and "Total params: 10,309" in text


# --------------------------------------------------------------------------------------
# Typed optimizers and losses: Keras gets exactly the arguments a config gives


def _shipped_configs():
    from tests.conftest import ROOT

    paths = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "bench" / "configs").glob("*.yaml"))
    paths = [p for p in paths if "-stack" not in p.name]  # no model of their own (tests/test_stack.py)
    return paths + [ROOT / "ottotrain" / "workflows" / "templates" / "init.yaml"]


def _shipped(path, tmp_path):
    """The config file as shipped; the starter template as 'ottotrain init' writes it."""
    if path.name != "init.yaml":
        return path
    from ottotrain.workflows.starter import starter_text

    out = tmp_path / "ottotrain.yaml"
    out.write_text(starter_text(out), encoding="utf-8")
    return out


def _as_before(value):
    """What the optimizer got before the schema typed it: the mapping's keys but `name`, with
    learning_rate & co. made floats (YAML reads `1` as an int)."""
    if isinstance(value, str):
        return {}
    kwargs = {k: v for k, v in value.items() if k != "name"}
    for key in ("learning_rate", "weight_decay", "momentum", "epsilon", "clipnorm", "clipvalue"):
        if isinstance(kwargs.get(key), int) and not isinstance(kwargs[key], bool):
            kwargs[key] = float(kwargs[key])
    return kwargs


@pytest.mark.parametrize("path", _shipped_configs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_give_keras_the_same_arguments_and_round_trip(path, tmp_path):
    import yaml

    from ottotrain.config import Config, config_to_dict, dump_yaml, load_config, validate_tree
    from ottotrain.engine.build import make_loss, make_optimizer
    from ottotrain.runs.resume import _saved_config

    path = _shipped(path, tmp_path)
    raw = yaml.safe_load(path.read_text())["train"]
    cfg = load_config(path)
    assert cfg.train.optimizer.arguments() == _as_before(raw["optimizer"])
    assert cfg.train.loss.arguments() == {} and make_loss(cfg) == raw["loss"]
    opt = make_optimizer(cfg)
    assert (
        type(opt).__name__.lower()
        == str(raw["optimizer"] if isinstance(raw["optimizer"], str) else raw["optimizer"]["name"]).lower()
    )
    # Saved as written (run config.yaml), and read back to the same config: by load_config,
    # by the cv members' re-validation and by resume (runs.resume._saved_config).
    tree = config_to_dict(cfg)
    assert tree["train"]["optimizer"] == raw["optimizer"] and tree["train"]["loss"] == raw["loss"]
    again = validate_tree(yaml.safe_load(dump_yaml(tree)), str(path))
    assert config_to_dict(again) == tree and again.train == cfg.train
    assert config_to_dict(Config.model_validate(yaml.safe_load(dump_yaml(tree)))) == tree
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(tree), encoding="utf-8")
    assert _saved_config(run) == tree
    assert again.train.optimizer.arguments() == cfg.train.optimizer.arguments()
    assert make_optimizer(again).get_config() | {"name": None} == opt.get_config() | {"name": None}


def test_only_given_arguments_reach_keras_and_typed_defaults_are_keras_defaults():
    import typing

    from ottotrain.config import schema
    from ottotrain.engine.build import make_loss, make_optimizer
    from ottotrain.engine.env import keras

    cfg = _cfg(HEAD, optimizer={"name": "Adam", "learning_rate": 1, "beta_1": 0.8})
    assert cfg.train.optimizer.arguments() == {"learning_rate": 1.0, "beta_1": 0.8}
    assert isinstance(cfg.train.optimizer.learning_rate, float)
    assert cfg.train.optimizer.given() == {"name": "adam", "learning_rate": 1.0, "beta_1": 0.8}
    opt = make_optimizer(cfg)
    assert float(opt.learning_rate) == 1.0 and opt.beta_1 == 0.8 and opt.epsilon == 1e-7
    cfg = _cfg(HEAD, loss={"name": "CategoricalCrossentropy", "label_smoothing": 0.1})
    assert cfg.train.loss.arguments() == {"label_smoothing": 0.1}
    assert make_loss(_cfg(HEAD, loss="CategoricalCrossentropy")) == "categorical_crossentropy"
    # Were every typed default passed, Keras would build the same object as from no argument.
    for model in schema.OPTIMIZERS + schema.LOSSES:
        module = keras.optimizers if model in schema.OPTIMIZERS else keras.losses
        typed = model.model_validate({"name": typing.get_args(model.model_fields["name"].annotation)[0]})
        every = {k: getattr(typed, k) for k in model.model_fields if k != "name"}
        cls = getattr(module, model.keras_class)
        ours, theirs = cls(**every).get_config(), cls().get_config()
        assert ours | {"name": None} == theirs | {"name": None}, model.__name__


@pytest.mark.parametrize(
    "train,fragment",
    [
        (
            {"optimizer": {"name": "sgd", "momentum": 2.0}},
            "train.optimizer: Keras rejected the optimizer: `momentum`",
        ),
        (
            {"optimizer": {"name": "adam", "clipnorm": 1.0, "global_clipnorm": 1.0}},
            "train.optimizer: Keras rejected the optimizer: Only one of",
        ),
        (
            {"loss": {"name": "categorical_crossentropy", "dtype": "nope"}},
            "train.loss: Keras rejected the loss",
        ),
    ],
)
def test_keras_rejections_name_the_optimizer_or_loss(train, fragment):
    from ottotrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _build(HEAD, **train)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------
# Another Keras than the table's: names checked, arguments left to Keras, clear errors


@pytest.fixture
def other_keras(monkeypatch):
    """The installed Keras' package metadata says another version than keras_spec.json's."""
    from ottotrain.config import keras_checks

    monkeypatch.setattr(keras_checks, "installed_keras_version", lambda: "3.99.0")
    assert not keras_checks.spec_is_current()
    return "3.99.0"


def test_the_installed_keras_version_is_read_without_importing_it():
    import subprocess
    import sys
    from importlib import metadata

    code = (
        "import sys; from ottotrain.config import keras_checks as k; "
        "print(k.installed_keras_version(), 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [metadata.version("keras"), "False"]


def test_another_keras_checks_layers_by_name_and_keras_checks_the_arguments(other_keras):
    from ottotrain.errors import ConfigError

    layers = [{"Dense": {"units": 8, "new_in_3_99": True}}] + HEAD
    cfg = _cfg(layers)  # not an error: the table's Dense signature may be stale
    with pytest.raises(ConfigError) as e:
        _build(layers)
    msg = str(e.value)
    assert msg.startswith("<config>: model.layers[0].Dense: Keras rejected this layer: ")
    assert "new_in_3_99" in msg and "\n" not in msg
    # Names are still checked, with a did-you-mean; our own range rules still hold.
    for bad, fragment in (
        ({"Dens": {"units": 8}}, "did you mean 'Dense'"),
        ({"Dropout": {"rate": 1.5}}, "[0, 1)"),
        ({"Lambda": {}}, "arbitrary code"),
    ):
        with pytest.raises(ConfigError) as e:
            _cfg([bad] + HEAD)
        assert "model.layers[0]" in str(e.value) and fragment in str(e.value)
    # An argument value the table would have refused is left to Keras, and reported the same way.
    with pytest.raises(ConfigError) as e:
        _build([{"Dense": {"units": 8, "activation": "rleu"}}] + HEAD)
    assert "model.layers[0].Dense: Keras rejected this layer" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _build([{"Dense": {"units": 8, "kernel_initializer": "he_normall"}}] + HEAD)
    assert "model.layers[0].Dense.kernel_initializer: this Keras" in str(e.value)
    assert "no initializer 'he_normall' (did you mean 'he_normal'?)" in str(e.value)
    assert "made from Keras 3.15" in str(e.value) and "3.99.0 is installed" in str(e.value)
    assert cfg.model.layers[0] == layers[0]


def test_the_same_config_fails_early_with_the_tables_keras():
    from ottotrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _cfg([{"Dense": {"units": 8, "new_in_3_99": True}}] + HEAD)
    assert "model.layers[0].Dense.new_in_3_99" in str(e.value) and "no argument" in str(e.value)


@pytest.mark.parametrize("mismatch", [False, True], ids=["same-keras", "other-keras"])
def test_a_name_this_keras_lacks_is_a_config_error_with_its_key_path(mismatch, monkeypatch, request):
    from ottotrain.config import keras_spec
    from ottotrain.engine.env import keras
    from ottotrain.errors import ConfigError

    if mismatch:
        request.getfixturevalue("other_keras")
    spec = keras_spec()
    monkeypatch.setitem(spec["layers"], "Foo", {"units": {"default": None}})
    monkeypatch.setitem(spec["aliases"]["initializers"], "foo_init", "FooInit")
    monkeypatch.setitem(spec["initializers"], "FooInit", {})

    def error(layers, **train):
        cfg = _cfg(layers, **train)  # the table has it: the config is valid
        cfg = cfg.with_source("config.yaml")
        with pytest.raises(ConfigError) as e:
            from ottotrain.engine.build import build_model

            build_model(cfg, 93, 9)
        assert "Traceback" not in str(e.value) and "\n" not in str(e.value)
        return str(e.value)

    msg = error([{"Dense": {"units": 8}}, "ReLU", {"Foo": {"units": 3}}] + HEAD)
    assert msg.startswith(
        f"config.yaml: model.layers[2].Foo: this Keras ({keras.__version__}) has no layer 'Foo'; "
    )
    assert ("or install Keras 3.15" in msg) == mismatch
    assert ("remake the table" in msg) == (not mismatch)
    msg = error([{"Dense": {"units": 8, "kernel_initializer": {"name": "foo_init"}}}] + HEAD)
    assert msg.startswith("config.yaml: model.layers[0].Dense.kernel_initializer.name: this Keras")
    assert "no initializer 'FooInit'" in msg
    msg = error([{"Dense": {"units": 8, "bias_initializer": "foo_init"}}] + HEAD)
    assert msg.startswith("config.yaml: model.layers[0].Dense.bias_initializer: this Keras")
    # Optimizers and losses: a release without one the schema types.
    monkeypatch.delattr(keras.optimizers, "Lion")
    msg = error(HEAD, optimizer={"name": "lion", "learning_rate": 0.001})
    assert msg.startswith("config.yaml: train.optimizer.name: this Keras") and "no optimizer 'Lion'" in msg
    monkeypatch.delattr(keras.losses, "poisson")
    assert error(HEAD, loss="poisson").startswith("config.yaml: train.loss: this Keras")
    monkeypatch.delattr(keras.losses, "Huber")
    msg = error(HEAD, loss={"name": "huber", "delta": 2.0})
    assert msg.startswith("config.yaml: train.loss.name: this Keras") and "no loss 'Huber'" in msg
