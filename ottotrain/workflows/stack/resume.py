"""Resuming a stack: what may change since it started, and what may not.

A stack run may be continued after an interruption, and also after it finished: with
members added to its config, ``--resume`` trains only those, and the top again on every
member; a level-2 learner is trained again when its spec or its inputs (the finished level-1
models) changed, and otherwise reused (``level2.reuse_level2``). What may change: members
added or removed, ``stack.level2``, ``stack.top`` and ``stack.time_limit``. What may not:
the rows, folds and seed every member shares, ``stack.inner_validation``, and a member kept
under its name (a changed member is a new model: give it a new name). A removed member's
folder is kept in the run, unused.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ottotrain import runs
from ottotrain.config import Config, config_to_dict, dump_yaml
from ottotrain.config.diff import config_changes, format_change
from ottotrain.errors import RunError, first_line
from ottotrain.io import write_text
from ottotrain.workflows.stack.state import STACK_KIND

# Parts of the stack section that may change on resume (the members are compared by name).
_FREE = ("members", "level2", "top", "time_limit")


def _saved(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    try:
        return config_to_dict(Config.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))
    except (OSError, ValueError, yaml.YAMLError, ValidationError) as e:
        raise RunError(f"{path}: cannot be read ({first_line(e)}); start a new stack run") from None


def check_stack_resumable(run_dir, cfg: Config) -> dict:
    """Refuse to resume a run that is not a stack, is live, or whose shared settings changed.

    Writes the new config.yaml when the change is allowed. Returns the run's status.json.
    """
    run_dir = Path(run_dir)
    info = runs.read_status(run_dir)
    runs.check_format(run_dir, info)
    if info.get("kind", "fit") != STACK_KIND:
        other = info.get("kind", "fit")
        raise RunError(
            f"{run_dir}: not a stack run (made by 'ottotrain {other}'); "
            f"resume it with 'ottotrain {other} --resume'"
        )
    runs.check_not_running(run_dir, info)
    runs.remove_temp_files(run_dir)
    runs.check_safe(run_dir)
    saved, now = _saved(run_dir), config_to_dict(cfg)
    refused = _refused(saved, now)
    if refused:
        raise RunError(
            f"{run_dir}: the config changed since the stack started, refusing to resume: "
            + "; ".join(refused[:6])
            + ("; ..." if len(refused) > 6 else "")
            + "; only members added or removed, stack.level2, stack.top and stack.time_limit may "
            "change (a changed member needs a new name), or start a new stack run"
        )
    if saved != now:
        write_text(run_dir / "config.yaml", dump_yaml(now))
    return info


def _refused(saved: dict, now: dict) -> list[str]:
    """The changes resuming does not allow, as 'key: old -> new' lines."""

    def fixed(tree: dict) -> dict:
        stack = {k: v for k, v in (tree.get("stack") or {}).items() if k not in _FREE}
        return {**tree, "stack": stack}

    out = [format_change(*c) for c in config_changes(fixed(saved), fixed(now))]
    was = {m["name"]: m for m in saved["stack"]["members"]}
    for member in now["stack"]["members"]:
        old = was.get(member["name"])
        if old is not None and old != member:
            changes = config_changes(old, member)
            out.append(f"member '{member['name']}' changed ({format_change(*changes[0])})")
    return out
