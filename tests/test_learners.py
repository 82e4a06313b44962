"""The learners (ottotrain/learners/): LightGBM, nearest-neighbour votes, logistic regression."""

import json

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression

from ottotrain import learners
from ottotrain.config.stack_section import KnnMember, LightGBMMember, LogisticLevel2
from ottotrain.errors import ConfigError, RunError
from ottotrain.learners import neighbours
from ottotrain.metrics import log_loss

N_CLASSES = 3
PARAMS = {
    "lightgbm": LightGBMMember(
        learning_rate=0.2, num_leaves=7, min_child_samples=5, max_rounds=300, early_stopping_rounds=15
    ),
    "knn": KnnMember(k=8, space="raw"),
    "logistic": LogisticLevel2(C=1.0),
}


@pytest.fixture(scope="module")
def separable():
    """Three well-separated classes, split into fit, stop and test rows."""
    x, y = make_classification(
        500, 12, n_informative=6, n_redundant=0, n_classes=N_CLASSES, class_sep=3.0, random_state=0
    )
    return (x[:300], y[:300]), (x[300:380], y[300:380]), (x[380:], y[380:])


def _fitted(kind, data, seed=1, threads=1, params=None):
    (x, y), (xs, ys), _ = data
    learner = learners.make(kind, params or PARAMS[kind], n_classes=N_CLASSES, seed=seed, threads=threads)
    return learner, learner.fit(x, y, xs, ys)


def _prior_loss(y_fit, y_test):
    prior = np.bincount(y_fit, minlength=N_CLASSES) / len(y_fit)
    return log_loss(y_test, np.tile(prior, (len(y_test), 1)))


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_each_kind_learns_a_separable_problem(kind, separable):
    learner, info = _fitted(kind, separable)
    (_, y), _, (xt, yt) = separable
    p = learner.predict_proba(xt)
    assert p.dtype == np.float64 and p.shape == (len(xt), N_CLASSES)
    assert (p > 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert log_loss(yt, p) < 0.35 * _prior_loss(y, yt)
    assert info.seconds >= 0


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_save_and_load_give_the_same_predictions(kind, separable, tmp_path):
    learner, _ = _fitted(kind, separable)
    xt = separable[2][0]
    learner.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "learner.json").read_text())
    assert manifest["kind"] == kind and manifest["params"] == PARAMS[kind].model_dump(mode="json")
    again = learners.load(tmp_path / "m")
    assert type(again) is type(learner)
    np.testing.assert_allclose(again.predict_proba(xt), learner.predict_proba(xt), rtol=0, atol=1e-12)
    assert not list((tmp_path / "m").glob(".*")), "a temporary file was left behind"


def test_make_takes_the_params_as_a_dict_too(separable):
    a, _ = _fitted("lightgbm", separable)
    b, _ = _fitted("lightgbm", separable, params=PARAMS["lightgbm"].model_dump())
    xt = separable[2][0]
    np.testing.assert_array_equal(a.predict_proba(xt), b.predict_proba(xt))


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_rows_of_another_width_are_refused(kind, separable):
    learner, _ = _fitted(kind, separable)
    with pytest.raises(ValueError, match=r"needs rows of 12 features; got shape \(5, 11\)"):
        learner.predict_proba(separable[2][0][:5, :11])


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_make_without_params_takes_the_defaults(kind):
    learner = learners.make(kind, None, n_classes=N_CLASSES, seed=0, threads=1)
    assert learner.params == type(PARAMS[kind])()


def test_lightgbm_is_deterministic_for_a_seed(separable):
    xt = separable[2][0]
    a, ia = _fitted("lightgbm", separable, seed=7, threads=2)
    b, ib = _fitted("lightgbm", separable, seed=7, threads=2)
    c, _ = _fitted("lightgbm", separable, seed=8, threads=2)
    assert ia.rounds == ib.rounds
    np.testing.assert_array_equal(a.predict_proba(xt), b.predict_proba(xt))
    assert not np.array_equal(a.predict_proba(xt), c.predict_proba(xt))  # bagging follows the seed


