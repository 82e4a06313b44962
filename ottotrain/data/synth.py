"""Synthetic Otto-shaped data: what the quickstart, the tests and CI train on.

Same schema as the Kaggle files (``id``, ``feat_1``..``feat_93`` non-negative
integer counts, mostly zeros, ``target`` ``Class_1``..``Class_9`` with Otto's class
imbalance). Each row mixes two sparse "topics" of Poisson rates and its class
depends on the pair (see ``_structure``): learnable, not linearly separable, so an
MLP clearly beats logistic regression, as on the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ottotrain.io import atomic_path

# Train class counts of the real Otto data, used as class priors.
OTTO_CLASS_COUNTS = np.array([1929, 16122, 8004, 2691, 2739, 14135, 2839, 8464, 4955])
N_FEATURES = 93
N_TOPICS = 12


def _structure(n_classes, n_features):
    """Topic rate vectors and the class of each topic pair (fixed, not seeded by the user).

    A row mixes two "topics" (sparse Poisson rate vectors); its class is a function
    of the *pair*, assigned at random. Each topic appears in pairs of several
    classes, so single features are ambiguous evidence and a linear model cannot
    represent the pair -> class map: interactions matter, as on Otto.
    """
    rng = np.random.default_rng(12345 + n_classes * 1000 + n_features)
    topics = np.full((N_TOPICS, n_features), 0.02)
    for t in range(N_TOPICS):
        active = rng.choice(n_features, size=min(n_features, 14), replace=False)
        topics[t, active] += rng.gamma(1.2, 0.8, size=active.size)
    pairs = np.array([(a, b) for a in range(N_TOPICS) for b in range(a, N_TOPICS)])
    rng.shuffle(pairs)
    pair_class = np.arange(len(pairs)) % n_classes  # every class gets several pairs
    return topics, pairs, pair_class


def make_arrays(rows, seed=0, n_classes=9, n_features=N_FEATURES):
    """Return (features int32 [rows, n_features], labels int [rows]), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    # The structure depends on a fixed seed so that train and test files made with
    # different seeds come from the same distribution.
    topics, pairs, pair_class = _structure(n_classes, n_features)
    prior = (OTTO_CLASS_COUNTS if n_classes == 9 else np.ones(n_classes)).astype(float)
    y = rng.choice(n_classes, size=rows, p=prior / prior.sum())
    # Pick one of the class's pairs uniformly.
    by_class = [np.flatnonzero(pair_class == c) for c in range(n_classes)]
    counts = np.array([len(b) for b in by_class])
    pick = (rng.random(rows) * counts[y]).astype(int)
    offsets = np.zeros(n_classes + 1, dtype=int)
    offsets[1:] = np.cumsum(counts)
    flat = np.concatenate(by_class)
    pair = pairs[flat[offsets[y] + pick]]
    mix = rng.uniform(0.3, 0.7, size=rows)[:, None]
    size = rng.gamma(2.0, 0.8, size=rows)[:, None]  # rows differ in total activity
    x = np.empty((rows, n_features), dtype=np.int32)
    chunk = 200_000  # bounded memory for millions of rows
    for s in range(0, rows, chunk):
        sl = slice(s, s + chunk)
        lam = (mix[sl] * topics[pair[sl, 0]] + (1 - mix[sl]) * topics[pair[sl, 1]]) * size[sl]
        x[sl] = rng.poisson(lam)
    return x, y


def write_csv(path, ids, x, target=None, gaps=None):
    """Write ``id,feat_1..,[target]`` quickly (with pyarrow), atomically; ``gaps`` (a boolean
    matrix like ``x``) marks the cells written empty."""
    n_features = x.shape[1]
    names = ["id"] + [f"feat_{j + 1}" for j in range(n_features)]
    cols = [pa.array(ids)] + [
        pa.array(x[:, j], mask=None if gaps is None else gaps[:, j]) for j in range(n_features)
    ]
    if target is not None:
        cols.append(pa.array(target))
        names.append("target")
    table = pa.Table.from_arrays(cols, names=names)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write((",".join(names) + "\n").encode())  # by hand: pyarrow would quote the header
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def _gaps(shape, fraction: float, seed: int):
    """Cells to leave empty, from their own random stream: the other values stay the same."""
    if not fraction:
        return None
    return np.random.default_rng([seed, 7]).random(shape) < fraction


def make_data(out_dir, rows=20000, seed=0, test_rows=None, n_classes=9, n_features=N_FEATURES, missing=0.0):
    """Write synthetic ``train.csv`` and ``test.csv`` into ``out_dir``.

    Args:
        out_dir: folder, created if needed.
        rows: training rows.
        seed: random seed; the same seed gives the same files.
        test_rows: test rows (default: rows // 2).
        missing: the fraction of feature cells left empty (the values of the others do not
            change with it).

    Returns:
        (train path, test path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_rows = rows // 2 if test_rows is None else test_rows
    x, y = make_arrays(rows, seed, n_classes, n_features)
    labels = np.array([f"Class_{c + 1}" for c in range(n_classes)])[y]
    train = out / "train.csv"
    write_csv(train, np.arange(1, rows + 1), x, labels, _gaps(x.shape, missing, seed))
    xt, _ = make_arrays(max(test_rows, 1), seed + 1_000_003, n_classes, n_features)
    test = out / "test.csv"
    xt = xt[:test_rows]
    write_csv(test, np.arange(1, test_rows + 1), xt, gaps=_gaps(xt.shape, missing, seed + 1))
    return train, test
