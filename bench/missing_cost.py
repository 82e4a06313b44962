"""What data.missing: auto costs on data without gaps: Preprocessor.fit on the training rows
plus transform of train and test, auto against none, interleaved in one process (15 each).

    python bench/missing_cost.py ../shared/otto/train.csv.gz ../shared/otto/test.csv.gz
"""

import statistics
import sys
import time

from ottotrain.config import DataConfig
from ottotrain.data import load_test, load_train
from ottotrain.features import Preprocessor

tr = load_train(DataConfig(train=sys.argv[1]))
_, xt = load_test(sys.argv[2], "id", "target", tr.features)
times = {"none": [], "auto": []}
for rep in range(15):
    for m in ("none", "auto") if rep % 2 else ("auto", "none"):
        dc = DataConfig(train=sys.argv[1], scaling="standard", missing=m)
        t = time.perf_counter()
        pre = Preprocessor.fit(tr.x, dc, tr.features, tr.classes)
        pre.transform(tr.x), pre.transform(xt)
        times[m].append(time.perf_counter() - t)
for m, v in times.items():
    print(f"{m} median {1000 * statistics.median(v):.1f} ms, min {1000 * min(v):.1f} ms")
