"""How much early stopping on the fold that scores a model flatters a cv run's OOF log loss.

One cv config, run twice on the same folds: the old way (each model early-stops, keeps its best
epoch and halves its learning rate on the fold that then scores it) and with
``cv.inner_validation`` (those choices made on a share of the model's own training rows, the
"stop" rows; the fold only scores). It reports both OOF log losses and their difference. The
difference mixes two effects: the old way's flattery, and the honest models' fewer fitted rows
(they fit on 1 − share of their training rows). So it also reports the flattery alone, inside
the honest run: the same models' loss on the rows that chose their epoch (the stop rows) beside
their loss on their fold (fresh rows).

    python bench/honest_oof.py            # real Otto data (../shared/otto, or --train CSV),
                                          # configs/otto.yaml without its KNN features (run R3's
                                          # net), 5 folds x 1 seed, share 0.1
    python bench/honest_oof.py --quick    # 3 folds, at most 20 epochs
    python bench/honest_oof.py --smoke    # seconds: generated data, 3 epochs
    python bench/honest_oof.py --config configs/otto-tabm.yaml --set data.knn=null --share 0.1

Results: bench/results/metric.md (the block ``honest_oof.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import common
import numpy as np

from ottotrain.config import load_config
from ottotrain.log import Log
from ottotrain.workflows.cv import run_cv

CONFIG = common.ROOT / "configs" / "otto.yaml"
# The net of configs/otto.yaml without its nearest-neighbour features: minutes per cv on 2 cores.
SETS = ("data.knn=null",)


@dataclass(frozen=True)
class Arm:
    """One cv run's figures."""

    label: str
    oof_log_loss: float
    oof_accuracy: float
    fold_mean: float
    fold_std: float
    best_epoch: float  # mean over the models
    stop_log_loss: float | None  # mean over the models of their stop rows' loss
    member_log_loss: float  # mean over the models of their fold's loss
    minutes: float


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--config", type=Path, default=CONFIG, help="the cv config (default configs/otto.yaml)")
    ap.add_argument(
        "--set", dest="sets", action="append", default=None, help=f"overrides (default: {' '.join(SETS)})"
    )
    ap.add_argument("--folds", type=int, default=None, help="default 5 (--quick: 3, --smoke: 2)")
    ap.add_argument("--share", type=float, default=0.1, help="cv.inner_validation of the honest run")
    ap.add_argument("--train", type=Path, help="training CSV (default: ../shared/otto's; --smoke: generated)")
    a = ap.parse_args(argv)
    run = common.Run.start(__file__, argv, a)
    folds = a.folds or run.pick(5, 3, 2)
    epochs = run.pick(None, 20, 3)
    shown = [*(SETS if a.sets is None else a.sets), *([f"train.epochs={epochs}"] if epochs else [])]
    with common.scratch() as work:
        if a.train and not a.smoke:
            data = common.Data(a.train, None, common.quote([a.train]), True)
        else:
            data = common.data(run, work, smoke_rows=1_500)
        sets = [*shown, f"data.train={data.train}", "data.test=null"]
        arms = [
            _arm("the scored fold (the old way)", a.config, sets, folds, work / "old"),
            _arm(
                f"{100 * a.share:g} % of the training rows (cv.inner_validation {a.share})",
                a.config,
                [*sets, f"cv.inner_validation={a.share}"],
                folds,
                work / "honest",
            ),
        ]
    body = report(arms, a.config, shown, folds)
    print(body)
    title = "Honest early stopping: how much the old way flattered the OOF score"
    run.record("metric", title, body, data=data.label)


def _arm(label: str, config: Path, sets: list[str], folds: int, run_dir: Path) -> Arm:
    cfg = load_config(config, sets)
    t0 = time.perf_counter()
    result = run_cv(cfg, folds=folds, seeds=1, run_dir=run_dir, log=Log(0), test=False)
    records = [m.record for m in result.members]
    stops = [r.stop_log_loss for r in records if r.stop_log_loss is not None]
    return Arm(
        label,
        result.oof_log_loss,
        result.oof_accuracy,
        result.fold_log_loss_mean,
        result.fold_log_loss_std,
        float(np.mean([r.best_epoch or 0 for r in records])),
        float(np.mean(stops)) if stops else None,
        float(np.mean([r.val_log_loss for r in records])),
        (time.perf_counter() - t0) / 60,
    )


def report(arms: list[Arm], config: Path, sets: list[str], folds: int) -> str:
    """The results block: both runs side by side, the difference, and the flattery alone."""
    old, honest = arms
    rows = [
        (
            x.label,
            f"**{x.oof_log_loss:.4f}**",
            f"{x.oof_accuracy:.4f}",
            f"{x.fold_mean:.4f} ± {x.fold_std:.4f}",
            f"{x.best_epoch:.1f}",
            "-" if x.stop_log_loss is None else f"{x.stop_log_loss:.4f}",
            f"{x.minutes:.1f}",
        )
        for x in arms
    ]
    head = ("early stopping on", "OOF log loss", "OOF accuracy", "folds", "mean best epoch",
            "mean stop-rows loss", "minutes")  # fmt: skip
    sets_text = " ".join(f"--set {s}" for s in sets)
    lines = [
        f"`ottotrain cv {common.quote([config])} --folds {folds} --seeds 1 {sets_text}`, run twice on the "
        "same folds:",
        "",
        common.table(head, rows),
        "",
        f"- OOF difference, old − honest: **{old.oof_log_loss - honest.oof_log_loss:+.4f}** (negative: the "
        "old way reports a lower loss). It mixes the old way's flattery with the honest models' "
        "fewer fitted rows.",
    ]
    if honest.stop_log_loss is not None:
        lines.append(
            f"- The flattery alone, the same models: the honest run's models score "
            f"{honest.stop_log_loss:.4f} on the rows that chose their epoch and "
            f"{honest.member_log_loss:.4f} on their fold (fresh rows): "
            f"**{honest.stop_log_loss - honest.member_log_loss:+.4f}** (means over the models; the stop "
            "rows are fewer than a fold's, so a choice on them fits them a little more)."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
