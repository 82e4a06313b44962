"""Speed settings must not change results: same batches, same order, same weights.

No timing here (the benchmarks are in bench/); these only check equivalence.
"""

import gzip

import numpy as np
import pytest


def test_dataset_batches_are_the_rows_in_perm_order():
    import tensorflow as tf

    from ottotrain.engine.loop import EpochBatches

    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 103)]
    perm = rng.permutation(103)
    for p, bs in ((perm, 10), (None, 10), (perm, 103), (perm, 200), (None, 1)):
        got = list(EpochBatches(x, y, bs).epoch(p).as_numpy_iterator())
        xs, ys = (x[p], y[p]) if p is not None else (x, y)
        want = [(xs[i : i + bs], ys[i : i + bs]) for i in range(0, len(xs), bs)]
        assert len(got) == len(want)
        for (gx, gy), (wx, wy) in zip(got, want):
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)
    # Tensors in (converted once by train_loop) give the same batches as arrays.
    a = list(EpochBatches(tf.constant(x), tf.constant(y), 16).epoch(perm).as_numpy_iterator())
    b = list(EpochBatches(x, y, 16).epoch(perm).as_numpy_iterator())
    assert all(np.array_equal(u[0], v[0]) for u, v in zip(a, b))


def test_batches_hold_one_copy_and_run_without_the_autotuner():
    """The data sit in variables (tf.data copies a captured tensor) and autotuning is off.

    The autotuner's thread made model.fit wait for its timer at the end of about every
    other epoch (bench/RESULTS.md); the captured tensors doubled the training set's memory.
    """
    import tensorflow as tf

    from ottotrain.engine.loop import EpochBatches

    x, y = np.ones((40, 3), np.float32), np.eye(2, dtype=np.float32)[np.arange(40) % 2]
    b = EpochBatches(x, y, 8)
    assert isinstance(b.x, tf.Variable) and isinstance(b.y, tf.Variable)
    assert b.epoch().options().autotune.enabled is False
    assert sum(1 for _ in b.epoch()) == 5


def _weights_after_one_epoch(cfg, x, y, perm):
    from ottotrain.engine.build import build_model, compile_model, setup
    from ottotrain.engine.loop import EpochBatches

    setup(cfg.seed, cfg.train.deterministic)

    model = compile_model(build_model(cfg, x.shape[1], y.shape[1], compile=False), cfg, len(x))
    model.fit(EpochBatches(x, y, cfg.train.batch_size).epoch(perm), epochs=1, verbose=0, shuffle=False)
    return model.steps_per_execution, [np.asarray(w) for w in model.get_weights()]


# Each setting against the default: more batches per compiled call (default 'auto' runs
# all 16 of this epoch's batches in one call), and the training batches' accuracy metric.
@pytest.mark.parametrize(
    "setting, spe", [({"steps_per_execution": 1}, (16, 1)), ({"train_accuracy": True}, (16, 16))]
)
def test_speed_settings_do_not_change_weights(tiny_data, write_config, setting, spe):
    from conftest import tiny_config

    from ottotrain.config import load_config

    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 93)).astype(np.float32)
    y = np.eye(9, dtype=np.float32)[rng.integers(0, 9, 500)]
    perm = rng.permutation(500)
    default = load_config(write_config(tiny_config(tiny_data, batch_size=32)), [])
    other = load_config(write_config(tiny_config(tiny_data, batch_size=32, **setting), "other.yaml"), [])
    spe_a, w_a = _weights_after_one_epoch(default, x, y, perm)
    spe_b, w_b = _weights_after_one_epoch(other, x, y, perm)
    assert (spe_a, spe_b) == spe
    for a, b in zip(w_a, w_b):
        np.testing.assert_array_equal(a, b)


def test_fast_csv_reader_reads_what_pandas_reads(tmp_path):
    import pandas as pd

    from ottotrain.data.csv import _read_csv_arrow, read_table

    text = "id,feat_1,feat_2,target\n1,0,3,Class_1\n2,,4,Class_2\n3,NA,5,NA\n4,7,nan,Class_1\n5,1e3,-2,null\n"
    for name, opener in (("t.csv", open), ("t.csv.gz", gzip.open)):
        p = tmp_path / name
        with opener(p, "wt") as f:
            f.write(text)
        want = pd.read_csv(p)
        got = _read_csv_arrow(p)
        assert list(got.columns) == list(want.columns)
        for c in want.columns:
            np.testing.assert_array_equal(got[c].isna().to_numpy(), want[c].isna().to_numpy())
            assert got[c].dropna().astype(str).tolist() == want[c].dropna().astype(
                str
            ).tolist() or np.allclose(got[c].dropna().astype(float), want[c].dropna().astype(float))
        pd.testing.assert_frame_equal(read_table(p).astype(str), want.astype(str), check_dtype=False)


def test_explicit_jit_compile_is_honoured_under_determinism(tiny_data, write_config, tmp_path):
    from conftest import tiny_config

    from ottotrain.config import load_config
    from ottotrain.engine.build import build_model, compile_model, setup

    cfg = load_config(write_config(tiny_config(tiny_data, jit_compile=True)), [])
    setup(cfg.seed, cfg.train.deterministic)
    model = compile_model(build_model(cfg, 93, 9, compile=False), cfg, 100)
    assert model.jit_compile is True
    cfg = load_config(write_config(tiny_config(tiny_data), "auto.yaml"), [])
    model = compile_model(build_model(cfg, 93, 9, compile=False), cfg, 100)
    assert model.jit_compile is False  # 'auto' stays off under determinism / on CPU