def test_lightgbm_stops_early_on_noise():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 5)), rng.integers(0, N_CLASSES, 400)
    params = LightGBMMember(learning_rate=0.3, num_leaves=15, max_rounds=400, early_stopping_rounds=10)
    learner = learners.make("lightgbm", params, n_classes=N_CLASSES, seed=0, threads=1)
    info = learner.fit(x[:300], y[:300], x[300:], y[300:])
    assert info.rounds < 100
    assert learner.booster.current_iteration() == info.rounds  # only the kept rounds remain
    assert info.stop_log_loss == pytest.approx(log_loss(y[300:], learner.predict_proba(x[300:])))


def test_lightgbm_without_stop_rows_runs_every_round(separable):
    (x, y), _, _ = separable
    params = LightGBMMember(num_leaves=4, max_rounds=12)
    learner = learners.make("lightgbm", params, n_classes=N_CLASSES, seed=0, threads=1)
    info = learner.fit(x, y)
    assert info.rounds == 12 and info.stop_log_loss is None


def _brute_votes(x_ref, y_ref, q, k, weights, n_classes, exclude_self=False):
    """The definition, one query row at a time, in float64: the k nearest by distance, then
    by reference row number."""
    prior = (np.bincount(y_ref, minlength=n_classes) + 1) / (len(y_ref) + n_classes)
    out = []
    for i, row in enumerate(q):
        d2 = ((x_ref - row) ** 2).sum(axis=1)
        if exclude_self:
            d2[i] = np.inf
        near = np.argsort(d2, kind="stable")[: min(k, len(d2) - exclude_self)]
        d = np.sqrt(d2)
        w = np.ones(len(near)) if weights == "uniform" else 1 / (d[near] + neighbours.EPS)
        votes = np.bincount(y_ref[near], w, minlength=n_classes)
        votes *= len(near) / votes.sum()
        out.append((votes + prior) / (len(near) + 1))
    return np.array(out)


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(70, 6)).astype(np.float32)  # continuous: no two distances tie
    return x, rng.integers(0, 4, 70), rng.normal(size=(25, 6)).astype(np.float32)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_votes_equal_a_brute_force_search(points, weights):
    x, y, q = points
    ks = [1, 3, 10, 200]  # 200 > the 70 reference rows: all of them vote
    got = learners.knn_votes(x, y, q, ks, "raw", weights, 4)
    assert sorted(got) == ks
    for k in ks:
        np.testing.assert_allclose(
            got[k], _brute_votes(x.astype(float), y, q.astype(float), k, weights, 4), rtol=1e-5
        )


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_votes_exclude_self_leave_each_row_out(points, weights):
    x, y, _ = points
    got = learners.knn_votes(x, y, x, [1, 5, 69, 70], "raw", weights, 4, exclude_self=True)
    for k in (1, 5, 69, 70):
        want = _brute_votes(x.astype(float), y, x.astype(float), k, weights, 4, exclude_self=True)
        np.testing.assert_allclose(got[k], want, rtol=1e-5)
    np.testing.assert_array_equal(got[69], got[70])  # 69 other rows: k = 70 uses the same 69


def test_knn_votes_in_blocks_and_threads_equal_one_block(points, monkeypatch):
    x, y, _ = points
    q = np.random.default_rng(5).normal(size=(300, 6)).astype(np.float32)
    whole = learners.knn_votes(x, y, q, [2, 9], "raw", "distance", 4, threads=1)
    monkeypatch.setattr(neighbours, "BLOCK", 16)
    monkeypatch.setattr(neighbours, "PAIRS", 100)
    blocks = learners.knn_votes(x, y, q, [2, 9], "raw", "distance", 4, threads=2)
    for k in (2, 9):
        np.testing.assert_array_equal(blocks[k], whole[k])


