"""The runs that test_export.py and test_serve.py export and serve, trained once per test session.

- ``typed-knn-tabm``: a fit run with typed columns (cat_1 one-hot, cat_2 embedded, missing
  cells), KNN features, TF-IDF, anscombe, and a TabM-style ensemble of 2 opened by a
  PiecewiseLinearEmbedding (its bins in the model);
- ``cv``: a 2-fold cv run on the numeric columns (quantile transform, minmax scaling), no KNN
  member;
- ``knn-tfidf``: a fit run on the numeric columns only (missing cells), with KNN features in
  the tfidf space and the non-zero count column: the one ``serve`` computes with TensorFlow Lite;
- ``1.0-cv``: tests/data's cv run made by ottotrain 1.0 (preprocess formats 2 and 3, two of
  its four members with KNN features).

Each is exported (``ottotrain export``) and predicted (``ottotrain predict``) on its test file.
"""

import csv
import shutil

import yaml

from tests.conftest import ROOT, run_cli

V1 = ROOT / "tests" / "data" / "runs-1.0"
DENSE = [
    {"Dense": {"units": 8, "activation": "relu"}},
    {"Dense": {"units": "n_classes"}},
    {"Activation": "softmax"},
]
NUMERIC = {"cat_1": "drop", "cat_2": "drop"}  # the generated data's numeric columns only
TRAIN = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 1, "batch_size": 64}
RUNS = {
    "typed-knn-tabm": (
        "fit",
        {"knn": {"k": [1, 4]}, "transform": "anscombe", "tfidf": True, "categorical": {"one_hot_max": 6}},
        {
            "ensemble": {"k": 2},
            "layers": [{"PiecewiseLinearEmbedding": {"bins": 6, "d_embedding": 4}}, *DENSE],
        },
    ),
    "cv": (
        "cv",
        {"transform": "quantile", "scaling": "minmax", "columns": NUMERIC},
        {"layers": DENSE},
    ),
    "knn-tfidf": (
        "fit",
        {
            "knn": {"k": [1, 4], "space": "tfidf"},
            "nonzero_count": True,
            "columns": NUMERIC,
        },
        {"layers": DENSE},
    ),
}
_CACHE = {}


def _train(tmp, data, name, kind, data_cfg, model):
    cfg = {
        "name": name,
        "seed": 1,
        "data": {"train": str(data / "train.csv"), "test": str(data / "test.csv"), **data_cfg},
        "model": model,
        "train": TRAIN,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    extra = ["--folds", "2"] if kind == "cv" else []
    r = run_cli(kind, path, "--run-dir", tmp / "runs" / name, "-q", *extra)
    assert r.exit_code == 0, r.output
    return tmp / "runs" / name


def trained(tmp_path_factory) -> dict:
    """{case: (run dir, export dir, test file, predict's submission)}."""
    if _CACHE:
        return _CACHE
    from ottotrain.data.synth import make_data

    tmp = tmp_path_factory.mktemp("export-runs")
    data = tmp / "data"
    make_data(
        data, rows=300, seed=3, test_rows=40, n_classes=3, n_features=6, missing=0.05, categorical=(3, 40)
    )
    cases = {name: (_train(tmp, data, name, *spec), data / "test.csv") for name, spec in RUNS.items()}
    shutil.copytree(V1 / "cv", tmp / "v1-cv")
    cases["1.0-cv"] = (tmp / "v1-cv", V1 / "unlabelled.csv")
    (tmp / "exports").mkdir()
    for name, (run, test) in cases.items():
        r = run_cli("export", run, tmp / "exports" / name)
        assert r.exit_code == 0, r.output
        sub = tmp / f"{name}-predict.csv"
        assert run_cli("predict", run, test, "-o", sub).exit_code == 0
        _CACHE[name] = (run, tmp / "exports" / name, test, sub)
    return _CACHE


def request_rows(test, schema):
    """The test file's rows as JSON instances: numbers (null where empty) and strings."""
    kinds = {c.name: c.kind for c in schema.columns}
    with open(test, newline="") as f:
        return [
            {
                k: (v if kinds.get(k) != "numeric" else (float(v) if v else None))
                for k, v in row.items()
                if k in kinds or k == "id"
            }
            for row in csv.DictReader(f)
        ]
