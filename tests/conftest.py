"""Shared fixtures: tiny synthetic data and configs, so the suite runs in minutes on 2 cores."""

import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_OTTO = ROOT.parent / "shared" / "otto"

# Keep TensorFlow single-process friendly and quiet in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Built-in synthetic data goes to a per-session cache, never the user's home."""
    monkeypatch.setenv("OTTOTRAIN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Synthetic Otto-shaped train.csv (600 rows) and test.csv (200 rows)."""
    from ottotrain.data.synth import make_data

    d = tmp_path_factory.mktemp("tiny")
    train, test = make_data(d, rows=600, seed=0, test_rows=200)
    return {"dir": d, "train": train, "test": test}


def tiny_config(data, **train):
    """A small, fast config dict over ``tiny_data``; ``train`` keys override train settings."""
    cfg = {
        "name": "tiny",
        "seed": 1,
        "data": {"train": str(data["train"]), "test": str(data["test"])},
        "model": {
            "layers": [
                {"Dense": {"units": 16, "activation": "relu"}},
                {"Dense": {"units": "n_classes"}},
                {"Activation": "softmax"},
            ]
        },
        "train": {
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "epochs": 2,
            "batch_size": 64,
            **train,
        },
    }
    return cfg


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict (or raw text) to tmp_path/config.yaml and return the path."""

    def write(cfg, name="config.yaml"):
        p = tmp_path / name
        p.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
        return p

    return write


@pytest.fixture
def tiny_config_path(tiny_data, write_config):
    return write_config(tiny_config(tiny_data))


def error_line(result):
    """The single 'Error: ...' line of a failed command (and check there is nothing worse)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def run_cli(*args, input=None):
    """Invoke the CLI in-process; returns click's Result."""
    from click.testing import CliRunner

    from ottotrain.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def cli():
    return run_cli


def python_cmd():
    return [sys.executable, "-m", "ottotrain"]


def default_sigint() -> None:
    """A child's ``preexec_fn``: default Ctrl-C handling even when this process was started with
    SIGINT ignored (a background job of a non-interactive shell, as CI scripts often are):
    Python then keeps SIGINT ignored, and a Ctrl-C test would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def subprocess_env(tmp):
    """The environment of an ``ottotrain`` child process: this checkout, a private cache."""
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
        OTTOTRAIN_CACHE=str(tmp / "cache"),
        PYTHONPATH=str(ROOT),
    )
    env.pop("OTTOTRAIN_DEBUG", None)
    return env


def load_tool(name: str):
    """``tools/<name>.py`` as a module (its ``__main__`` block does not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