@pytest.fixture(scope="module")
def ties():
    """Small counts: many reference rows at the same distance from a query, and duplicates."""
    rng = np.random.default_rng(6)
    x = rng.poisson(0.4, size=(90, 5)).astype(np.float32)
    return x, rng.integers(0, 3, 90), rng.poisson(0.4, size=(30, 5)).astype(np.float32)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_ties_go_to_the_lower_reference_row(ties, weights, exclude_self):
    x, y, q = ties
    q = x if exclude_self else q
    ks = [1, 4, 16, 60]
    got = learners.knn_votes(x, y, q, ks, "raw", weights, 3, exclude_self=exclude_self)
    for k in ks:
        want = _brute_votes(x.astype(float), y, q.astype(float), k, weights, 3, exclude_self)
        np.testing.assert_allclose(got[k], want, rtol=1e-12, atol=0)


def test_knn_neighbours_do_not_depend_on_the_other_k_or_rows(ties, monkeypatch):
    x, y, q = ties
    many = learners.knn_votes(x, y, q, [3, 40], "log1p", "distance", 3)[3]
    alone = learners.make(
        "knn", {"k": 3, "space": "log1p", "weights": "distance"}, n_classes=3, seed=0, threads=1
    )
    alone.fit(x, y)
    np.testing.assert_array_equal(alone.predict_proba(q), many)
    monkeypatch.setattr(neighbours, "BLOCK", 7)  # other rows share each matrix product
    np.testing.assert_array_equal(alone.predict_proba(q[::-1])[::-1], many)


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(4)
    x = rng.poisson(rng.uniform(0.2, 3, size=12), size=(80, 12)).astype(np.float32)
    x[5] = 0  # an all-zero row: TF-IDF leaves it at zero
    return x, rng.integers(0, 3, 80), rng.poisson(1.0, size=(20, 12)).astype(np.float32)


@pytest.mark.parametrize(
    "space, transform",
    [
        ("log1p", lambda ref, x: np.log1p(x)),
        ("tfidf", lambda ref, x: TfidfTransformer().fit(ref).transform(x).toarray()),
    ],
)
def test_knn_spaces_measure_distances_where_they_say(counts, space, transform):
    x, y, q = counts
    got = learners.knn_votes(x, y, q, [4], space, "distance", 3)[4]
    want = _brute_votes(transform(x, x).astype(float), y, transform(x, q).astype(float), 4, "distance", 3)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_knn_one_neighbour_shares_one_pseudo_vote_by_the_prior(counts):
    x, y, _ = counts
    p = learners.knn_votes(x, y, x[:10], [1], "raw", "uniform", 3)[1]
    prior = (np.bincount(y, minlength=3) + 1) / (len(y) + 3)
    # each row's nearest row is itself (distance 0), so its own label has the vote
    np.testing.assert_allclose(p, (np.eye(3)[y[:10]] + prior) / 2)


def test_knn_saves_counts_compactly(counts, tmp_path):
    x, y, q = counts
    learner = learners.make("knn", {"k": 5, "space": "tfidf"}, n_classes=3, seed=0, threads=1)
    learner.fit(x, y, None, None)
    learner.save(tmp_path)
    with np.load(tmp_path / "reference.npz") as f:
        assert f["rows"].dtype == np.uint8
        np.testing.assert_array_equal(f["rows"], x)
    np.testing.assert_array_equal(learners.load(tmp_path).predict_proba(q), learner.predict_proba(q))


def test_logistic_predicts_what_scikit_learn_does(separable):
    (x, y), _, (xt, _) = separable
    learner, info = _fitted("logistic", separable)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(learner.predict_proba(xt), ref.predict_proba(xt), rtol=1e-9, atol=1e-12)
    assert info.rounds >= 1


