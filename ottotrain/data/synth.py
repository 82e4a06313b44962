"""Synthetic Otto-shaped data: what the quickstart, the tests and CI train on.

Same schema as the Kaggle files (``id``, ``feat_1``..``feat_93`` non-negative
integer counts, mostly zeros, ``target`` ``Class_1``..``Class_9`` with Otto's class
imbalance). Each row mixes two sparse "topics" of Poisson rates and its class
depends on the pair (see ``_structure``): learnable, not linearly separable, so an
MLP clearly beats logistic regression, as on the real data.

Optionally (``categorical``), string columns ``cat_1``.. follow the ``feat_*`` ones:
values like ``c2_17`` with skewed (Zipf-like) frequencies whose distribution depends
on the class (see ``_category_structure``), so a model gains from them and rare
values are common enough for pooling to matter; a few test cells hold values never
seen in train. They come from their own random streams, so the rest of the files do
not change with them.
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
# Fraction of each categorical column's test cells holding a value never seen in train.
UNSEEN_FRACTION = 0.02
# How often a row's category is drawn from its class's preferences (else from the base).
CLASS_MIX = 0.5
_P_BITS = 40  # categorical draws use integer cumulative tables of this resolution (exact)


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


def _category_structure(cardinality, n_classes, column):
    """Per-class cumulative tables of one categorical column (fixed, not seeded by the user).

    Values have Zipf-like base frequencies (shuffled over the names) and each prefers one
    class (the classes are dealt out evenly over the values). A row of class ``c`` takes,
    with probability ``CLASS_MIX``, a value from the base frequencies restricted (mostly)
    to the values preferring ``c``, else one from the base frequencies. Returns int64
    ``[n_classes, cardinality]``: the cumulative probabilities times ``2**_P_BITS``, each
    row ending at exactly ``2**_P_BITS``.
    """
    rng = np.random.default_rng([24680, n_classes, cardinality, column])
    base = rng.permutation(1.0 / np.arange(1, cardinality + 1) ** 1.1)
    base /= base.sum()
    prefer = rng.permutation(np.arange(cardinality) % n_classes)
    affinity = 0.03 + (prefer[:, None] == np.arange(n_classes))  # [cardinality, n_classes]
    cond = base[:, None] * affinity
    cond /= cond.sum(axis=0)
    p = CLASS_MIX * cond + (1 - CLASS_MIX) * base[:, None]
    cdf = np.cumsum(p.T, axis=1)
    cdf /= cdf[:, -1:]
    return np.rint(cdf * 2.0**_P_BITS).astype(np.int64)


def category_codes(y, cardinality, column, seed, n_classes, unseen=0.0):
    """Codes (int32, one per row of class ``y``) of categorical column ``column`` (0-based).

    Codes ``< cardinality`` are the column's values; with ``unseen`` > 0, about that
    fraction of rows get a code ``>= cardinality`` instead (``n_unseen(cardinality)`` of
    them), a value that train files never hold. Drawn from the stream
    ``[seed, 11, column]`` without a loop over rows: an inverse-CDF look-up of every row
    at once in the classes' cumulative tables laid end to end.
    """
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng([seed, 11, column])
    one = np.int64(1) << _P_BITS
    table = _category_structure(cardinality, n_classes, column)
    flat = (table + np.arange(n_classes, dtype=np.int64)[:, None] * one).ravel()
    key = y * one + rng.integers(0, one, size=y.size, dtype=np.int64)
    codes = (np.searchsorted(flat, key, side="right") - y * cardinality).astype(np.int32)
    if unseen:
        new = np.flatnonzero(rng.random(y.size) < unseen)
        codes[new] = cardinality + rng.integers(0, n_unseen(cardinality), size=new.size)
    return codes


def n_unseen(cardinality):
    """How many distinct never-in-train values a test column of this cardinality can hold."""
    return max(2, cardinality // 10)


def category_names(cardinality, column):
    """The strings of codes ``0..cardinality + n_unseen - 1``: ``c{j}_{v}`` then ``c{j}_new{k}``."""
    j = column + 1
    return [f"c{j}_{v}" for v in range(cardinality)] + [f"c{j}_new{k}" for k in range(n_unseen(cardinality))]


def _categorical_columns(y, cardinalities, seed, gap_seed, n_classes, missing, unseen):
    """``(name, pyarrow dictionary array)`` of each categorical column; ``missing`` cells empty.

    Dictionary-encoded (int32 codes), so millions of rows cost 4 bytes a cell, not a string.
    """
    out = []
    for column, cardinality in enumerate(cardinalities):
        codes = category_codes(y, cardinality, column, seed, n_classes, unseen)
        gaps = None
        if missing:
            gaps = np.random.default_rng([gap_seed, 13, column]).random(codes.size) < missing
        array = pa.DictionaryArray.from_arrays(
            pa.array(codes, mask=gaps), pa.array(category_names(cardinality, column))
        )
        out.append((f"cat_{column + 1}", array))
    return out


def write_csv(path, ids, x, target=None, gaps=None, columns=()):
    """Write ``id,feat_1..,[extra columns..],[target]`` quickly (with pyarrow), atomically;
    ``gaps`` (a boolean matrix like ``x``) marks the cells written empty; ``columns`` are
    ``(name, pyarrow array)`` pairs written after the features (nulls written empty)."""
    n_features = x.shape[1]
    names = ["id"] + [f"feat_{j + 1}" for j in range(n_features)]
    cols = [pa.array(ids)] + [
        pa.array(x[:, j], mask=None if gaps is None else gaps[:, j]) for j in range(n_features)
    ]
    for name, array in columns:
        names.append(name)
        cols.append(array)
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


def make_data(
    out_dir,
    rows=20000,
    seed=0,
    test_rows=None,
    n_classes=9,
    n_features=N_FEATURES,
    missing=0.0,
    categorical: tuple[int, ...] = (),
):
    """Write synthetic ``train.csv`` and ``test.csv`` into ``out_dir``.

    Args:
        out_dir: folder, created if needed.
        rows: training rows.
        seed: random seed; the same seed gives the same files.
        test_rows: test rows (default: rows // 2).
        missing: the fraction of feature cells left empty, categorical ones included (the
            values of the others do not change with it).
        categorical: the cardinalities (each >= 2) of string columns ``cat_1``.. written
            after the ``feat_*`` columns (before ``target``): column ``j`` holds values
            ``c{j}_{v}``, skewed in frequency and informative about the class; in
            ``test.csv`` about ``UNSEEN_FRACTION`` of its cells hold values never seen in
            train (``c{j}_new{k}``). The other columns do not change with them; ``()``
            gives exactly the files without them.

    Returns:
        (train path, test path).
    """
    categorical = tuple(categorical)
    for c in categorical:
        if isinstance(c, bool) or int(c) != c or c < 2:
            raise ValueError(f"categorical cardinalities must be integers >= 2, got {categorical}")
    categorical = tuple(int(c) for c in categorical)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_rows = rows // 2 if test_rows is None else test_rows
    x, y = make_arrays(rows, seed, n_classes, n_features)
    labels = np.array([f"Class_{c + 1}" for c in range(n_classes)])[y]
    train = out / "train.csv"
    cats = _categorical_columns(y, categorical, seed, seed, n_classes, missing, unseen=0.0)
    write_csv(train, np.arange(1, rows + 1), x, labels, _gaps(x.shape, missing, seed), cats)
    test_seed = seed + 1_000_003
    xt, yt = make_arrays(max(test_rows, 1), test_seed, n_classes, n_features)
    test = out / "test.csv"
    xt, yt = xt[:test_rows], yt[:test_rows]
    cats = _categorical_columns(yt, categorical, test_seed, seed + 1, n_classes, missing, UNSEEN_FRACTION)
    write_csv(test, np.arange(1, test_rows + 1), xt, gaps=_gaps(xt.shape, missing, seed + 1), columns=cats)
    return train, test
