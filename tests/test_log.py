"""Progress phases: lines in a log file, silence when quiet, one line and exit 130 on Ctrl-C."""

import io
import signal
import subprocess
import time

import pytest
import yaml

from ottotrain import log as progress
from ottotrain.log import Log
from tests.conftest import default_sigint, python_cmd, subprocess_env


@pytest.fixture
def fast_clock(monkeypatch):
    """A log file hears of a phase at once and every 20 ms after (10 s and 2 s in use)."""
    monkeypatch.setattr(progress, "LOG_EVERY", 0.02)
    monkeypatch.setattr(progress, "SUMMARY_AFTER", 0.0)
    monkeypatch.setattr(progress, "_TICK", 0.01)


def test_a_phase_in_a_log_file_gives_lines_with_rate_and_time_left(fast_clock):
    out = io.StringIO()
    log = Log(1, out)
    with log.phase("Nearest-neighbour features", total=300) as p:
        for _ in range(3):
            time.sleep(0.1)
            p.advance(100)
    lines = out.getvalue().splitlines()
    progress_lines = [x for x in lines if "%" in x]
    assert progress_lines and all(x.startswith("Nearest-neighbour features: ") for x in progress_lines)
    assert any("rows/s" in x and "<" in x for x in progress_lines)  # rate and time left
    assert lines[-1].startswith("Nearest-neighbour features: 300 rows in ")  # the phase's end
    assert "\r" not in out.getvalue()  # plain lines, no redrawing in a file


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_phase_on_a_terminal_is_a_live_line_with_rate_and_time_left(fast_clock, monkeypatch):
    monkeypatch.setattr(progress, "SHOW_AFTER", 0.0)
    term = Terminal()
    with Log(1, term).phase("Predicting", total=10) as p:
        time.sleep(0.1)
        p.advance(5)
        time.sleep(0.1)
    drawn = term.getvalue().split("\r")
    assert any(x.startswith("Predicting:  50%") and "5/10" in x and "<" in x for x in drawn), drawn
    assert drawn[-1].startswith("Predicting: 5 rows in ")  # the live line cleared, the summary stays


def test_a_quiet_log_and_no_log_say_nothing(fast_clock):
    out = io.StringIO()
    with Log(0, out).phase("Reading", total=10) as p:
        time.sleep(0.05)
        p.advance(10)
    with progress.phase("Reading") as p:  # no command's log: library use, tests
        time.sleep(0.05)
    assert out.getvalue() == ""


def test_ctrl_c_in_a_phase_is_named_once(fast_clock):
    out = io.StringIO()
    log = Log(1, out)
    with pytest.raises(KeyboardInterrupt):
        with log.phase("Building the model"):
            raise KeyboardInterrupt
    log.interrupted()
    log.interrupted()  # said once only
    assert out.getvalue().splitlines()[-1] == "Interrupted during building the model; nothing was written"
    assert out.getvalue().count("Interrupted") == 1


def test_check_logs_each_phase_of_a_knn_config(tiny_data, write_config, cli, fast_clock):
    cfg = {
        "data": {"train": str(tiny_data["train"]), "test": str(tiny_data["test"]), "knn": {"k": [1, 2]}},
        "model": {"layers": [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]},
    }
    r = cli("check", write_config(cfg), "--json")
    assert r.exit_code == 0, r.output
    err = r.stderr
    for name in ("Reading train.csv", "Reading test.csv", "Nearest-neighbour features", "Building the model"):
        assert f"\n{name}" in "\n" + err, (name, err)
    assert "Nearest-neighbour features: 200 rows in" in err  # the test rows, counted
    assert r.stdout.lstrip().startswith("{")  # stdout holds the result only


@pytest.mark.slow
def test_ctrl_c_during_the_knn_features_prints_one_line_and_exits_130(tmp_path):
    from ottotrain.data.synth import make_data

    train, test = make_data(tmp_path / "data", rows=30000, seed=0, test_rows=10)
    cfg = tmp_path / "knn.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"train": str(train), "test": str(test), "knn": {"k": [1, 2, 4]}},
                "model": {"layers": [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]},
            }
        )
    )
    env = {**subprocess_env(tmp_path), "OTTOTRAIN_PROGRESS_SECONDS": "0.2"}
    proc = subprocess.Popen(
        [*python_cmd(), "check", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("Nearest-neighbour features:"):
                proc.send_signal(signal.SIGINT)
                break
        rest, err_rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(seen) + err_rest
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Aborted" not in err
    interrupted = [x for x in err.splitlines() if x.startswith("Interrupted")]
    assert interrupted == ["Interrupted during nearest-neighbour features; nothing was written"], err
    assert rest == ""  # no result on stdout
