"""Loading and encoding a table with categorical columns: ottotrain against pandas + scikit-learn.

    python bench/categorical_load.py [DIR] [ROWS]        # writes DIR/train.csv, DIR/test.csv once
                                                         # (no DIR: a scratch folder; ROWS 1,000,000)
    python bench/categorical_load.py DIR ROWS ottotrain  # one measurement (what the driver runs)
    python bench/categorical_load.py DIR ROWS sklearn
    python bench/categorical_load.py --quick             # 200,000 rows
    python bench/categorical_load.py --smoke             # 2,000 rows, one round

The table: ``make-data`` with 20 count features and 10 categorical columns of 3 to 20,000
values (5 % of all cells empty, unseen values in test). Both sides do the same work: read
train and test, learn from the training rows a median and a scale per number and a
vocabulary per category (rarer than 5 rows: the 'other' bucket), one-hot the columns of at
most 10 categories and give the others an integer index, and encode both files.

- ottotrain: ``load_train`` + ``load_test`` (Arrow, typed), ``Preprocessor.fit`` + ``transform``.
- pandas + scikit-learn: ``pd.read_csv`` (its default C parser) and a ``ColumnTransformer``
  of ``SimpleImputer(median)`` + ``StandardScaler`` for the numbers (plus missing
  indicators), ``OneHotEncoder(min_frequency=5, handle_unknown="infrequent_if_exist")`` for
  the small columns and ``OrdinalEncoder(min_frequency=5, ...)`` for the large ones.

Each measurement is a fresh process (peak RSS is its own); the driver alternates the two
sides, 3 rounds, and prints each side's seconds and peak RSS, then the medians and ratio.
Then the peak RSS of ``ottotrain fit`` (1 epoch of a 2 x 256 MLP) on the same files. Writes its
block of bench/results/side_by_side.md.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path

import common

CARDINALITIES = (3, 5, 8, 10, 30, 100, 500, 2000, 5000, 20000)
ONE_HOT_MAX = 10


def measure(d: Path, side: str) -> dict:
    t0 = time.perf_counter()
    if side == "ottotrain":
        from ottotrain.config import DataConfig
        from ottotrain.data import load_test, load_train
        from ottotrain.features import Preprocessor

        t0 = time.perf_counter()  # after the imports, as for pandas below
        cfg = DataConfig(train=str(d / "train.csv"), test=str(d / "test.csv"))
        train = load_train(cfg)
        _, xt = load_test(
            d / "test.csv", "id", "target", train.features, allow_missing=True, types=train.types
        )
        pre = Preprocessor.fit(train.x, cfg, train.features, train.classes, train.y, train.types)
        a, b = pre.transform(train.x, overwrite=True), pre.transform(xt, overwrite=True)
        shape = (a.shape, b.shape)
    else:
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

        t0 = time.perf_counter()
        tr, te = pd.read_csv(d / "train.csv"), pd.read_csv(d / "test.csv")
        cats = [c for c in tr.columns if c.startswith("cat_")]
        nums = [c for c in tr.columns if c.startswith("feat_")]
        small = [c for c, k in zip(cats, CARDINALITIES) if k + 2 <= ONE_HOT_MAX]
        large = [c for c in cats if c not in small]
        ct = ColumnTransformer(
            [
                (
                    "num",
                    make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
                    nums,
                ),
                (
                    "small",
                    OneHotEncoder(min_frequency=5, handle_unknown="infrequent_if_exist", sparse_output=False),
                    small,
                ),
                (
                    "large",
                    OrdinalEncoder(
                        min_frequency=5,
                        handle_unknown="use_encoded_value",
                        unknown_value=-1,
                        encoded_missing_value=-2,
                    ),
                    large,
                ),
            ]
        )
        a = ct.fit_transform(tr[nums + cats])
        b = ct.transform(te[nums + cats])
        shape = (a.shape, b.shape)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "seconds": round(seconds, 2), "peak_mib": round(peak), "shape": str(shape)}


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("rows", nargs="?", type=int)
    ap.add_argument("side", nargs="?", choices=("ottotrain", "sklearn"))
    a = ap.parse_args(argv)
    if a.side:
        print(json.dumps(measure(a.dir, a.side)))
        return
    r = common.Run.start(__file__, argv, a)
    rows = a.rows or r.pick(1_000_000, 200_000, 2_000)
    with common.scratch() as work:
        lines = compare(a.dir or work, rows, r.pick(3, 3, 1))
    print("\n".join(lines))
    r.record("side_by_side", f"Categorical columns: {rows:,} rows, ottotrain against pandas + scikit-learn",
             "\n".join(f"- {x}" for x in lines))  # fmt: skip


def compare(d: Path, rows: int, rounds: int) -> list[str]:
    """Each side in a fresh process, alternated, ``rounds`` times; then ``ottotrain fit``'s peak RSS."""
    if not (d / "train.csv").exists():
        from ottotrain.data.synth import make_data

        make_data(d, rows=rows, test_rows=rows // 4, n_features=20, categorical=CARDINALITIES, missing=0.05)
    got = {"ottotrain": [], "sklearn": []}
    lines = []
    for _ in range(rounds):
        for side in got:
            _, _, out, _ = common.timed([sys.executable, __file__, str(d), str(rows), side])
            got[side].append(json.loads(out))
            lines.append(out.strip())
    med = {s: statistics.median(m["seconds"] for m in v) for s, v in got.items()}
    mem = {s: max(m["peak_mib"] for m in v) for s, v in got.items()}
    lines.append(
        f"median seconds: ottotrain {med['ottotrain']:.2f}, pandas + sklearn {med['sklearn']:.2f}, "
        f"ratio {med['ottotrain'] / med['sklearn']:.2f}; peak RSS {mem['ottotrain']} / {mem['sklearn']} MiB"
    )
    cfg = d / "fit.yaml"
    cfg.write_text(
        "data: {train: train.csv, test: test.csv}\n"
        "model:\n  layers:\n    - Dense: {units: 256, activation: relu}\n"
        "    - Dense: {units: 256, activation: relu}\n"
        "    - Dense: {units: n_classes}\n    - Activation: softmax\n"
        "train: {optimizer: {name: adam}, epochs: 1, batch_size: 512}\n"
    )
    wall, peak, _, _ = common.timed(common.ottotrain("fit", cfg, "--runs-root", d / "runs", "-q"))
    lines.append(f"ottotrain fit (1 epoch, 2 x 256): {wall:.0f} s, peak RSS {peak:.0f} MiB")
    return lines


if __name__ == "__main__":
    main()
