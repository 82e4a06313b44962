"""TabM-style ensembles and numeric embeddings in the tool: config checks, the per-member batch
pipeline, the model's loss and prediction against a direct computation, k = 1, the bins'
rows, and fit / resume / predict / cv of an ensemble."""

import json

import numpy as np
import pandas as pd
import pytest

from ottotrain.config import load_config
from ottotrain.features.bins import quantile_edges
from ottotrain.log import Log
from tests.conftest import error_line, tiny_config

ENSEMBLE = {"k": 3, "kind": "batch"}
PLE = {"PiecewiseLinearEmbedding": {"bins": 6, "d_embedding": 4}}


def _cfg(tiny_data, ensemble=ENSEMBLE, first=None, **train):
    cfg = tiny_config(tiny_data, **train)
    cfg["model"]["ensemble"] = ensemble
    if first is not None:
        cfg["model"]["layers"].insert(0, first)
    return cfg


# (id, --set overrides, message fragment)
BAD = [
    ("k-below-one", ["model.ensemble={k: 0}"], "model.ensemble.k: must be an integer >= 1, got 0"),
    ("kind", ["model.ensemble={k: 4, kind: minni}"], "did you mean 'mini'"),
    ("no-dense", ["model.ensemble={k: 4, kind: mini}", "model.layers=[{Activation: softmax}]"], "has none"),
    (
        "embedding-not-first",
        ["model.layers[1]={PeriodicEmbedding: {}}"],
        "PeriodicEmbedding embeds the input columns, so it must open the layer list",
    ),
    ("bins", ["model.layers[0]={PiecewiseLinearEmbedding: {bins: 1}}"], "bins: Input should be greater than"),
    ("argument", ["model.layers[0]={PiecewiseLinearEmbedding: {binz: 8}}"], "did you mean 'bins'"),
]


@pytest.mark.parametrize("sets,fragment", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_ensemble_configs_are_one_line(sets, fragment, cli, tiny_config_path):
    line = error_line(cli("config", tiny_config_path, *[a for s in sets for a in ("--set", s)]))
    assert fragment in line, line


def test_each_member_gets_its_own_shuffle_in_one_batch():
    from ottotrain.engine.loop import EpochBatches, epoch_order

    n, b, k = 10, 4, 3
    x = np.arange(n, dtype=np.float32)[:, None]
    perm = epoch_order(7, 0, n, members=k)
    assert perm.shape == (k, n) and len({tuple(p) for p in perm}) == k
    batches = [bx.numpy()[:, 0].astype(int) for bx, _ in EpochBatches(x, x, b, members=k).epoch(perm)]
    want = [np.concatenate([perm[m, s : s + b] for m in range(k)]) for s in range(0, n, b)]
    assert [len(v) for v in batches] == [12, 12, 6]  # the last batch: 2 rows per member
    for got, w in zip(batches, want):
        np.testing.assert_array_equal(got, w)
    shared = epoch_order(7, 0, n, members=k, shared=True)
    assert (shared == shared[0]).all()
    np.testing.assert_array_equal(epoch_order(7, 0, n), perm[0])  # member 0: a single model's order


def test_loss_is_the_mean_of_member_losses_and_prediction_their_mean(tiny_data):
    from ottotrain.engine import build
    from ottotrain.engine.env import keras

    cfg = load_config(_write(tiny_data, _cfg(tiny_data, first=PLE)))
    rng = np.random.default_rng(0)
    n, f, c, k = 8, 5, 9, 3
    x = rng.normal(size=(k * n, f)).astype(np.float32)  # k blocks: member m's rows
    y = rng.integers(0, c, size=k * n)
    from ottotrain.features.categories import InputBlock

    inputs = InputBlock(f, [], [], [], f, quantile_edges(x, 6))
    build.setup(1, True)
    model = build.build_model(cfg, f, c, compile=False, inputs=inputs)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    members = keras.Model(model.inputs, model.layers[-2].output)  # (k, rows, classes)
    per_member = np.asarray(members([x], training=False))
    own = per_member[np.arange(k)[:, None], np.arange(k * n).reshape(k, n)]  # member m on its rows
    direct = np.mean([-np.log(own[m, np.arange(n), y[m * n : (m + 1) * n]]).mean() for m in range(k)])
    loss = model.train_on_batch(x, keras.utils.to_categorical(y, c))
    assert float(loss) == pytest.approx(direct, rel=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), per_member.mean(axis=0), atol=1e-6)


