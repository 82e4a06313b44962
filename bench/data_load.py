"""Time loading + preprocessing the train and test CSVs, one way, in this process.

    python bench/data_load.py ottotrain TRAIN TEST [MISSING]  # ottotrain's loaders + Preprocessor
                                                     # (data.missing, default auto)
    python bench/data_load.py pandas TRAIN TEST      # pandas.read_csv with defaults, nothing else
    python bench/data_load.py arrow TRAIN TEST       # pyarrow.csv.read_csv alone: the parser's floor
    python bench/data_load.py polars TRAIN TEST      # polars.read_csv alone: another parser's floor

Prints one JSON line: seconds from after the imports to the end. Each side imports its
library before the clock starts (``pandas``, which imports pyarrow; ottotrain's config and
data modules), as a script or session that loads data has. The ottotrain side also
reports ``import_seconds``, the import of its modules (mostly pydantic, for the config
schema), which every ottotrain command pays once before loading anything.
"""

import json
import sys
import time

import pandas as pd

mode, train, test = sys.argv[1:4]
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
    a = pd.read_csv(train)
    b = pd.read_csv(test)
    rows = (len(a), len(b))
elif mode == "arrow":
    import pyarrow.csv as pacsv

    rows = (pacsv.read_csv(train).num_rows, pacsv.read_csv(test).num_rows)
elif mode == "polars":
    rows = (len(pl.read_csv(train)), len(pl.read_csv(test)))
else:
    missing = {"missing": sys.argv[4]} if len(sys.argv) > 4 else {}
    dc = DataConfig(train=train, test=test, scaling="standard", **missing)
    tr = load_train(dc)
    ids, xt = load_test(test, dc.id_column, dc.target_column, tr.features)
    pre = Preprocessor.fit(tr.x, dc, tr.features, tr.classes)
    x1, x2 = pre.transform(tr.x), pre.transform(xt)
    rows = (len(x1), len(x2))
dt = time.perf_counter() - t0
print(json.dumps({"mode": mode, "seconds": dt, "rows": rows, **extra}))
