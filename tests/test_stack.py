"""``ottotrain stack``: its config, level 1, resume and reuse, the time budget, the command."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import error_line, run_cli, tiny_config

from ottotrain import learners
from ottotrain.errors import ConfigError
from ottotrain.workflows.stack.budget import Budget, OverBudget, parse_time_limit

FOLDS = 3


def stack_tree(data, members, **stack):
    """A stack config over ``tiny_data``: 3 folds, the members given, a logistic level 2."""
    return {
        "name": "st",
        "seed": 1,
        "data": {"train": str(data["train"]), "test": str(data["test"])},
        "cv": {"folds": FOLDS},
        # A short logistic level 2: the test checks the plumbing, not the score.
        "stack": {"members": members, "level2": [{"name": "lr", "logistic": {"max_iter": 50}}], **stack},
    }


LGBM = {"name": "lgbm", "lightgbm": {"max_rounds": 20, "num_leaves": 7, "early_stopping_rounds": 5}}
KNN = {"name": "knn", "knn": {"k": [4, 16]}}


def write(path, tree):
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def run_stack_cli(config, run_dir, *more):
    return run_cli("stack", config, "--run-dir", run_dir, *more)


@pytest.fixture(scope="module")
def keras_stack(tiny_data, tmp_path_factory):
    """One finished stack: a Keras member (1 epoch), LightGBM and a KNN list, through the CLI."""
    d = tmp_path_factory.mktemp("stack")
    write(d / "net.yaml", tiny_config(tiny_data, epochs=1))
    members = [{"name": "net", "config": "net.yaml", "set": {"train.batch_size": 128}}, LGBM, KNN]
    config = write(d / "stack.yaml", stack_tree(tiny_data, members))
    result = run_stack_cli(config, d / "run")
    return d, config, d / "run", result


def test_stack_end_to_end_writes_every_model_and_a_submission(keras_stack, tiny_data):
    d, _, run, result = keras_stack
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(run)
    assert "oof_log_loss=" in result.output and "best_model=" in result.output
    info = json.loads((run / "stack.json").read_text())
    assert [m["name"] for m in info["members"]] == ["net", "lgbm", "knn-k4", "knn-k16"]
    assert info["folds"] == FOLDS and info["left_out"] == []
    assert json.loads((run / "status.json").read_text())["kind"] == "stack"
    # The Keras member is a complete cv run, on the stack's folds.
    assert json.loads((run / "members/net/status.json").read_text())["kind"] == "cv"
    assert (run / "members/net/folds.csv").read_text() == (run / "folds.csv").read_text()
    saved = yaml.safe_load((run / "members/net/config.yaml").read_text())
    assert saved["cv"]["inner_validation"] == 0.1 and saved["train"]["batch_size"] == 128
    sub = pd.read_csv(run / "submission.csv")
    assert len(sub) == len(pd.read_csv(tiny_data["test"]))
    assert np.allclose(sub.drop(columns="id").sum(axis=1), 1.0)
    for name in ("lgbm", "knn-k4", "knn-k16"):
        assert json.loads((run / "members" / name / "metrics.json").read_text())["oof_log_loss"] > 0


def _stack_rows(run):
    """The training table and the stack's fold of each row (folds.csv, checked against it)."""
    train = pd.read_csv(yaml.safe_load((run / "config.yaml").read_text())["data"]["train"])
    folds = pd.read_csv(run / "folds.csv")
    assert np.array_equal(folds["id"], train["id"])
    return train, folds["fold"].to_numpy() - 1


@pytest.mark.slow
def test_the_quickstart_stack_smoke_runs(tmp_path):
    root = Path(__file__).resolve().parent.parent
    result = run_stack_cli(root / "configs/quickstart-stack.yaml", tmp_path / "run", "--smoke", "-q")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run/stack.json").read_text())
    assert [m["name"] for m in info["members"]] == ["mlp", "lgbm", "knn-k4", "knn-k16"]
    assert json.loads((tmp_path / "run/status.json").read_text())["smoke"] is True
    assert len(pd.read_csv(tmp_path / "run/oof.csv")) == 2000


