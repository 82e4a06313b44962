#!/usr/bin/env bash
# Metric benchmark on the real Otto data (issue #5): the exact commands behind
# bench/results/metric.md. Runs sequentially; about 6 h on 2 cores (see bench/results/metric.md for each run's time).
#   bench/metric.sh [OTTO_DIR] [OUT_DIR]
set -euo pipefail
OTTO=${1:-../shared/otto}
OUT=${2:-/tmp/metric/runs}
DATA="--set data.train=$(realpath "$OTTO/train.csv.gz") --set data.test=$(realpath "$OTTO/test.csv.gz")"
mkdir -p "$OUT"

# 1. The first recipe (log1p), bagged: 5 folds x 2 seeds. Its seed_oof_log_loss (each
#    seed's 5 models alone) is the single-model score of bench/configs/otto-log1p.yaml.
time ottotrain cv bench/configs/otto-log1p.yaml --folds 5 --seeds 2 $DATA --run-dir "$OUT/L-log1p-s2"
# 2. Same recipe, another input transform, for blending.
time ottotrain cv bench/configs/otto-log1p.yaml --folds 5 --seeds 1 $DATA --set data.transform=anscombe \
    --set name=otto-anscombe --run-dir "$OUT/S-anscombe-s1"
# 3. LightGBM on the same folds (dev-only dependency).
time python bench/metric_lgbm.py --train "$OTTO/train.csv.gz" --test "$OTTO/test.csv.gz" --out "$OUT/lgbm"
# 1b. Varied bags, 5 folds x 3 models each; seed_oof_log_loss gives each variant's
#     single-model score. V: log1p; log1p + TF-IDF; Anscombe + TF-IDF (its third variant
#     is bench/configs/otto-anscombe-2x1024.yaml). W: configs/otto-cv.yaml as shipped until 2026-11-28 evening
#     (log1p; log1p + TF-IDF; TF-IDF into a 3 x 512 ReLU net).
time ottotrain cv bench/configs/otto-cv-anscombe.yaml $DATA --run-dir "$OUT/V-varied"
time ottotrain cv bench/configs/otto-cv-3.yaml $DATA --run-dir "$OUT/W-varied2"
# 1d. Bags heavy in the cheap 3 x 512 ReLU net: X8 (8 models per fold, 33 min) and the
#     configs/otto-cv.yaml of 2026-11-28/29 (now bench/configs/otto-cv-7.yaml), Y7 (X8 without
#     its 2 x 1024 TF-IDF member: 7 per fold).
time ottotrain cv bench/configs/otto-cv-8.yaml $DATA --run-dir "$OUT/X8"
time ottotrain cv bench/configs/otto-cv-7.yaml $DATA --run-dir "$OUT/Y7"
# 1c. The best single model before KNN features (configs/otto.yaml until 2026-11-29, now
#     bench/configs/otto-anscombe-2x1024.yaml), on its own (5 fold models), after the
#     Anscombe fix (runs S and V were made with the earlier formula, which sent 0 to 0).
time ottotrain cv bench/configs/otto-anscombe-2x1024.yaml --seeds 1 $DATA --run-dir "$OUT/A1-otto-anscombe-fixed"
# 4. Blends (weights fitted on the OOF predictions).
ottotrain blend "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" -o "$OUT/blend-nn.csv"
ottotrain blend "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" "$OUT/lgbm" -o "$OUT/blend-nn-lgbm.csv"
ottotrain blend "$OUT/L-log1p-s2" "$OUT/lgbm"
ottotrain blend "$OUT/V-varied" "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" "$OUT/lgbm"
ottotrain blend "$OUT/W-varied2" "$OUT/V-varied" -o "$OUT/blend-vw.csv"
ottotrain blend "$OUT/W-varied2" "$OUT/V-varied" "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" -o "$OUT/blend-nn4.csv"
ottotrain blend "$OUT/W-varied2" "$OUT/V-varied" "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" "$OUT/lgbm"
# All NN runs (0.4425 was measured before Y7 existed, without it) and Y7 + LightGBM (0.4335).
ottotrain blend "$OUT/Y7" "$OUT/X8" "$OUT/A1-otto-anscombe-fixed" "$OUT/V-varied" "$OUT/W-varied2" \
    "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" -o "$OUT/blend-nn-all.csv"
