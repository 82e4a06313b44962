#!/usr/bin/env bash
# Same config, same seed -> same predictions, whatever the code layout. Prints a sha256 per
# artifact; run it on two checkouts and compare (issue 15: before/after the restructuring).
#   bash bench/equivalence.sh OUT_DIR            # with the installed ottotrain
#   PYTHONPATH=/path/to/other/checkout bash bench/equivalence.sh OUT_DIR
#   bash bench/equivalence.sh OUT_DIR --smoke   # the serial runs only, on fewer rows (tests/test_bench.py)
set -euo pipefail
out=${1:?usage: bench/equivalence.sh OUT_DIR [--smoke]}
smoke=$([ "${2:-}" = --smoke ] && echo 1 || true)
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python}
mkdir -p "$out"
export OTTOTRAIN_CACHE="$out/cache"
ot() { "$py" -m ottotrain "$@"; }
rows=(--rows 6000 --test-rows 2000)
less=()  # a smoke: 2 folds, 2 epochs (it checks the script, the equality is checked in full runs)
[ -n "$smoke" ] && rows=(--rows 1200 --test-rows 300) && less=(--set cv.folds=2 --set train.epochs=2)
ot make-data "$out/data" "${rows[@]}" --seed 3 >/dev/null
data=(--set "data.train=$out/data/train.csv" --set "data.test=$out/data/test.csv")
# The tutorial MLP as shipped (SGD, early stopping), 8 epochs.
ot fit "$root/configs/tutorial-mlp.yaml" "${data[@]}" --set train.epochs="$([ -n "$smoke" ] && echo 2 || echo 8)" --run-dir "$out/mlp" -q >/dev/null
# A cv run: 3 folds x 2 seeds, a variant with TF-IDF and another with KNN features, dropout.
cat > "$out/cv.yaml" <<YAML
name: eq-cv
seed: 7
data: {train: $out/data/train.csv, test: $out/data/test.csv, transform: log1p}
model:
  layers:
    - Dense: {units: 64, activation: relu}
    - Dropout: {rate: 0.2}
    - Dense: {units: n_classes}
    - Activation: softmax
train:
  optimizer: {name: adam, learning_rate: 0.003}
  epochs: 4
  batch_size: 256
  lr_schedule: {name: cosine, warmup_epochs: 1}
  early_stopping: {patience: 2}
cv:
  folds: 3
  variants: [{data.tfidf: true}, {data.knn: {k: [1, 4]}}]
YAML
ot cv "$out/cv.yaml" "${less[@]}" --run-dir "$out/cv" -q >/dev/null
# The same cv on 2 local worker processes, each member with the serial run's thread count
# (the last bits depend on it): the same files as the serial run.
# (The smoke leaves the worker runs out: tests/test_cluster.py checks that equality.)
[ -z "$smoke" ] && ot cv "$out/cv.yaml" --run-dir "$out/cv-w2" --workers 2 --member-threads "$(nproc)" -q >/dev/null
# A TabM ensemble (4 members sharing their kernels) with KNN features, 2 folds, serially and
# on 2 local worker processes.
tabm=(--set seed=11 --set cv.folds=2 --set 'model.ensemble={k: 4, kind: batch}' --set 'cv.variants=[{data.knn: {k: [1, 4]}}]')
ot cv "$out/cv.yaml" "${tabm[@]}" "${less[@]}" --run-dir "$out/tabm" -q >/dev/null
[ -z "$smoke" ] && ot cv "$out/cv.yaml" "${tabm[@]}" --run-dir "$out/tabm-w2" --workers 2 --member-threads "$(nproc)" -q >/dev/null
ot predict "$out/cv" "$out/data/test.csv" -o "$out/cv-predict.csv" >/dev/null 2>&1
# (A smoke predicts from the cv run only: each predict is a process importing TensorFlow.)
[ -z "$smoke" ] && ot predict "$out/mlp" "$out/data/test.csv" -o "$out/mlp-predict.csv" >/dev/null 2>&1
[ -z "$smoke" ] && ot predict "$out/tabm" "$out/data/test.csv" -o "$out/tabm-predict.csv" >/dev/null 2>&1
cd "$out"
files=(mlp/submission.csv mlp/val_predictions.csv cv/oof.csv cv/submission.csv cv-predict.csv
  tabm/oof.csv tabm/submission.csv)
[ -z "$smoke" ] && files+=(mlp-predict.csv tabm-predict.csv)
[ -z "$smoke" ] && files+=(cv-w2/oof.csv cv-w2/submission.csv tabm-w2/oof.csv tabm-w2/submission.csv)
sha256sum "${files[@]}"
