"""The static Keras table (keras_spec.json) must be the installed Keras', and the schema's
typed optimizers and losses (made from it) must each be documented.

A stale table fails here, never skips: configs are checked against the table before
Keras is imported, so a table from another Keras would check them against the wrong
signatures (ottotrain then checks layers by name only, see config/keras_checks.py).
"""

import re
import subprocess
import sys
import typing

import pytest

from tests.conftest import ROOT, load_tool

REGENERATE = "run: python tools/gen_keras_spec.py"


def test_keras_spec_was_made_from_the_installed_keras():
    from importlib.metadata import version

    from ottotrain.config import keras_spec
    from ottotrain.config.keras_checks import spec_is_current

    made, installed = keras_spec()["keras_version"], version("keras")
    assert made == installed, (
        f"ottotrain/config/keras_spec.json was made with Keras {made}, but "
        f"Keras {installed} is installed; {REGENERATE}"
    )
    assert spec_is_current()


@pytest.mark.slow
def test_keras_spec_is_what_the_generator_makes_now():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_keras_spec.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (
        "ottotrain/config/keras_spec.json is out of date with the installed "
        f"Keras; {REGENERATE}\n{r.stderr[-2000:]}"
    )


def test_spec_has_the_curated_layers():
    from ottotrain.config import keras_spec

    layers = keras_spec()["layers"]
    assert sorted(layers) == sorted(load_tool("gen_keras_spec").LAYERS)
    for name in (
        "Dense",
        "Dropout",
        "BatchNormalization",
        "PReLU",
        "LeakyReLU",
        "ELU",
        "GaussianNoise",
        "ActivityRegularization",
        "Reshape",
        "Permute",
        "Flatten",
        "Activation",
        "LayerNormalization",
        "AlphaDropout",
        "GaussianDropout",
        "UnitNormalization",
        "GroupNormalization",
        "Softmax",
        "ReLU",
        "Identity",
        "Rescaling",
    ):
        assert name in layers, name
    # Code, layer-taking wrappers, adapt()-only layers and non-tabular layers stay out.
    for name in (
        "Lambda",
        "SpectralNormalization",
        "TimeDistributed",
        "Normalization",
        "Conv1D",
        "LSTM",
        "Embedding",
        "MultiHeadAttention",
        "StringLookup",
    ):
        assert name not in layers, name
    assert 18 <= len(layers) <= 30
    dense = layers["Dense"]
    for arg in (
        "units",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "kernel_constraint",
        "bias_constraint",
    ):
        assert arg in dense, arg


def test_the_other_sections_are_kept():
    from ottotrain.config import keras_spec

    spec = keras_spec()
    for section in (
        "optimizers",
        "losses",
        "initializers",
        "regularizers",
        "constraints",
        "activations",
        "aliases",
    ):
        assert spec[section], section
    assert {"SGD", "Adam", "AdamW", "RMSprop"} <= set(spec["optimizers"])
    assert "categorical_crossentropy" in spec["aliases"]["losses"]


# --------------------------------------------------------------------------------------
# The schema's typed optimizers and losses (config/optimizers_losses.py), made from the table


def _tag(model):
    return typing.get_args(model.model_fields["name"].annotation)[0]


def _families():
    from ottotrain.config import schema

    return (("optimizers", schema.OPTIMIZERS), ("losses", schema.LOSSES))


@pytest.mark.parametrize("family", ["optimizers", "losses"])
def test_every_keras_class_is_typed_or_refused_with_a_reason(family):
    from ottotrain.config import keras_spec, schema

    models = dict(_families())[family]
    typed = {m.keras_class for m in models}
    assert len(typed) == len(models)
    table = set(keras_spec()[family])
    assert typed <= table, f"typed but not in keras_spec.json: {sorted(typed - table)}"
    assert table - typed == set(schema.UNFIT[family]), (
        f"config/optimizers_losses.py's UNFIT names {family} keras_spec.json lacks: "
        f"{sorted(set(schema.UNFIT[family]) - table)}"
    )


@pytest.mark.parametrize("family", ["optimizers", "losses"])
def test_typed_sections_are_the_table_with_every_class_and_argument_described(family):
    """Fields are the Keras arguments with Keras' defaults, so a field left unset means exactly
    what Keras does by default (only set ones are passed); each says what it does."""
    from ottotrain.config import keras_spec

    for model in dict(_families())[family]:
        params = keras_spec()[family][model.keras_class]
        fields = {k: f for k, f in model.model_fields.items() if k != "name"}
        args = {k: p for k, p in params.items() if k != "name"}  # `name` is the section's tag
        assert set(fields) == set(args), (model.__name__, sorted(set(fields) ^ set(args)))
        for key, field in fields.items():
            assert field.default == args[key].get("default"), (model.__name__, key)
        model.model_validate({"name": _tag(model)})  # every default fits its field's type
        assert model.__doc__, f"{model.__name__}: add a sentence to DOCS in config/optimizers_losses.py"
        undescribed = [k for k, f in fields.items() if not f.description]
        assert not undescribed, f"{model.__name__}: describe {undescribed} in config/optimizers_losses.py"


