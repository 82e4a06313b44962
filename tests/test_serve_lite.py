"""TensorFlow Lite behind ``serve`` (engine.lite, workflows.serve.load): the probabilities of
``ottotrain predict`` to 1e-5, and the SavedModel where a model does not convert or match.

The runs are those of tests/export_runs.py (trained once per session).
"""

import numpy as np
import pandas as pd
import pytest

from tests import export_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return export_runs.trained(tmp_path_factory)


def _inputs(test, schema):
    """The test file's rows as the server reads them: (numbers, strings), predict's order."""
    from ottotrain.serving.requests import RequestReader

    batch = RequestReader(schema, 10**6).instances(export_runs.request_rows(test, schema))
    return batch.numbers, batch.strings


def _rows(strings, a, b):
    return None if strings is None else strings[a:b]


@pytest.mark.parametrize("where", ["export", "run"])
def test_lite_gives_what_predict_writes_in_any_batch(runs, where):
    """KNN features (tfidf space), missing cells, the non-zero count: computed by TensorFlow Lite,
    one row at a time and all at once, as predict and the SavedModel compute them."""
    from ottotrain.workflows import serve

    run, export, test, sub = runs["knn-tfidf"]
    fast, schema = serve.load(run if where == "run" else export)
    assert fast.runtime.startswith("TensorFlow Lite (within "), fast.runtime
    saved, _ = serve.load(export, lite=False)
    assert saved.runtime == "SavedModel (--no-lite)"
    want = pd.read_csv(sub).iloc[:, 1:].to_numpy()
    x, s = _inputs(test, schema)
    np.testing.assert_allclose(fast(x, s), want, atol=1e-5)
    one = np.concatenate([fast(x[i : i + 1], _rows(s, i, i + 1)) for i in range(len(x))])
    np.testing.assert_allclose(one, want, atol=1e-5)
    np.testing.assert_allclose(fast(x, s), saved(x, s), atol=serve.LITE_TOLERANCE)


def test_a_call_over_max_rows_is_split_over_the_interpreters_and_made_in_chunks(runs):
    from ottotrain import engine
    from ottotrain.workflows import serve

    run, export, test, sub = runs["knn-tfidf"]
    saved, schema = serve.load(export, lite=False)
    x, s = _inputs(test, schema)
    assert len(x) > 2 * 7 > engine.lite.SMALL_ROWS  # two parts, each in chunks
    fast = engine.lite.lite_function(saved.module, threads=2, max_rows=7)
    np.testing.assert_allclose(fast(x, s), pd.read_csv(sub).iloc[:, 1:].to_numpy(), atol=1e-5)
    alone = engine.lite.lite_function(saved.module, threads=1)
    np.testing.assert_allclose(fast(x, s), alone(x, s), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "case, why",
    [
        ("typed-knn-tabm", "categorical columns: their vocabulary lookups are no TensorFlow Lite ops"),
        ("cv", "does not convert ("),  # its quantile transform: float64, ndtri
    ],
)
def test_a_model_lite_cannot_run_is_served_by_the_savedmodel_and_says_why(runs, case, why):
    from ottotrain.workflows import serve

    run, export, test, sub = runs[case]
    predict, schema = serve.load(export)
    assert predict.runtime.startswith(f"SavedModel (not TensorFlow Lite: {why}"), predict.runtime
    x, s = _inputs(test, schema)
    np.testing.assert_allclose(predict(x, s), pd.read_csv(sub).iloc[:, 1:].to_numpy(), atol=1e-5)


def test_a_lite_model_that_differs_is_not_used(runs, monkeypatch):
    from ottotrain.workflows import serve

    monkeypatch.setattr(serve, "LITE_TOLERANCE", -1.0)  # no difference is small enough
    predict, _ = serve.load(runs["knn-tfidf"][1])
    assert predict.runtime.startswith("SavedModel (TensorFlow Lite differs from it by "), predict.runtime


def test_an_export_without_the_float32_function_is_served_by_the_savedmodel(runs, tmp_path):
    """As an export made before it existed: the SavedModel serves it, and says why."""
    from ottotrain import engine
    from ottotrain.workflows import serve
    from ottotrain.workflows.export import open_graph

    run, export, test, sub = runs["knn-tfidf"]
    module, schema = open_graph(run)
    del module.serve_lite
    engine.export.save(module, tmp_path / "old")
    (tmp_path / "old" / "assets.extra").mkdir()
    (tmp_path / "old" / "assets.extra" / "ottotrain.json").write_text(schema.to_json())
    predict, _ = serve.load(tmp_path / "old")
    assert predict.runtime == (
        "SavedModel (not TensorFlow Lite: the export has no float32 function (made by an older ottotrain))"
    )
    x, s = _inputs(test, schema)
    np.testing.assert_allclose(predict(x, s), pd.read_csv(sub).iloc[:, 1:].to_numpy(), atol=1e-5)


def test_probe_rows_hold_zeros_counts_signed_values_gaps_and_strings(runs):
    from ottotrain.serving.schema import ModelSchema
    from ottotrain.workflows import serve

    schema = ModelSchema.read(runs["typed-knn-tabm"][1])
    x, s = serve.probe_rows(schema)
    assert x.dtype == np.float32 and x.shape == (48, 6) and s.shape == (48, 2)
    assert not x[0].any() and np.isnan(x).any() and (x < 0).any() and (x[2] >= 0).all()
    assert {"", "a"} <= set(s.ravel())