def test_logistic_gives_an_absent_class_the_floor_and_keeps_two_classes_exact(separable):
    (x, y), _, (xt, _) = separable
    two = y < 2
    learner = learners.make("logistic", {}, n_classes=4, seed=0, threads=1)
    learner.fit(x[two], y[two], None, None)
    p = learner.predict_proba(xt)
    ref = LogisticRegression(max_iter=1000).fit(x[two], y[two]).predict_proba(xt)
    np.testing.assert_allclose(p[:, :2], ref, atol=1e-12)
    assert (p[:, 2:] > 0).all() and (p[:, 2:] < 1e-14).all()


@pytest.mark.parametrize(
    "kind, params, message",
    [
        ("xgboost", {}, "unknown learner kind 'xgboost'; use one of lightgbm, knn, logistic"),
        ("lightgmb", {}, "(did you mean 'lightgbm'?)"),
        (
            "lightgbm",
            {"num_leaves": 1},
            "lightgbm learner: num_leaves: Input should be greater than or equal to 2",
        ),
        ("knn", {"k": [2, 8]}, "knn learner: takes one k, got [2, 8]"),
        ("logistic", {"C": 1, "penalty": "l1"}, "logistic learner: penalty: Extra inputs are not permitted"),
    ],
)
def test_make_refuses_bad_kinds_and_params(kind, params, message):
    with pytest.raises(ConfigError) as e:
        learners.make(kind, params, n_classes=3, seed=0, threads=1)
    assert message in str(e.value) and "\n" not in str(e.value)


def _edit_manifest(change):
    def edit(folder):
        path = folder / "learner.json"
        m = json.loads(path.read_text())
        change(m)
        path.write_text(json.dumps(m))

    return edit


def _write(name, text):
    return lambda folder: (folder / name).write_text(text)


DAMAGE = [
    ("no manifest", lambda f: (f / "learner.json").unlink(), "learner.json: not found"),
    ("not JSON", _write("learner.json", "{kind: lightgbm"), "learner.json: not valid JSON"),
    ("a list", _write("learner.json", "[1, 2]"), "learner.json: must hold a JSON object, got list"),
    (
        "unknown kind",
        _edit_manifest(lambda m: m.update(kind="lightgmb")),
        "unknown learner kind 'lightgmb' (did you mean 'lightgbm'?)",
    ),
    ("no kind", _edit_manifest(lambda m: m.pop("kind")), "'kind' must be a string (missing)"),
    (
        "n_classes text",
        _edit_manifest(lambda m: m.update(n_classes="3")),
        "'n_classes' must be an integer (got '3')",
    ),
    (
        "newer format",
        _edit_manifest(lambda m: m.update(format=99)),
        "format 99 is newer than this ottotrain reads",
    ),
    (
        "bad params",
        _edit_manifest(lambda m: m["params"].update(num_leaves=0)),
        "params.num_leaves: Input should be greater",
    ),
    ("one class", _edit_manifest(lambda m: m.update(n_classes=1)), "n_classes must be at least 2"),
    ("no model", lambda f: (f / "model.txt").unlink(), "model.txt: cannot be read"),
    ("damaged model", _write("model.txt", "tree\nnonsense"), "model.txt: cannot be read"),
    ("other classes", _edit_manifest(lambda m: m.update(n_classes=4)), "a model of 3 classes, not 4"),
]


@pytest.mark.parametrize("what, damage, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_learner_is_refused_in_one_line(what, damage, message, separable, tmp_path):
    learner, _ = _fitted("lightgbm", separable)
    learner.save(tmp_path)
    damage(tmp_path)
    with pytest.raises(RunError) as e:
        learners.load(tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "kind, file, message",
    [
        ("knn", "reference.npz", "reference.npz: cannot be read"),
        ("logistic", "logistic.npz", "logistic.npz: cannot be read"),
    ],
)
def test_damaged_arrays_are_refused_in_one_line(kind, file, message, separable, tmp_path):
    learner, _ = _fitted(kind, separable)
    learner.save(tmp_path)
    (tmp_path / file).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(RunError, match=message):
        learners.load(tmp_path)
