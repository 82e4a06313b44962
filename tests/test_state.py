"""Typed run state: the same JSON files as 1.0, read back into dataclasses."""

import json

import pytest

from ottotrain.errors import RunError
from ottotrain.runs.state import EpochRow, LrPlateau, MemberRecord, Plateau, TrainState

# trainer.json as ottotrain 1.0 wrote it (a dict of dicts; sched {} before any reduction).
V1_TRAINER = {
    "epoch": 2,
    "base_lr": 0.01,
    "best": 0.91,
    "best_epoch": 2,
    "stop": None,
    "history": [
        {
            "epoch": 1,
            "loss": 1.2,
            "accuracy": None,
            "val_loss": 1.0,
            "val_accuracy": 0.6,
            "lr": 0.01,
            "seconds": 0.5,
        },
        {
            "epoch": 2,
            "loss": 0.9,
            "accuracy": None,
            "val_loss": 0.91,
            "val_accuracy": 0.7,
            "lr": 0.01,
            "seconds": 0.4,
        },
    ],
    "es": {"best": 0.91, "wait": 0},
    "sched": {},
    "checkpoint": "epoch-00002.npz",
    "best_file": "best-00002.npz",
    "seed_state": {"dropout": [[1, 2]]},
}


def test_a_1_0_resume_state_reads_back_typed(tmp_path):
    p = tmp_path / "trainer.json"
    p.write_text(json.dumps(V1_TRAINER))
    s = TrainState.load(p)
    assert s.history[1] == EpochRow(2, 0.9, None, 0.91, 0.7, 0.01, 0.4)
    assert s.es == Plateau(0.91, 0) and s.sched == LrPlateau(None, 0, None)
    assert (s.epoch, s.best_epoch, s.checkpoint, s.best_file) == (2, 2, "epoch-00002.npz", "best-00002.npz")
    s.save(p)  # and writes the same keys back, the resume point of the next epoch
    again = json.loads(p.read_text())
    assert {k: again[k] for k in V1_TRAINER if k != "sched"} == {
        k: v for k, v in V1_TRAINER.items() if k != "sched"
    }
    assert TrainState.load(p) == s


@pytest.mark.parametrize(
    "change, message",
    [
        ({"checkpoint": "../../etc/passwd"}, "damaged or foreign resume state"),
        ({"history": [{"epoch": 1}]}, "damaged resume state"),
        ({"es": {"best": 1, "wait": 0, "other": 2}}, "damaged resume state"),
    ],
)
def test_damaged_resume_state_is_one_clear_error(tmp_path, change, message):
    p = tmp_path / "trainer.json"
    p.write_text(json.dumps({**V1_TRAINER, **change}))
    with pytest.raises(RunError, match=message):
        TrainState.load(p)


def test_history_of_a_missing_or_damaged_state_is_empty(tmp_path):
    assert TrainState.history_of(tmp_path / "none.json") == []
    (tmp_path / "bad.json").write_text("{")
    assert TrainState.history_of(tmp_path / "bad.json") == []


def test_member_record_round_trip(tmp_path):
    rec = MemberRecord("fold1-seed1", 42, 0.5, 0.8, 3, 3, 5, "early_stopping", 400, 200, 1.5, 1.7)
    rec.save(tmp_path / "m.json")
    assert MemberRecord.load(tmp_path / "m.json") == rec
    (tmp_path / "m.json").write_text('{"name": "x"}')
    with pytest.raises(RunError, match="damaged member record"):
        MemberRecord.load(tmp_path / "m.json")


def test_preprocessing_state_is_typed_and_written_as_before():
    import numpy as np

    from ottotrain.config import DataConfig
    from ottotrain.features import Preprocessor

    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    pre = Preprocessor.fit(x, DataConfig(train="t.csv", tfidf=True), ["a", "b"], ["c0", "c1"])
    d = json.loads(pre.to_json())
    # 1.0's layout: no key for what does not apply (no knn, no quantiles), same key order;
    # then data.missing's (its medians are kept for a value missing at predict time).
    assert list(d) == [
        "format",
        "features",
        "classes",
        "id_column",
        "target_column",
        "transform",
        "power",
        "tfidf",
        "scaling",
        "idf",
        "center",
        "scale",
        "missing",
        "medians",
        "indicators",
    ]
    assert d["medians"] == [5.0, 6.0] and d["indicators"] == []
    again = Preprocessor.from_json(pre.to_json())
    assert again.state == pre.state and again.state.features == ["a", "b"]
    with pytest.raises(RunError, match="damaged preprocessing state"):
        Preprocessor.from_json(json.dumps({"format": 2, "features": ["a"]}))