def test_no_member_oof_row_comes_from_a_model_that_saw_it(keras_stack):
    _, _, run, _ = keras_stack
    train, fold_of = _stack_rows(run)
    x = train.drop(columns=["id", "target"]).to_numpy(np.float32)
    for k in range(FOLDS):
        seen, held = fold_of != k, fold_of == k
        # KNN: its reference rows are exactly the other folds' rows.
        knn = learners.load(run / f"members/knn-k4/models/fold{k + 1}")
        assert np.array_equal(knn.x_ref.astype(np.float32), x[seen])
        # LightGBM: the model of fold k reproduces fold k's OOF rows, and trained on the rest only.
        lgbm = learners.load(run / f"members/lgbm/models/fold{k + 1}")
        oof = pd.read_csv(run / "members/lgbm/oof.csv")
        assert np.allclose(lgbm.predict_proba(x[held]), oof.iloc[:, 3:].to_numpy()[held], atol=1e-5)
        rec = json.loads((run / f"members/lgbm/folds/fold{k + 1}.json").read_text())
        assert rec["n_train"] + rec["n_stop"] == seen.sum() and rec["n_val"] == held.sum()
        # The Keras member: the model of fold k validated on fold k's rows only.
        member = json.loads((run / f"members/net/models/fold{k + 1}-seed1.json").read_text())
        assert member["n_val"] == held.sum()
    for name in ("net", "lgbm", "knn-k16"):
        oof = pd.read_csv(run / "members" / name / "oof.csv")
        assert np.array_equal(oof["fold"].to_numpy() - 1, fold_of)


def test_a_finished_cv_run_is_reused_and_one_with_other_folds_refused(keras_stack, tiny_data, tmp_path):
    _, _, run, _ = keras_stack
    members = [{"name": "old", "run": str(run / "members/net")}, KNN]
    ok = run_stack_cli(write(tmp_path / "ok.yaml", stack_tree(tiny_data, members)), tmp_path / "ok")
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "ok/members/old/models/fold1-seed1.keras").exists()
    other = stack_tree(tiny_data, members) | {"seed": 7}  # other folds
    result = run_stack_cli(write(tmp_path / "bad.yaml", other), tmp_path / "bad")
    line = error_line(result)
    assert "'old'" in line and "folds differ" in line
    assert not (tmp_path / "bad").exists()


