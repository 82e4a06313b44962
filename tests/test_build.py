"""Model building from every documented layer form, optimizer and loss form."""

import pytest

from ottotrain.config import validate_tree


def _cfg(layers, **train):
    return validate_tree({"data": {"train": "x.csv"}, "model": {"layers": layers},
                          "train": train})


def _build(layers, n_features=93, n_classes=9, **train):
    from ottotrain.engine.build import build_model

    return build_model(_cfg(layers, **train), n_features, n_classes)


HEAD = [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]


def test_tutorial_logreg_and_mlp_parameter_counts():
    # The tutorial's summaries: 846 parameters, then 9,400 + 909 = 10,309.
    assert _build(HEAD).count_params() == 846
    assert _build([{"Dense": {"units": 100}}] + HEAD).count_params() == 10309


@pytest.mark.parametrize("layers", [
    ["BatchNormalization", {"Dense": {"units": 32}}, "PReLU"],
    [{"Dense": {"units": 32, "activation": "relu", "use_bias": False,
                "kernel_initializer": "he_normal", "bias_initializer": "zeros",
                "kernel_regularizer": {"name": "l2", "l2": 1e-4},
                "bias_regularizer": "l1", "activity_regularizer": {"name": "L1L2", "l1": 0.0, "l2": 1e-5},
                "kernel_constraint": {"name": "max_norm", "max_value": 3},
                "bias_constraint": "non_neg"}}],
    [{"Dense": {"units": 32, "kernel_initializer": {"name": "random_normal", "stddev": 0.05}}},
     {"Dropout": 0.5}, {"LeakyReLU": {"negative_slope": 0.1}}],
    [{"Dense": {"units": 32}}, "ELU", {"GaussianNoise": {"stddev": 0.1}},
     {"ActivityRegularization": {"l1": 0.001}}, {"Dropout": {"rate": 0.2}}],
    [{"Reshape": {"target_shape": ["n_features", 1]}}, {"Permute": {"dims": [2, 1]}}, "Flatten",
     {"Dense": {"units": 16, "activation": "tanh"}}, {"LayerNormalization": {}}],
    [{"Dense": {"units": 16}}, {"Activation": {"activation": "relu"}}, {"AlphaDropout": 0.1},
     {"GaussianDropout": {"rate": 0.1}}, {"UnitNormalization": None}],
])
def test_layer_forms_build(layers):
    model = _build(layers + HEAD)
    assert model.output_shape == (None, 9)


def test_sizes_come_from_the_data():
    model = _build([{"Dense": {"units": 8}}] + HEAD, n_features=5, n_classes=3)
    assert model.input_shape == (None, 5) and model.output_shape == (None, 3)


@pytest.mark.parametrize("optimizer", [
    "sgd", "adam", {"name": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    {"name": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4}, {"name": "RMSprop"},
])
def test_optimizer_forms(optimizer):
    model = _build(HEAD, optimizer=optimizer)
    assert model.optimizer is not None


def test_loss_with_arguments_and_clipping():
    model = _build(HEAD, loss={"name": "categorical_crossentropy", "label_smoothing": 0.1},
                   gradient_clip_norm=1.0)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert model.optimizer.clipnorm == 1.0


@pytest.mark.parametrize("layers,fragment", [
    ([{"Dense": {"units": 5}}, {"Activation": "softmax"}], "output shape is (None, 5)"),
    ([{"Reshape": {"target_shape": [7, 7]}}] + HEAD, "model.layers[0].Reshape"),
])
def test_keras_rejections_name_the_layer(layers, fragment):
    from ottotrain.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _build(layers)
    assert fragment in str(e.value)


def test_summary_text_lists_layers_and_totals():
    from ottotrain.engine.build import summary_text

    text = summary_text(_build([{"Dense": {"units": 100}}] + HEAD))
    assert "Dense" in text and "Total params: 10,309" in text