def _write(tiny_data, cfg, name="c.yaml"):
    import yaml

    p = tiny_data["train"].parent.parent / f"ens-{name}"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_one_member_is_the_plain_model(tiny_data, tmp_path):
    from ottotrain.workflows.fit import fit

    runs = []
    for ens in (None, {"k": 1}):
        cfg = load_config(_write(tiny_data, _cfg(tiny_data, ensemble=ens), f"k1-{ens is None}.yaml"))
        runs.append(fit(cfg, runs_root=tmp_path, log=Log(0))["run_dir"])
    a, b = (pd.read_csv(f"{r}/val_predictions.csv") for r in runs)
    pd.testing.assert_frame_equal(a, b)


def test_bins_come_from_the_training_rows_only(tiny_data):
    from ottotrain.workflows.fit import prepare

    cfg = load_config(_write(tiny_data, _cfg(tiny_data, first=PLE), "bins.yaml"))
    data = prepare(cfg, test=False)
    edges = data.pre.state.bins
    assert edges == quantile_edges(data.arrays.x_train[:, : data.pre.numeric_width], 6)
    both = np.vstack([data.arrays.x_train, data.arrays.x_val])
    assert edges != quantile_edges(both[:, : data.pre.numeric_width], 6)
    assert json.loads(data.pre.to_json())["bins"] == edges


def test_an_ensemble_resumes_exactly_and_predicts(tiny_data, tmp_path, cli):
    from ottotrain.workflows.fit import fit

    cfg = load_config(_write(tiny_data, _cfg(tiny_data, first=PLE, epochs=3), "resume.yaml"))
    ref = fit(cfg, runs_root=tmp_path / "ref", log=Log(0))["run_dir"]

    def stop_after_two(row):
        if row.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, run_dir=tmp_path / "run", log=Log(0), on_epoch=stop_after_two)
    fit(cfg, resume=tmp_path / "run", log=Log(0))
    hist, ref_hist = pd.read_csv(tmp_path / "run" / "history.csv"), pd.read_csv(f"{ref}/history.csv")
    np.testing.assert_allclose(hist[["loss", "val_loss"]], ref_hist[["loss", "val_loss"]], atol=1e-6)
    r = cli("predict", tmp_path / "run", tiny_data["test"], "-o", tmp_path / "sub.csv")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(
        pd.read_csv(tmp_path / "sub.csv").to_numpy(float),
        pd.read_csv(f"{ref}/submission.csv").to_numpy(float),
        atol=1e-6,
    )
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert "Ensemble: 3 members;" in summary and "EnsembleDense" in summary


@pytest.mark.parametrize("kind", ["mini", "packed"])
def test_cv_of_an_ensemble_with_periodic_embeddings(kind, tiny_data, tmp_path, cli, write_config):
    cfg = _cfg(
        tiny_data, ensemble={"k": 2, "kind": kind}, first={"PeriodicEmbedding": {"frequencies": 4}}, epochs=1
    )
    r = cli("cv", write_config(cfg), "--folds", 2, "--runs-root", tmp_path / "runs", "-q")
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "runs").iterdir()
    r = cli("evaluate", run, tiny_data["train"], "--json")
    assert r.exit_code == 0, r.output
    assert "Ensemble: 2 members" in cli("summary", run).stdout
    # Each member's log loss alone: member j of both fold models together; their mean is the run's.
    from ottotrain.data import load_labelled
    from ottotrain.metrics import log_loss
    from ottotrain.workflows.predictor import open_run

    predictor = open_run(run)
    x, y = load_labelled(tiny_data["train"], predictor.state)
    each = predictor.member_proba(x)
    assert each.shape == (2, len(y), 9) and not np.allclose(each[0], each[1])
    assert np.abs(each.mean(axis=0) - predictor.predict_proba(x)).max() < 1e-5
    assert json.loads(r.stdout)["member_log_loss"] == [round(log_loss(y, p), 6) for p in each]
    assert "2 ensemble members alone: log_loss" in cli("evaluate", run, tiny_data["train"]).stdout
