"""Level 1 of a stack: every member, in priority order, on the stack's rows and folds.

A member is a Keras config (a cv run of its own in ``members/<name>``, ``cv_members``), a
finished cv run reused (copied there), or a learner (LightGBM, KNN vote) trained fold by
fold on the executor (``learner_fold``). Each one leaves ``oof.csv``, ``submission.csv``
and ``metrics.json`` in its folder, and is read back as a ``ModelOutput`` for level 2.

A member already finished in the run directory is reused; an unfinished one continues
(a cv run resumes, a learner's finished folds are kept). The time budget may stop a
member after its first fold or model: it is then left out, and says why.
"""

from __future__ import annotations

import json

import numpy as np

from ottotrain import execute
from ottotrain.config import Config
from ottotrain.config.stack_section import MemberSpec
from ottotrain.errors import ConfigError
from ottotrain.io import read_json, write_json
from ottotrain.metrics import log_loss
from ottotrain.runs import FINISHED
from ottotrain.workflows.cv_member import member_seed
from ottotrain.workflows.stack.budget import OverBudget
from ottotrain.workflows.stack.cv_members import (
    check_reusable,
    cv_output,
    member_config,
    member_status,
    reuse_run,
    train_cv_member,
)
from ottotrain.workflows.stack.learner_fold import LearnerFold, fold_files, learner_job, read_fold
from ottotrain.workflows.stack.outputs import ModelOutput, read_output, write_output
from ottotrain.workflows.stack.state import MEMBER_FILE, MEMBERS, LeftOut, StackData, StackRun

METRICS = "metrics.json"
SMOKE_ROUNDS = 50  # LightGBM's most boosting rounds in a smoke run


def output_names(spec: MemberSpec) -> list[str]:
    """The models a member makes: itself, or one per k of a KNN list (``<name>-k<k>``)."""
    if spec.knn is not None and isinstance(spec.knn.k, list):
        return [f"{spec.name}-k{k}" for k in spec.knn.k]
    return [spec.name]


def prepare_members(cfg: Config) -> dict[str, Config]:
    """Every Keras member's config, validated, before anything is trained.

    Raises:
        ConfigError: a member's config is invalid, or two models share a name.
    """
    names = [n for m in cfg.stack.members for n in output_names(m)] + [s.name for s in cfg.stack.level2]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"{cfg.source}: stack: model names must be unique (a KNN list of k makes <name>-k<k>); "
            f"repeated: {', '.join(dup)}"
        )
    return {m.name: member_config(cfg, m, i) for i, m in enumerate(cfg.stack.members) if m.config is not None}


def check_reused(run: StackRun, fresh: bool) -> None:
    """Refuse, before anything is trained, a reused run that does not fit the stack
    (``fresh``: a new stack run, so none is in it yet)."""
    for spec in run.cfg.stack.members:
        if spec.run is not None and (fresh or member_status(run.member_dir(spec.name)) != FINISHED):
            check_reusable(run, spec)


def member_entries(cfg: Config) -> list[dict]:
    """stack.json's ``members``: one entry per model of level 1."""
    return [
        {
            "name": name,
            "member": m.name,
            "kind": m.kind,
            "folder": f"{MEMBERS}/{name}",
            "source": m.config or m.run or m.kind,
        }
        for m in cfg.stack.members
        for name in output_names(m)
    ]


def train_level1(run: StackRun, configs: dict[str, Config]) -> list[ModelOutput]:
    """Train (or reuse) every member in priority order; the outputs of those that finished."""
    members, log, outputs = run.cfg.stack.members, run.log, []
    for i, spec in enumerate(members):
        label = f"[member {i + 1}/{len(members)}]"
        # The first member to train always finishes: without one there is no submission.
        run.budget.enforce = bool(outputs)
        finished = is_finished(run, spec)
        why = None if finished else run.budget.room()
        if why is not None:
            run.left_out.append(LeftOut(spec.name, why))
            log(f"{label} {spec.name}: left out: {why}", 1)
            continue
        if finished:
            log(f"{label} {spec.name}: finished earlier, reused", 1)
        else:
            log(f"{label} {spec.name} ({spec.kind}){run.budget.left_text()}", 1)
            try:
                _train(run, spec, configs, label)
            except OverBudget as e:
                run.left_out.append(LeftOut(spec.name, e.why))
                log(f"{label} {spec.name}: stopped and left out: {e.why}", 1)
                continue
        for out in member_outputs(run, spec):
            log(f"{label} {out.name}: OOF log loss {log_loss(run.data.train.y, out.oof):.4f}", 1)
            outputs.append(out)
    return outputs


def _train(run: StackRun, spec: MemberSpec, configs: dict[str, Config], label: str) -> None:
    if spec.config is not None:
        train_cv_member(run, configs[spec.name], spec, label)
    elif spec.run is not None:
        reuse_run(run, spec)
    else:
        train_learner_member(run, spec, label)


