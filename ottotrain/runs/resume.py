"""The resume rules, one place for fit and cv: which runs may be continued, with which config."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ottotrain.config import Config, config_to_dict, dump_yaml
from ottotrain.config.diff import config_changes, format_change
from ottotrain.errors import RunError, first_line
from ottotrain.io import write_text
from ottotrain.runs.rundir import (
    FINISHED,
    check_format,
    check_not_running,
    check_safe,
    read_status,
    remove_temp_files,
)

# What may change when a run is resumed: how long it trains (a study: how many trials), not
# what it trains. Any other difference would make the resumed run something no
# uninterrupted run could have been.
RESUMABLE_CHANGES = {
    "fit": ("train.epochs", "train.early_stopping.patience"),
    "cv": ("train.epochs", "train.early_stopping.patience"),
    "tune": ("tune.trials", "tune.timeout", "tune.heartbeat"),
}
# A finished study can be continued with more trials; a finished fit or cv run is done.
_CONTINUABLE = ("tune",)


def _and(words) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _saved_config(run_dir: Path) -> dict:
    """The run's config.yaml, normalised through the schema (older files lack new defaults)."""
    path = run_dir / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
        return config_to_dict(Config.model_validate(tree))
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as e:
        first = first_line(e)
        raise RunError(
            f"{path}: cannot be read ({first}); the run cannot be resumed, start a new one"
        ) from None


def check_resumable(run_dir, cfg: Config, kind: str) -> dict:
    """Refuse to resume a run that is finished, foreign, live, tampered with or reconfigured.

    Changes to ``RESUMABLE_CHANGES`` are accepted and written to the run's config.yaml
    (so the next resume compares with them); any other difference is refused, listed.
    Temporary files a killed process left are deleted first: they are not the run's.

    Returns:
        The run's status.json.
    """
    run_dir = Path(run_dir)
    info = read_status(run_dir)
    check_format(run_dir, info)
    other = info.get("kind", "fit")
    if other != kind:
        raise RunError(
            f"{run_dir}: not a {kind} run (made by 'ottotrain {other}'); "
            f"resume it with 'ottotrain {other} --resume'"
        )
    if info["status"] == FINISHED and kind not in _CONTINUABLE:
        raise RunError(f"{run_dir}: the run already finished; start a new one with 'ottotrain {kind}'")
    check_not_running(run_dir, info)
    remove_temp_files(run_dir)
    check_safe(run_dir)
    saved, now = _saved_config(run_dir), config_to_dict(cfg)
    changes = config_changes(saved, now)
    allowed = RESUMABLE_CHANGES[kind]
    refused = [format_change(*c) for c in changes if c[0] not in allowed]
    if refused:
        raise RunError(
            f"{run_dir}: the config changed since the run started, refusing to resume: "
            + "; ".join(refused[:10])
            + ("; ..." if len(refused) > 10 else "")
            + f"; only {_and(allowed)} may change on resume "
            f"(--set); otherwise resume without CONFIG or --set, or start a new run"
        )
    if changes:
        write_text(run_dir / "config.yaml", dump_yaml(now))
    return info