def test_the_hand_written_texts_name_only_what_the_table_has():
    """A class or argument Keras dropped leaves no sentence or type behind."""
    from ottotrain.config import keras_spec
    from ottotrain.config import optimizers_losses as ol

    spec = keras_spec()
    for family in ("optimizers", "losses"):
        assert set(ol.DOCS[family]) <= set(spec[family]), family
        args = {a for params in spec[family].values() for a in params}
        assert set(ol.ARGUMENTS[family]) <= args, sorted(set(ol.ARGUMENTS[family]) - args)
    classes = {c: params for family in ("optimizers", "losses") for c, params in spec[family].items()}
    every = {a for params in classes.values() for a in params}
    for key in [*ol.OWN_MEANING, *ol.TYPES]:
        cls, _, arg = key.rpartition(".")
        assert (arg in classes[cls]) if cls else (arg in every), key


def test_an_argument_new_in_the_table_becomes_a_field(monkeypatch):
    """The table is the one source: a new Keras argument needs no schema edit to be accepted."""
    import copy

    from ottotrain.config import keras_spec
    from ottotrain.config import optimizers_losses as ol

    table = copy.deepcopy(keras_spec())
    table["optimizers"]["Adam"]["zeta"] = {"default": 0.5}
    monkeypatch.setattr(ol, "keras_spec", lambda: table)
    adam = ol._section("optimizers", "Adam", ol.OptimizerPart)
    assert list(adam.model_fields)[-1] == "zeta" and adam.model_fields["zeta"].default == 0.5
    assert adam.model_validate({"name": "adam", "zeta": 2}).arguments() == {"zeta": 2}
    with pytest.raises(ValueError, match="zeta"):
        adam.model_validate({"name": "adam", "zeta": "x"})


def test_typed_names_are_the_ones_keras_resolves():
    from ottotrain.config import keras_spec, schema

    aliases = keras_spec()["aliases"]
    for model in schema.OPTIMIZERS:  # the tag is Keras' lower-case name of the class
        assert aliases["optimizers"][_tag(model)] == model.keras_class
    for model in schema.LOSSES:  # a loss without arguments goes to Keras by this name
        assert _tag(model) in aliases["losses"], _tag(model)
        assert _tag(model).replace("_", "") == model.keras_class.lower()


def test_typed_sections_accept_every_spelling_the_table_did():
    from ottotrain.config import TrainConfig, keras_spec, schema

    spec = keras_spec()
    for lower, cls in spec["aliases"]["optimizers"].items():
        if cls in schema.UNFIT["optimizers"]:
            continue
        for name in (lower, cls, cls.upper()):
            opt = TrainConfig.model_validate({"optimizer": name}).optimizer
            assert opt.keras_class == cls and opt.arguments() == {}
    for name in [*spec["aliases"]["losses"], *spec["losses"]]:
        if any(name.replace("_", "").lower() == c.lower() for c in schema.UNFIT["losses"]):
            continue
        loss = TrainConfig.model_validate({"loss": name}).loss
        assert loss.keras_class.lower() == name.replace("_", "").lower()


# The types the sections get: the Keras default's, or TYPES' where the default does not tell.
@pytest.mark.parametrize(
    "train, fragment",
    [
        ({"optimizer": {"name": "muon", "adam_lr_ratio": 0.5}}, None),  # an int default, any number
        ({"optimizer": {"name": "muon", "ns_steps": 2.5}}, "train.optimizer.ns_steps: must be an integer"),
        ({"optimizer": {"name": "adamw", "weight_decay": None}}, None),  # 0.004 by default, null: none
        ({"optimizer": {"name": "sgd", "clipnorm": "x"}}, "train.optimizer.clipnorm: must be a number"),
        ({"optimizer": {"name": "muon", "exclude_layers": ["dense"]}}, None),
        ({"optimizer": {"name": "muon", "exclude_layers": "dense"}}, "exclude_layers: must be a list"),
        ({"loss": {"name": "dice", "axis": [1]}}, None),
        ({"loss": {"name": "categorical_crossentropy", "axis": [1]}}, "train.loss.axis: must be an integer"),
        ({"loss": {"name": "huber", "reduction": "avg"}}, "train.loss.reduction: must be one of"),
        ({"loss": {"name": "huber", "dtype": 16}}, "train.loss.dtype: must be a string"),
    ],
)
def test_section_types_follow_the_keras_default_or_types(train, fragment):
    from ottotrain.config import validate_tree
    from ottotrain.errors import ConfigError

    tree = {"data": {"train": "x.csv"}, "model": {"layers": [{"Dense": {"units": 3}}]}, "train": train}
    if fragment is None:
        cfg = validate_tree(tree)
        part = cfg.train.optimizer if "optimizer" in train else cfg.train.loss
        assert part.arguments() == {k: v for k, v in next(iter(train.values())).items() if k != "name"}
    else:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            validate_tree(tree)