def is_finished(run: StackRun, spec: MemberSpec) -> bool:
    """Whether a member's folder(s) hold its finished outputs."""
    if spec.config is not None or spec.run is not None:
        return member_status(run.member_dir(spec.name)) == FINISHED
    return all((run.member_dir(n) / METRICS).exists() for n in output_names(spec))


def member_outputs(run: StackRun, spec: MemberSpec) -> list[ModelOutput]:
    """A finished member's outputs, read back from its folder(s)."""
    if spec.config is not None or spec.run is not None:
        return [cv_output(run, spec.name)]
    outs = []
    for name in output_names(spec):
        folder = run.member_dir(name)
        out = read_output(folder, name, 1, run.data.train.ids, run.data.fold_of, run.classes, run.id_column)
        metrics = read_json(folder / METRICS)
        out.train_seconds, out.predict_seconds = metrics["train_seconds"], metrics["predict_seconds"]
        outs.append(out)
    return outs


def _params(run: StackRun, spec: MemberSpec) -> dict:
    params = (spec.lightgbm or spec.knn).model_dump(mode="json")
    if run.smoke and spec.lightgbm is not None:
        params["max_rounds"] = min(params["max_rounds"], SMOKE_ROUNDS)
    return params


def train_learner_member(run: StackRun, spec: MemberSpec, label: str) -> None:
    """A LightGBM or KNN member: its unfinished folds as jobs on the executor, then its files."""
    folder, log, opts, folds = run.member_dir(spec.name), run.log, run.options, run.folds
    params, outputs = _params(run, spec), tuple(output_names(spec))
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / MEMBER_FILE, {"kind": spec.kind, "params": params, "outputs": list(outputs)})
    todo = [f for f in range(folds) if not fold_files(folder, f)[1].exists()]
    if len(todo) < folds:
        log(f"{label} {spec.name}: {folds - len(todo)}/{folds} folds finished earlier, reused", 1)
    seconds: list[float] = []
    with execute.open_executor(opts.scheduler, opts.workers, opts.member_threads, log) as ex:

        def finished(done) -> None:
            seconds.append(done.seconds)
            n, rec = folds - len(todo) + len(seconds), done.value
            # "0.4870" for one output; "k2 0.61, k4 0.55, ..." for a KNN list
            scores = ", ".join(
                f"{k.removeprefix(spec.name).removeprefix('-')} {v:.4f}".strip()
                for k, v in rec.log_loss.items()
            )
            log(
                f"{label} {spec.name}: fold {rec.fold} ({n}/{folds}): log loss {scores}, "
                f"{done.seconds:.1f} s{run.budget.left_text()}",
                1,
            )
            run.budget.check(spec.name, n, folds, seconds, ex.slots)

        jobs = [
            learner_job(
                LearnerFold(
                    spec.name,
                    spec.kind,
                    params,
                    outputs,
                    f,
                    member_seed(run.cfg.seed, f, 0),
                    run.cfg.stack.inner_validation,
                    ex.threads,
                    label,
                )
            )
            for f in todo
        ]
        test_x = None if run.test is None else run.test[1]
        hint = f"continue with: ottotrain stack --resume {run.run_dir}"
        ex.map(jobs, finished, out=run.run_dir, data=StackData(run.data, test_x), resume_hint=hint)
    write_learner_outputs(run, spec, params, outputs)


def write_learner_outputs(run: StackRun, spec: MemberSpec, params: dict, outputs: tuple[str, ...]) -> None:
    """Each output's oof.csv, submission.csv, metrics.json (last) from the member's fold files."""
    folder, train = run.member_dir(spec.name), run.data.train
    records = [json.loads(fold_files(folder, f)[1].read_text(encoding="utf-8")) for f in range(run.folds)]
    for name in outputs:
        oof = np.zeros((len(train.y), len(run.classes)))
        tests = []
        for f in range(run.folds):
            p_val, p_test = read_fold(folder, f, name)
            oof[run.data.fold_of == f] = p_val
            tests.append(p_test)
        test = None if run.test is None else np.mean(tests, axis=0)
        out_dir = run.member_dir(name)
        write_output(
            out_dir,
            ModelOutput(name, 1, oof, test),
            train.ids,
            run.data.fold_of,
            train.y,
            run.classes,
            run.id_column,
            run.cfg.data.target_column,
            None if run.test is None else run.test[0],
        )
        if out_dir != folder:
            k = int(name.rsplit("-k", 1)[1])
            write_json(out_dir / MEMBER_FILE, {"kind": spec.kind, "params": params | {"k": k}})
        share = 1 / len(outputs)  # one neighbour search served every k
        write_json(
            out_dir / METRICS,
            {
                "kind": spec.kind,
                "oof_log_loss": round(log_loss(train.y, oof), 6),
                "oof_accuracy": round(float(np.mean(oof.argmax(1) == train.y)), 6),
                "fold_log_loss": [r["log_loss"][name] for r in records],
                "train_seconds": round(sum(r["train_seconds"] for r in records) * share, 3),
                "predict_seconds": round(sum(r["predict_seconds"] for r in records) * share, 3),
            },
        )