ottotrain blend "$OUT/Y7" "$OUT/lgbm" -o "$OUT/blend-y7-lgbm.csv"
# 1e. Nearest-neighbour features (data.knn, 2026-11-29): the cheap 3 x 512 ReLU net on three
#     inputs with KNN features (K3, configs/otto-cv.yaml since then) and without (R3), then
#     their blend. K3's second variant is configs/otto.yaml (its seed_oof_log_loss[1]).
#     K3b: the same command again, alone on the cores, for its time.
time ottotrain cv bench/configs/otto-cv-relu3.yaml $DATA --run-dir "$OUT/R3"
time ottotrain cv configs/otto-cv.yaml $DATA --run-dir "$OUT/K3"
time ottotrain cv configs/otto-cv.yaml $DATA --run-dir "$OUT/K3b"
time ottotrain cv configs/otto.yaml --seeds 1 $DATA --run-dir "$OUT/O1"
ottotrain blend "$OUT/K3" "$OUT/R3" -o "$OUT/blend-knn.csv"
# 5. Table rows (single-seed OOF scores, times).
python bench/metric_report.py --train "$OTTO/train.csv.gz" "$OUT/L-log1p-s2" "$OUT/S-anscombe-s1" "$OUT/V-varied" "$OUT/W-varied2" "$OUT/lgbm"
# 6. The tune study (issue 16, 2026-12-01/02): configs/otto-tune.yaml on the 15 % holdout,
#    2 workers, 75 minutes; then its best.yaml and configs/otto.yaml scored side by side on the
#    same 5 folds (one seed, one TensorFlow thread each, no test predictions), and both OOFs
#    split into the holdout's rows (which chose the config) and the others.
time ottotrain tune configs/otto-tune.yaml $DATA --workers 2 --study-dir "$OUT/T1"
TF_NUM_INTRAOP_THREADS=1 ottotrain cv "$OUT/T1/best.yaml" --seeds 1 --set data.test=null --run-dir "$OUT/T1cv" &
TF_NUM_INTRAOP_THREADS=1 ottotrain cv configs/otto.yaml --seeds 1 $DATA --set data.test=null --run-dir "$OUT/O1b" &
wait
python bench/tune_holdout.py --config configs/otto-tune.yaml --train "$OTTO/train.csv.gz" "$OUT/O1b" "$OUT/T1cv"
# 7. TabM-style ensembles (issue 18, 2026-12-02): three fits on the config's 15 % split to
#    choose (plain configs/otto.yaml, + 4 members at width 512, + 8 members at width 256), then
#    the chosen configs/otto-tabm.yaml on the 5 folds with test predictions, timed, and its OOF
#    split into the choosing split's rows and the others (beside O1b from step 6).
S="$DATA --set data.test=null"
ottotrain fit configs/otto.yaml $S --run-dir "$OUT/P-plain" -q --json
ottotrain fit configs/otto.yaml $S --set 'model.ensemble={k: 4}' --run-dir "$OUT/P-k4" -q --json
ottotrain fit configs/otto.yaml $S --set 'model.ensemble={k: 8}' --set 'model.layers[1].Dense.units=256' \
    --set 'model.layers[3].Dense.units=256' --set 'model.layers[5].Dense.units=256' --run-dir "$OUT/P-k8w256" -q --json
time ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 $DATA --run-dir "$OUT/TB1"
python bench/tune_holdout.py --config bench/configs/otto-tabm-d03.yaml --train "$OTTO/train.csv.gz" "$OUT/O1b" "$OUT/TB1"
TB="$DATA --set data.test=null --set model.ensemble.shared_batches=true"
time ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 $TB --run-dir "$OUT/TB2"
# 8. Issue 18, the afternoon of 2026-12-02: the tuned body as 4 members (TB3, alone, timed),
#    otto-tabm.yaml again and its embedding ablation two at a time with one thread each
#    (TB1b, TBple), its k ablation and the K3 bag on 2 local Dask workers, then the blend.
#    (The fit on the split that chose TB3 and TBple's probe: `ottotrain fit CONFIG $S`.)
sed -e 's/^name: otto-tuned/name: otto-tabm-tuned/' -e 's/^model:/model:\n  ensemble: {k: 4, kind: batch}/' \
    configs/otto-tuned.yaml > "$OUT/otto-tabm-tuned.yaml"
time ottotrain cv "$OUT/otto-tabm-tuned.yaml" --seeds 1 $DATA --run-dir "$OUT/TB3"
TF_NUM_INTRAOP_THREADS=1 ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 $S --run-dir "$OUT/TB1b" &
TF_NUM_INTRAOP_THREADS=1 ottotrain cv bench/configs/otto-tabm-ple.yaml --seeds 1 $S --run-dir "$OUT/TBple" &
wait
ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 --workers 2 $S --set model.ensemble.k=2 --run-dir "$OUT/TBk2"
ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 --workers 2 $S --set model.ensemble.k=8 --run-dir "$OUT/TBk8"   # stopped after 4 folds
time ottotrain cv configs/otto-cv.yaml --workers 2 $DATA --run-dir "$OUT/K3c"
ottotrain blend "$OUT/TB1b" "$OUT/K3c" --temperature
python bench/tune_holdout.py --config bench/configs/otto-tabm-d03.yaml --train "$OTTO/train.csv.gz" "$OUT/TB1b" "$OUT/TB3"
# 9. Issue 18, the evening of 2026-12-02 (another, slower 2-core machine): four fits on the
#    choosing split, two at a time with one thread each (body Dropout 0.2, batch 256, the
#    weights' moving average at 0.99 and 0.995; the last two stopped for time), then the
#    winner, now configs/otto-tabm.yaml, and the old recipe side by side on the 5 folds, one
#    thread each, both with test predictions and timed, then the rows outside the split.
TF_NUM_INTRAOP_THREADS=1 ottotrain fit bench/configs/otto-tabm-d03.yaml $S --set train.batch_size=256 -q --json &
TF_NUM_INTRAOP_THREADS=1 ottotrain fit configs/otto-tabm.yaml $S -q --json &
wait
for m in 0.99 0.995; do
    TF_NUM_INTRAOP_THREADS=1 ottotrain fit bench/configs/otto-tabm-d03.yaml $S --set train.optimizer.use_ema=true \
        --set train.optimizer.ema_momentum=$m -q --json &
done
wait
TF_NUM_INTRAOP_THREADS=1 /usr/bin/time -v ottotrain cv configs/otto-tabm.yaml --seeds 1 $DATA --run-dir "$OUT/TB4" &
TF_NUM_INTRAOP_THREADS=1 /usr/bin/time -v ottotrain cv bench/configs/otto-tabm-d03.yaml --seeds 1 $DATA --run-dir "$OUT/TB1c" &
wait
python bench/tune_holdout.py --config configs/otto-tabm.yaml --train "$OTTO/train.csv.gz" "$OUT/TB1c" "$OUT/TB4"
