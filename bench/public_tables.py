"""Public tables with text columns: configs/mlp.yaml (or another config) against LightGBM, same split.

    python bench/public_tables.py DIR [CONFIG]
    python bench/public_tables.py --smoke    # one generated table with categorical columns, 2 epochs

DIR holds public CSVs that the project does not ship (bench/results/side_by_side.md says where they
come from). For each table listed in TABLES that is in DIR: a stratified 80/20 split
(seed 0) into DIR/split/<name>/train.csv, test.csv (no target) and holdout.csv (the test
rows with their target); then, with nothing but --set of paths, id and target,
``ottotrain fit CONFIG`` (default configs/mlp.yaml) and ``ottotrain evaluate`` on the
holdout; and LightGBM on the same training rows (pandas categories, 15 % of the training
rows for early stopping, as fit holds out 15 % for its best epoch). Prints one row per
table: rows, columns (categorical), ottotrain's and LightGBM's holdout log loss, ratio.
Needs lightgbm (the ``bench`` extra). Writes its block of bench/results/side_by_side.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import common
import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
# (file, target column, columns removed before the split: a copy of the target)
TABLES = [
    ("diamonds.csv", "cut", []),
    ("penguins.csv", "species", []),
    ("mpg.csv", "origin", []),
    ("titanic.csv", "survived", ["alive"]),
    ("taxis.csv", "payment", []),
]


def split(src: Path, target: str, drop, out: Path):
    df = pd.read_csv(src).drop(columns=drop)
    df = df[df[target].notna()].reset_index(drop=True)  # unlabelled rows are not for scoring
    tr, te = train_test_split(df, test_size=0.2, random_state=0, stratify=df[target])
    out.mkdir(parents=True, exist_ok=True)
    tr.to_csv(out / "train.csv", index=False)
    te.drop(columns=[target]).to_csv(out / "test.csv", index=False)
    te.to_csv(out / "holdout.csv", index=False)
    return tr, te


def ottotrain(out: Path, target: str, config: Path, extra=()) -> tuple[float, float]:
    sets = [
        f"data.train={out / 'train.csv'}",
        f"data.test={out / 'test.csv'}",
        "data.id_column=null",
        f"data.target_column={target}",
        *extra,
    ]
    cmd = common.ottotrain("fit", config, "--runs-root", out / "runs")
    wall, _, stdout, stderr = common.timed([*cmd, *(a for s in sets for a in ("--set", s))])
    run = stdout.strip().splitlines()[-1]
    for line in stderr.splitlines():
        if line.startswith("Warning"):
            print("   ", line[:200])
    _, _, ev, _ = common.timed(common.ottotrain("evaluate", run, out / "holdout.csv", "--json"))
    return json.loads(ev)["log_loss"], wall


def lightgbm(tr: pd.DataFrame, te: pd.DataFrame, target: str) -> tuple[float, float]:
    classes = sorted(tr[target].astype(str).unique())
    y_tr = pd.Categorical(tr[target].astype(str), categories=classes).codes
    y_te = pd.Categorical(te[target].astype(str), categories=classes).codes
    x_tr, x_te = tr.drop(columns=[target]).copy(), te.drop(columns=[target]).copy()
    for c in x_tr.columns:
        if not pd.api.types.is_numeric_dtype(x_tr[c]) or pd.api.types.is_bool_dtype(x_tr[c]):
            cats = pd.Categorical(x_tr[c].astype(str)).categories
            x_tr[c] = pd.Categorical(x_tr[c].astype(str), categories=cats)
            seen = x_te[c].astype(str).where(x_te[c].astype(str).isin(cats))  # unseen: missing
            x_te[c] = pd.Categorical(seen, categories=cats)
    a, b, ya, yb = train_test_split(x_tr, y_tr, test_size=0.15, random_state=0, stratify=y_tr)
    t0 = time.perf_counter()
    model = lgb.LGBMClassifier(n_estimators=2000, learning_rate=0.05, verbose=-1, random_state=0)
    model.fit(a, ya, eval_X=(b,), eval_y=(yb,), callbacks=[lgb.early_stopping(50, verbose=False)])
    p = model.predict_proba(x_te)
    return log_loss(y_te, p, labels=np.arange(len(classes))), time.perf_counter() - t0


def compare(src: Path, tables, config: Path, extra=()) -> list[tuple]:
    rows = []
    print(f"{'table':<10} {'rows':>6} {'cols':>9} {'ottotrain':>10} {'LightGBM':>9} {'ratio':>6}  seconds")
    for name, target, drop in tables:
        if not (src / name).exists():
            continue
        out = src / "split" / Path(name).stem
        tr, te = split(src / name, target, drop, out)
        cats = sum(not pd.api.types.is_numeric_dtype(tr[c]) for c in tr.columns if c != target)
        ours, t_ours = ottotrain(out, target, config, extra)
        theirs, t_lgb = lightgbm(tr, te, target)
        rows.append((Path(name).stem, len(tr) + len(te), f"{tr.shape[1] - 1} ({cats})", f"{ours:.4f}",
                     f"{theirs:.4f}", f"{ours / theirs:.2f}", f"{t_ours:.0f} / {t_lgb:.1f}"))  # fmt: skip
        print(" ".join(map(str, rows[-1])), flush=True)
    return rows


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("dir", nargs="?", type=Path, help="the public CSVs (required unless --smoke)")
    ap.add_argument("config", nargs="?", type=Path, default=ROOT / "configs" / "mlp.yaml")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    if not (a.dir or a.smoke):
        ap.error("DIR is required (or --smoke)")
    with common.scratch() as work:
        if a.smoke:
            from ottotrain.data.synth import make_data

            train, _ = make_data(work / "gen", rows=800, test_rows=0, n_features=8, categorical=(3, 12))
            (work / "synthetic.csv").write_bytes(Path(train).read_bytes())
            rows = compare(work, [("synthetic.csv", "target", ["id"])], a.config, ["train.epochs=2"])
        else:
            rows = compare(a.dir, TABLES, a.config)
    head = ("table", "rows", "columns (categorical)", "ottotrain", "LightGBM", "ratio", "seconds")
    body = f"`{a.config.relative_to(ROOT) if a.config.is_relative_to(ROOT) else a.config}` against LightGBM, "
    body += "holdout log loss, stratified 80/20 split (seed 0).\n\n" + common.table(head, rows)
    r.record("side_by_side", "Public tables against LightGBM", body)


if __name__ == "__main__":
    main()