def test_interrupted_stack_resumes_only_unfinished_members(tiny_data, tmp_path, monkeypatch):
    from ottotrain.workflows.stack import level1

    config = write(tmp_path / "s.yaml", stack_tree(tiny_data, [LGBM, KNN]))
    real = level1.train_learner_member

    def stop_at_knn(run, spec, label):
        if spec.name == "knn":
            raise KeyboardInterrupt
        return real(run, spec, label)

    monkeypatch.setattr(level1, "train_learner_member", stop_at_knn)
    first = run_stack_cli(config, tmp_path / "run")
    assert first.exit_code == 130
    assert "ottotrain stack --resume" in first.output
    assert json.loads((tmp_path / "run/status.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(level1, "train_learner_member", real)
    # Fold 3 of lgbm lost as well: only it is trained again.
    (tmp_path / "run/members/lgbm/folds/fold3.json").unlink()
    (tmp_path / "run/members/lgbm/metrics.json").unlink()
    done = (tmp_path / "run/members/lgbm/folds/fold1.json").stat().st_mtime_ns
    again = run_cli("stack", "--resume", tmp_path / "run")
    assert again.exit_code == 0, again.output
    assert "lgbm: 2/3 folds finished earlier, reused" in again.output
    assert "lgbm: fold 3 (3/3)" in again.output and "lgbm: fold 1 " not in again.output
    assert "knn: fold 1 (1/3)" in again.output
    assert (tmp_path / "run/members/lgbm/folds/fold1.json").stat().st_mtime_ns == done


def test_a_member_added_on_resume_is_the_only_one_trained(tiny_data, tmp_path):
    config = write(tmp_path / "s.yaml", stack_tree(tiny_data, [KNN]))
    assert run_stack_cli(config, tmp_path / "run").exit_code == 0
    grown = write(tmp_path / "s2.yaml", stack_tree(tiny_data, [KNN, LGBM]))
    result = run_cli("stack", grown, "--resume", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "knn: finished earlier, reused" in result.output and "knn: fold" not in result.output
    assert "lgbm: fold 1 (1/3)" in result.output
    names = [m["name"] for m in json.loads((tmp_path / "run/stack.json").read_text())["members"]]
    assert names == ["knn-k4", "knn-k16", "lgbm"]
    changed = stack_tree(tiny_data, [KNN, {**LGBM, "lightgbm": {"max_rounds": 5}}])
    line = error_line(run_cli("stack", write(tmp_path / "s3.yaml", changed), "--resume", tmp_path / "run"))
    assert "member 'lgbm' changed" in line


def test_a_tiny_time_limit_leaves_members_out_and_still_submits(tiny_data, tmp_path):
    members = [KNN, LGBM, {"name": "knn2", "knn": {"k": 8, "space": "tfidf"}}]
    config = write(tmp_path / "s.yaml", stack_tree(tiny_data, members))
    # 10 ms: less than the first member takes even with every cache warm (1 s was not, in a
    # process that had run the other tests: the whole stack fitted in it and nothing was left out).
    result = run_stack_cli(config, tmp_path / "run", "--time-limit", "0.01s")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "run/stack.json").read_text())
    assert [x["name"] for x in info["left_out"]] == ["lgbm", "knn2"]
    # The first member always finishes; the limit is spent before lgbm or knn2 can start.
    assert "no time left" in info["left_out"][1]["why"]
    assert [m["name"] for m in info["members"]] == ["knn-k4", "knn-k16"]
    assert "Left out: lgbm" in result.output and "left_out=lgbm,knn2" in result.output
    sub = pd.read_csv(tmp_path / "run/submission.csv")
    assert np.allclose(sub.drop(columns="id").sum(axis=1), 1.0)


def test_the_budget_stops_a_member_whose_rest_does_not_fit():
    budget = Budget(100.0)
    budget.check("m", 1, 5, [10.0])  # 40 s more of 100: fits
    with pytest.raises(OverBudget, match="m: 1/5 done; the rest would take about 1m 40s"):
        budget.check("m", 1, 5, [25.0])
    budget.enforce = False  # no member finished yet: the first always does
    budget.check("m", 1, 5, [25.0])


@pytest.mark.parametrize(
    "text,seconds", [("2h", 7200), ("45m", 2700), ("90s", 90), ("3600", 3600), ("1.5h", 5400)]
)
def test_time_limits_parse(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize("text", ["2x", "-3m", "0", "soon"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(ConfigError, match="expected a positive duration such as 2h"):
        parse_time_limit(text)


BAD_STACKS = [
    ("two-kinds", [{"name": "m", "lightgbm": {}, "knn": {}}], {}, ["needs exactly one of", "lightgbm, knn"]),
    (
        "unknown-key",
        [{"name": "m", "lightgbmm": {}}],
        {},
        ["unknown key 'lightgbmm'", "did you mean 'lightgbm'"],
    ),
    ("duplicate", [KNN, {"name": "knn", "lightgbm": {}}], {}, ["repeated: knn"]),
    ("knn-expansion-clash", [KNN, {"name": "knn-k4", "lightgbm": {}}], {}, ["repeated: knn-k4"]),
    (
        "level2-feature",
        [KNN],
        {"level2": [{"name": "l2", "logistic": {}, "features": ["feat_1", "feat_999"]}]},
        ["feat_999"],
    ),
    ("run-not-cv", [{"name": "old", "run": "."}], {}, ["'old'", "not an ottotrain run directory"]),
    (
        "missing-config",
        [{"name": "n", "config": "nope.yaml"}],
        {},
        ["stack.members[0] (n)", "nope.yaml", "not found"],
    ),
]


@pytest.mark.parametrize(
    "members,stack,fragments", [c[1:] for c in BAD_STACKS], ids=[c[0] for c in BAD_STACKS]
)
def test_bad_stack_configs_are_one_line(members, stack, fragments, tiny_data, tmp_path):
    config = write(tmp_path / "s.yaml", stack_tree(tiny_data, members, **stack))
    line = error_line(run_stack_cli(config, tmp_path / "run"))
    for fragment in fragments:
        assert fragment in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["fit", "cv", "tune", "check"])
def test_fit_cv_tune_and_check_refuse_a_stack_config(command, tiny_data, tmp_path):
    config = write(tmp_path / "s.yaml", stack_tree(tiny_data, [KNN]))
    more = [] if command == "check" else ["--runs-root", tmp_path / "runs"]
    line = error_line(run_cli(command, config, *more))
    assert f"is a stack config (it has a 'stack' section): run 'ottotrain stack {config}'" in line


def test_a_config_with_neither_model_nor_stack_says_so(tiny_data, tmp_path):
    tree = {"data": {"train": str(tiny_data["train"])}}
    line = error_line(run_cli("cv", write(tmp_path / "c.yaml", tree)))
    assert line.endswith("model: required: the layer list (or a 'stack' section, for 'ottotrain stack')")


def test_stack_refuses_a_config_without_a_stack(tiny_config_path, tmp_path):
    line = error_line(run_cli("stack", tiny_config_path, "--run-dir", tmp_path / "run"))
    assert "has no 'stack' section" in line


def test_the_budget_stops_a_keras_member_resumably(keras_stack, tiny_data, tmp_path):
    from ottotrain.config import load_config
    from ottotrain.data import fold_assignment
    from ottotrain.log import Log
    from ottotrain.workflows.common import load_data
    from ottotrain.workflows.cv_member import FoldedData
    from ottotrain.workflows.stack.cv_members import member_status
    from ottotrain.workflows.stack.level1 import prepare_members, train_level1
    from ottotrain.workflows.stack.state import StackOptions, StackRun

    d = keras_stack[0]
    tree = stack_tree(tiny_data, [KNN, {"name": "net", "config": str(d / "net.yaml")}])
    cfg = load_config(write(tmp_path / "s.yaml", tree))
    configs, (train, test) = prepare_members(cfg), load_data(cfg)
    data = FoldedData(train, fold_assignment(train.y, FOLDS, cfg.seed))
    run = StackRun(cfg, tmp_path / "run", data, test, StackOptions(), Log(0), Budget(None), False)
    run.run_dir.mkdir()
    # knn finishes first (no limit yet); then 1 s for net: its first model says the rest of
    # it does not fit, and it stops there, interrupted, as a cv run resumes.
    run.budget = Budget(None)
    run.cfg = cfg.model_copy(
        update={"stack": cfg.stack.model_copy(update={"members": cfg.stack.members[:1]})}
    )
    assert [o.name for o in train_level1(run, configs)] == ["knn-k4", "knn-k16"]
    run.cfg, run.budget = cfg, Budget(1.0)
    outputs = train_level1(run, configs)
    assert [o.name for o in outputs] == ["knn-k4", "knn-k16"]
    assert run.left_out[0].name == "net" and "net: 1/3 done" in run.left_out[0].why
    assert member_status(run.member_dir("net")) == "interrupted"
    run.budget, run.left_out = Budget(None), []
    outputs = train_level1(run, configs)
    assert [o.name for o in outputs] == ["knn-k4", "knn-k16", "net"]
    assert len(list((run.member_dir("net") / "models").glob("fold*-seed1.keras"))) == FOLDS


def test_a_member_with_cv_variants_keeps_the_stacks_inner_validation(tiny_data, tmp_path):
    from ottotrain.config import load_config, member_config
    from ottotrain.workflows.stack.level1 import prepare_members

    net = tiny_config(tiny_data) | {"cv": {"variants": [{"data.transform": "log1p"}, {}]}}
    write(tmp_path / "net.yaml", net)
    tree = stack_tree(tiny_data, [{"name": "net", "config": "net.yaml"}], inner_validation=0.2)
    cfg = prepare_members(load_config(write(tmp_path / "s.yaml", tree)))["net"]
    for k in range(2):  # each variant's model early-stops inside its training folds too
        assert member_config(cfg, k).cv.inner_validation == 0.2
    assert member_config(cfg, 0).data.transform == "log1p"
