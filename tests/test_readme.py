"""The README stays true: every config key is documented, every command is shown, the
generated config reference is current and the Python API example runs."""

import importlib.util
import re

import pytest
import yaml

from tests.conftest import ROOT, tiny_config


def _keys(model, prefix=""):
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        out.append(key)
        for arg in getattr(field.annotation, "__args__", (field.annotation,)):
            nested = isinstance(arg, type) and issubclass(arg, BaseModel)
            if nested and prefix.count(".") < 1 and key in ("data", "model", "train"):
                out.extend(_keys(arg, key + "."))
    return out


def _readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _config_reference_tool():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_is_in_the_reference():
    from ottotrain.config import Config

    readme = _readme()
    ref = readme[readme.index("### Reference") :]
    missing = [k for k in _keys(Config) if f"`{k}`" not in ref and k not in ("data", "model", "train")]
    assert not missing, f"README config reference lacks: {missing}"


def test_config_reference_is_generated_from_the_schema():
    tool = _config_reference_tool()
    readme = _readme()
    assert readme.index("### Reference") < readme.index(tool.START), (
        "the generated block belongs under '### Reference'"
    )
    assert tool.readme_block(readme) == tool.render(), (
        "README.md's config reference differs from the schema: run `python tools/config_reference.py --write`"
    )


def test_config_reference_is_deterministic(tmp_path):
    tool = _config_reference_tool()
    assert tool.render() == tool.render()
    # --write on an up-to-date file changes nothing; on a stale block it restores the output.
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{tool.START}\nold text\n{tool.END}\n\nafter\n", encoding="utf-8")
    assert tool.write(stale) is True
    text = stale.read_text(encoding="utf-8")
    assert tool.readme_block(text) == tool.render()
    assert text.startswith("# x\n\n") and text.endswith("\n\nafter\n")
    assert tool.write(stale) is False


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
