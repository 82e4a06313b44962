"""The README stays true and short: every command is shown and its commands run as written,
every example writes where git ignores it, and the Python API example runs (the generated
config reference, docs/config.md, is tests/test_config.py's)."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, tiny_config


def _readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_command_is_documented():
    from ottotrain.cli import main

    readme = _readme()
    for name in main.commands:
        assert re.search(rf"ottotrain {name}\b", readme), f"README has no example of '{name}'"


def _python_api_example(readme: str) -> str:
    """The first ```python block of the README's "Python API" section."""
    start = readme.index("## Python API")
    end = readme.find("\n## ", start + 1)
    section = readme[start : end if end != -1 else len(readme)]
    m = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert m, "the README's Python API section has no ```python block"
    return m.group(1)


@pytest.mark.slow
def test_python_api_example(tiny_data, tmp_path, monkeypatch):
    code = _python_api_example(_readme())
    assert '"configs/quickstart.yaml"' in code
    config = tmp_path / "quickstart.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tiny_data), sort_keys=False))
    code = code.replace('"configs/quickstart.yaml"', repr(str(config)))
    monkeypatch.chdir(tmp_path)  # runs_root="runs" lands in the tmp dir
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102
    result = namespace["result"]  # the last one: the cv run's
    assert "oof_log_loss" in result
    assert (tmp_path / result["run_dir"]).is_dir()
    runs = sorted((tmp_path / "runs").iterdir())
    cv_runs = [p for p in runs if "-cv-" in p.name]
    fit_runs = [p for p in runs if "-cv-" not in p.name]
    assert len(cv_runs) == 1 and len(fit_runs) == 1, runs
    assert (fit_runs[0] / "model.keras").is_file()


# --- The README's commands: each parses as the CLI takes it and writes where git ignores it.

FENCE = re.compile(r"```(bash|console)\n(.*?)```", re.DOTALL)
# Where a command writes, by its parameter's name in the click command.
OUTPUTS = ("output", "run_dir", "study_dir", "out_dir", "path")


def _commands(text: str) -> list[tuple[str, list[str], str | None]]:
    """Every ``ottotrain`` command of the bash and console blocks: (line, its arguments, > file)."""
    out = []
    for kind, body in FENCE.findall(text):
        for line in body.splitlines():
            if kind == "console":
                if not line.startswith("$ "):
                    continue  # its output
                line = line[2:]
            for part in re.split(r"&&|\|", line):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # PGPASSWORD=... ottotrain
                    words.pop(0)
                if words[:1] != ["ottotrain"]:
                    continue
                redirect = None
                if ">" in words:
                    i = words.index(">")
                    words, redirect = words[:i], words[i + 1]
                out.append((part.strip(), words[1:], redirect))
    return out


def _doc_commands():
    texts = {"README.md": _readme(), "docs/commands.md": (ROOT / "docs" / "commands.md").read_text()}
    return [(name, *c) for name, text in texts.items() for c in _commands(text)]


def test_the_readme_reads_in_ten_minutes():
    readme = _readme()
    assert len(readme.splitlines()) <= 260
    assert len(readme.split()) <= 2000  # 10 minutes at 200 words a minute, tables and code included
    assert len(_commands(readme)) >= 20


@pytest.mark.parametrize("doc, line, args, redirect", _doc_commands())
def test_every_documented_command_parses_and_writes_where_git_ignores(doc, line, args, redirect):
    from ottotrain.cli import main

    ignored = {x.strip("/") for x in (ROOT / ".gitignore").read_text().splitlines() if x.startswith("/")}
    assert args and args[0] in main.commands, f"{doc}: {line}: no such command"
    command = main.commands[args[0]]
    ctx = command.make_context(args[0], list(args[1:]))  # a usage error raises here
    written = [str(ctx.params[k]) for k in OUTPUTS if ctx.params.get(k) is not None]
    if redirect:
        written.append(redirect)
    for path in written:
        assert Path(path).parts[0] in ignored, f"{doc}: {line}: writes {path}, which git does not ignore"
    for word in args:
        if word.startswith("configs/"):
            assert (ROOT / word).is_file(), f"{doc}: {line}: {word} does not exist"


@pytest.mark.slow
def test_the_quickstart_runs_as_written_and_converges(tmp_path, monkeypatch, cli):
    """The Quickstart block, command by command, from a folder with the repository's configs."""
    readme = _readme()
    start = readme.index("## Quickstart")
    block = readme[start : readme.index("\n## ", start + 1)]
    commands = _commands(block)
    assert [c[1][0] for c in commands] == ["make-data", "fit", "predict"]
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    made = {}  # the README's run directory -> the one this fit made
    for _, args, _ in commands:
        args = [made.get(a, a) for a in args]
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        if args[0] == "fit":
            actual_run = r.stdout.strip().splitlines()[-1]
            made[next(x for x in block.splitlines() if x.startswith("runs/quickstart-"))] = actual_run
            metrics = json.loads((tmp_path / actual_run / "metrics.json").read_text())
            # Converged within its budget: early stopping ended it, its best epoch not its last.
            assert metrics["stopped_by"] == "early_stopping", metrics
            assert metrics["best_epoch"] < metrics["epochs_run"] < 40
    assert (tmp_path / "runs" / "submission.csv").is_file()
