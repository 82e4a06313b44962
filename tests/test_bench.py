"""Every benchmark script in bench/ runs: its ``--smoke``, so that a changed signature breaks a test
here and not the benchmark suite weeks later (bench/run.py).

The Python scripts' smokes run in this process, one after another, and so do the ``ottotrain``
commands and probe scripts they time (``common.timed`` runs them in-process in a --smoke run):
TensorFlow is imported once for all of them, not once per command. What a script starts
itself otherwise (cluster_cv.py's cv runs and Dask workers) and the shell script run as
subprocesses.
"""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))  # the scripts import `common` as they do when run as bench/SCRIPT.py
common = importlib.import_module("common")
suite = common.load_script(BENCH / "run.py")


# What each smoke must leave in the results folder (besides succeeding): the topic file with
# its block, or (speed.py) the whole generated file. Scripts that only print leave nothing.
WRITES = {
    "speed.py": ("speed.md", "## 7. Growth"),
    "adam_fused.py": ("probes.md", "<!-- begin adam_fused.py -->"),
    "missing_cost.py": ("side_by_side.md", "<!-- begin missing_cost.py -->"),
    "tracking_cost.py": ("tracking.md", "<!-- begin tracking_cost.py -->"),
    "categorical_load.py": ("side_by_side.md", "<!-- begin categorical_load.py -->"),
    "before_after.py": ("side_by_side.md", "<!-- begin before_after.py -->"),
    "public_tables.py": ("side_by_side.md", "<!-- begin public_tables.py -->"),
    "tabm_speed.py": ("tabm.md", "<!-- begin tabm_speed.py -->"),
    "explain_time.py": ("explain.md", "<!-- begin explain_time.py -->"),
}
NOT_HERE = {  # scripts whose smoke is not run here, and why
    "metric.sh": "hours on the real data; every command in it is another script's, smoked here",
}
NEEDS = {"autogluon_otto.py": "autogluon.tabular"}  # the 'autogluon' extra (an environment of its own)


def test_the_suite_covers_every_script():
    covered = sorted({b.script for b in suite.SUITE})
    assert covered == suite.scripts(), "a script in bench/ that bench/run.py does not run: add it to SUITE"


# Their smokes start cv runs and Dask workers in subprocesses, or run a whole shell script: the
# project's 'slow' mark, so that `-m "not slow"` leaves them out while editing.
SLOW = ("cluster_cv.py", "equivalence.sh")


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in suite.scripts()]
)
def test_smoke(script, tmp_path, monkeypatch, capfd):
    if script in NOT_HERE:
        pytest.skip(NOT_HERE[script])
    if not script.endswith(".sh") and not suite.has_smoke(script):
        pytest.skip(f"bench/{script} has no --smoke yet")
    if script in NEEDS:
        pytest.importorskip(NEEDS[script], reason="its own environment (bench/autogluon_otto.py's docstring)")
    monkeypatch.setattr(common, "OUT", tmp_path)  # --smoke's results: tmp_path/smoke/
    if script.endswith(".sh"):
        p = subprocess.run(
            ["bash", BENCH / script, tmp_path / "out", "--smoke"], capture_output=True, text=True
        )
        assert p.returncode == 0, p.stderr[-3000:]
        assert p.stdout.strip()
    else:
        common.call_main(common.load_script(BENCH / script), ["--smoke"])
        assert capfd.readouterr().out.strip(), f"{script} --smoke printed nothing"
    if script in WRITES:
        name, marker = WRITES[script]
        assert marker in (tmp_path / "smoke" / name).read_text()
    assert not (BENCH / "results" / ".speed.md.tmp").exists()


def test_a_block_is_replaced_and_the_rest_kept(tmp_path):
    path = tmp_path / "topic.md"
    path.write_text("# topic\n\nRecorded by hand.\n")
    common.write_block(path, "x.py", "<!-- begin x.py -->\nfirst\n<!-- end x.py -->\n", "topic")
    common.write_block(path, "y.py", "<!-- begin y.py -->\nother\n<!-- end y.py -->\n", "topic")
    common.write_block(path, "x.py", "<!-- begin x.py -->\nsecond\n<!-- end x.py -->\n", "topic")
    text = path.read_text()
    assert "Recorded by hand." in text and "other" in text and "second" in text
    assert "first" not in text


def test_readme_table_comes_from_the_recorded_figures():
    recorded = suite.json.loads((BENCH / "results" / "speed.json").read_text())
    table = suite.readme_table(recorded)
    assert (BENCH / "results" / "README-table.md").read_text() == table, "run `python bench/run.py --readme`"
    assert table.strip() in (ROOT / "README.md").read_text(), (
        "paste bench/results/README-table.md into the README"
    )
    # Figures changed in the recorded run reach their rows, rounded as shown.
    doc = suite.json.loads(suite.json.dumps(recorded))
    model = next(r for r in doc["results"]["training"] if r["model"] == "mlp3x512")
    model["ratio"], model["ratio_steady"] = 0.7249, 0.651
    times = doc["results"]["startup"]["times"]
    for k in times:
        times[k] = 0.4791 if "bad.yaml" in k else 0.1549
    table = suite.readme_table(doc)
    assert "| 3×512 s/epoch ratio (steady) | ≤ 0.85 | **0.72** (0.65) |" in table
    assert "| `ottotrain --help` / config error, seconds, no TensorFlow | < 0.5 s | 0.155 / 0.479 |" in table


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--quick"], "python bench/speed.py --quick"),
        (["--smoke"], "python bench/plain_keras.py --smoke"),
        ([], "python bench/public_tables.py --smoke"),  # no public tables given: its smoke
        (["--public-tables", "/data/public"], "python bench/public_tables.py /data/public"),
    ],
)
def test_run_lists_each_command(argv, expected, capsys):
    assert suite.main([*argv, "--list"]) == 0
    assert expected in capsys.readouterr().out
