"""The top of a finished stack run with some of its level-2 learners left out.

What a level-2 learner buys at the top: the stack's greedy top (nested: each fold's weights
chosen on the other folds' OOF rows, as the run's top.json), remade from the models' saved
OOF files over every level-1 member and each given set of level-2 learners. It reads files
only (seconds); nothing is trained.

    python bench/stack_tops.py runs/otto-stack-1h logistic,net logistic,net,gbm logistic,net,gbm-all
    python bench/stack_tops.py --smoke    # seconds: a tiny stack it makes itself on generated data

With no set given: each level-2 learner alone beside level 1, and all of them.
Results: bench/results/stack.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import common
import numpy as np
import pandas as pd
import yaml

from ottotrain.config.stack_section import TopSpec
from ottotrain.workflows.stack.outputs import read_output
from ottotrain.workflows.stack.top import combine

# --smoke: level 1 and two level-2 learners, on 600 generated rows and 3 folds.
SMOKE_STACK = {
    "name": "smoke-stack",
    "seed": 1,
    "data": {"synthetic": {"rows": 600, "test_rows": 100, "seed": 0}},
    "cv": {"folds": 3},
    "stack": {
        "members": [
            {"name": "lgbm", "lightgbm": {"learning_rate": 0.3, "num_leaves": 7, "max_rounds": 20}},
            {"name": "knn", "knn": {"k": [4, 16], "space": "log1p"}},
        ],
        "level2": [{"name": "logistic", "logistic": {}}, {"name": "gbm", "lightgbm": {"max_rounds": 20}}],
    },
}


def smoke_run(work: Path) -> Path:
    """A tiny finished stack run, made here."""
    config = work / "stack.yaml"
    config.write_text(yaml.safe_dump(SMOKE_STACK), encoding="utf-8")
    common.timed(common.ottotrain("stack", config, "--run-dir", work / "run", "-q"))
    return work / "run"


def main(argv=None) -> None:
    ap = common.parser(__doc__)
    ap.add_argument("run", type=Path, nargs="?", help="a finished stack run directory")
    ap.add_argument("sets", nargs="*", help="comma-separated level-2 learner names, one set per top")
    ap.add_argument("--rounds", type=int, default=100, help="greedy selection steps (the stack's default)")
    args = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, args)
    if r.smoke:
        with common.scratch() as work:
            tops(smoke_run(work), [], args.rounds)
    elif args.run is None:
        ap.error("give a finished stack run (or --smoke)")
    else:
        tops(args.run, args.sets, args.rounds)


def tops(run: Path, sets: list[str], rounds: int) -> None:
    """Print the nested top of ``run`` for each set of level-2 learners (all sets of one when none)."""
    info = json.loads((run / "stack.json").read_text(encoding="utf-8"))
    folds = pd.read_csv(run / "folds.csv")
    ids, fold_of, classes = folds.iloc[:, 0].to_numpy(), folds["fold"].to_numpy() - 1, info["classes"]
    target = pd.read_csv(run / "oof.csv").iloc[:, 2]
    y = np.array([classes.index(c) for c in target])
    level1 = [
        read_output(run / e["folder"], e["name"], 1, ids, fold_of, classes, "id") for e in info["members"]
    ]
    level2 = {n: read_output(run / "level2" / n, n, 2, ids, fold_of, classes, "id") for n in info["level2"]}
    sets = [s.split(",") for s in sets] or [[n] for n in level2] + [list(level2)]
    for chosen in sets:
        r = combine(level1 + [level2[n] for n in chosen], y, TopSpec(rounds=rounds), fold_of=fold_of)
        weights = ", ".join(f"{n} {w:.3f}" for n, w in r.weights.items() if w > 0)
        print(
            f"level 2 = {','.join(chosen)}: top {r.nested_oof_log_loss:.4f} nested "
            f"({r.oof_log_loss:.4f} in-sample); weights {weights}"
        )


if __name__ == "__main__":
    main()
