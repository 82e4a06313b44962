"""What data.missing: auto costs on data without gaps: Preprocessor.fit on the training rows
plus transform of train and test, auto against none, interleaved in one process (15 each).

    python bench/missing_cost.py ../shared/otto/train.csv.gz ../shared/otto/test.csv.gz
    python bench/missing_cost.py             # the real Otto files where common.otto_files finds them
    python bench/missing_cost.py --smoke     # 3 each, small generated data

Writes its block of bench/results/side_by_side.md.
"""

import time

import common


def measure(train, test, reps: int) -> dict[str, list[float]]:
    from ottotrain.config import DataConfig
    from ottotrain.data import load_test, load_train
    from ottotrain.features import Preprocessor

    tr = load_train(DataConfig(train=str(train)))
    _, xt = load_test(test, "id", "target", tr.features)

    def job(m):
        def go():
            dc = DataConfig(train=str(train), scaling="standard", missing=m)
            t = time.perf_counter()
            pre = Preprocessor.fit(tr.x, dc, tr.features, tr.classes)
            pre.transform(tr.x), pre.transform(xt)
            return time.perf_counter() - t

        return go

    auto, none = common.interleave(reps, job("auto"), job("none"))
    return {"auto": auto, "none": none}


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("train", nargs="?")
    ap.add_argument("test", nargs="?")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    with common.scratch() as work:
        d = common.Data(a.train, a.test, f"{a.train}, {a.test}", True) if a.train else common.data(r, work)
        if d.test is None:
            raise SystemExit("give TRAIN and TEST")
        times = measure(d.train, d.test, r.pick(15, 5, 3))
    rows = [(m, f"{1000 * common.median(v):.1f}", f"{1000 * min(v):.1f}") for m, v in times.items()]
    body = common.table(("data.missing", "median ms", "min ms"), rows)
    print(body)
    r.record(
        "side_by_side", "data.missing: auto against none, Preprocessor fit + transform", body, data=d.label
    )


if __name__ == "__main__":
    main()
