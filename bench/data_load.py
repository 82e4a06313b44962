"""Time loading + preprocessing the train and test CSVs, one way, in this process.

    python bench/data_load.py ottotrain TRAIN TEST [MISSING]  # ottotrain's loaders + Preprocessor
                                                     # (data.missing, default auto)
    python bench/data_load.py pandas TRAIN TEST      # pandas.read_csv with defaults, nothing else
    python bench/data_load.py arrow TRAIN TEST       # pyarrow.csv.read_csv alone: the parser's floor
    python bench/data_load.py polars TRAIN TEST      # polars.read_csv alone: another parser's floor
    python bench/data_load.py --smoke                # every way once, on small generated data

Prints one JSON line: seconds from after the imports to the end. Each side imports its
library before the clock starts (``pandas``, which imports pyarrow; ottotrain's config and
data modules), as a script or session that loads data has. The ottotrain side also
reports ``import_seconds``, the import of its modules (mostly pydantic, for the config
schema), which every ottotrain command pays once before loading anything. ``bench/speed.py``
runs each way in a fresh process and puts the figures in bench/results/speed.md.
"""

import importlib.util
import json
import sys
import time

import common
import pandas as pd

MODES = ("ottotrain", "pandas", "arrow", "polars")


def measure(mode, train, test, missing=None) -> dict:
    extra = {}
    if mode == "polars":
        import polars as pl  # before the clock, like pandas
    if mode == "ottotrain":
        t0 = time.perf_counter()
        from ottotrain.config import DataConfig
        from ottotrain.data import load_test, load_train
        from ottotrain.features import Preprocessor

        extra["import_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if mode == "pandas":
        rows = (len(pd.read_csv(train)), len(pd.read_csv(test)))
    elif mode == "arrow":
        import pyarrow.csv as pacsv

        rows = (pacsv.read_csv(train).num_rows, pacsv.read_csv(test).num_rows)
    elif mode == "polars":
        rows = (len(pl.read_csv(train)), len(pl.read_csv(test)))
    else:
        dc = DataConfig(
            train=str(train), test=str(test), scaling="standard", **({"missing": missing} if missing else {})
        )
        tr = load_train(dc)
        _, xt = load_test(test, dc.id_column, dc.target_column, tr.features)
        pre = Preprocessor.fit(tr.x, dc, tr.features, tr.classes)
        rows = (len(pre.transform(tr.x)), len(pre.transform(xt)))
    return {"mode": mode, "seconds": time.perf_counter() - t0, "rows": rows, **extra}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--smoke"]:
        if len(argv) < 3 or argv[0] not in MODES:
            raise SystemExit(__doc__)
        print(json.dumps(measure(*argv[:4])))
        return
    with common.scratch() as work:
        d = common.synthetic(work, 2_000, 1_000)
        for mode in MODES:
            if mode != "polars" or importlib.util.find_spec("polars"):
                print(json.dumps(measure(mode, d.train, d.test)))


if __name__ == "__main__":
    main()
