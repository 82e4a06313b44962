"""The one entry to ottotrain's benchmarks: every script in bench/, one after another.

    python bench/run.py              # every benchmark at its real size (the real Otto data where found)
    python bench/run.py --quick      # every benchmark, a shorter pass (results in bench/out/quick/)
    python bench/run.py --smoke      # every script's --smoke, seconds each (results in bench/out/smoke/)
    python bench/run.py --only speed.py,tabm_speed.py    # some of them
    python bench/run.py --list       # what runs, how, and the topic file each writes
    python bench/run.py --readme     # the README's benchmark table and bench/RESULTS.md, from bench/results/

Each script runs in its own process and writes its own topic file, bench/results/<topic>.md
(``common.Run.record``). A script whose real run needs something the suite cannot make (another
checkout, public tables, a trained run, hours) runs its ``--smoke`` instead unless that is given
(``--before``, ``--public-tables``, ``--serve-runs``, ``--long``), and the summary says so. The
probes that ``speed.py`` drives (``plain_keras.py``, ...) run inside it, and on their own only
with ``--smoke``. Every ``--smoke`` is also run by tests/test_bench.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import common
from common import BENCH, RESULTS, ROOT


@dataclass(frozen=True)
class Bench:
    """One benchmark of the suite.

    Attributes:
        script: its file in bench/.
        topic: the results file it writes (bench/results/<topic>.md); None for a probe.
        full, quick: its arguments for the real run and for ``--quick``.
        driven_by: the script that runs this one in the real run (alone it runs its ``--smoke``).
        needs: what its real run needs beyond the repository; the option of run.py that gives it.
            Without it, the suite runs its ``--smoke`` (a shell script: nothing).
        key: tells two entries of one script apart (another mode of it).
        output: for a script that only prints, the title under which run.py records its output.
    """

    script: str
    topic: str | None
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ("--quick",)
    driven_by: str = ""
    needs: str = ""
    key: str = ""
    output: str = ""

    @property
    def name(self) -> str:
        return f"{self.script} {self.key}".strip()

    def command(self, mode: str, opts: argparse.Namespace) -> list[str] | None:
        """Its command line in this mode, or None where it does not run on its own."""
        shell = self.script.endswith(".sh")
        smoke = [common.PY, str(BENCH / self.script), "--smoke"]
        if mode == "smoke" or (self.needs and not _given(self.needs, opts)):
            if shell:
                return None if self.needs else ["bash", str(BENCH / self.script), "$SCRATCH", "--smoke"]
            return smoke
        if self.driven_by:
            return None
        args = [_fill(a, opts) for a in (self.full if mode == "full" else self.quick)]
        return ["bash" if shell else common.PY, str(BENCH / self.script), *args]


def _given(needs: str, opts) -> bool:
    option = re.search(r"--([a-z-]+)", needs).group(1).replace("-", "_")
    return bool(getattr(opts, option))


def _fill(arg: str, opts) -> str:
    """``{option}`` in an argument: that option of run.py."""
    return re.sub(r"\{(\w+)\}", lambda m: str(getattr(opts, m.group(1))), arg)


OTTO = "the real Otto files (--otto DIR; by default ../shared/otto/ or data/otto/ when there)"
OTTO_TRAIN = "{otto}/train.csv.gz"
SERVE_RUNS = (
    "--plain",
    "{serve_plain}",
    "--nonknn",
    "{serve_nonknn}",
    "--knn",
    "{serve_knn}",
    "--test",
    "{serve_test}",
)
HOURS = (
    "hours of training on the real data (--long: bench/metric.sh; each script's own command in its docstring)"
)
SUITE = (
    Bench("speed.py", "speed"),
    Bench("plain_keras.py", None, driven_by="speed.py"),
    Bench("matmul_shapes.py", None, driven_by="speed.py"),
    Bench("data_load.py", None, driven_by="speed.py"),
    Bench("pipeline_autotune.py", None, driven_by="speed.py"),
    Bench("adam_fused.py", "probes"),
    Bench(
        "knn_features.py",
        "metric",
        ("{otto}/train.csv.gz", "{otto}/test.csv.gz"),
        ("{otto}/train.csv.gz", "--rows", "20000"),
        needs=OTTO,
    ),  # fmt: skip
    Bench("gbdt_choice.py", "gbdt"),
    Bench("knn_votes.py", "knn"),
    Bench("explain_time.py", "explain"),
    # Its real run is an hour of AutoGluon in an environment of its own (its docstring).
    Bench("autogluon_otto.py", "stack", needs=HOURS),
    # It reads a finished stack run (bench/results/stack.md's commands make runs/otto-stack-1h).
    Bench(
        "stack_tops.py",
        "stack",
        ("runs/otto-stack-1h",),
        ("runs/otto-stack-1h",),
        needs="a finished real stack run (--long: bench/results/stack.md's commands)",
        output="The top with each level-2 learner alone and with all (bench/stack_tops.py)",
    ),  # fmt: skip
    Bench("missing_cost.py", "side_by_side"),
    Bench("tracking_cost.py", "tracking"),
    Bench("categorical_load.py", "side_by_side"),
    Bench("before_after.py", "side_by_side", ("--before", "{before}"), ("--quick", "--before", "{before}")),
    Bench(
        "equivalence.sh",
        "side_by_side",
        ("$SCRATCH",),
        ("$SCRATCH",),
        output="Same config, same seed: a sha256 per artifact (compare with another checkout's)",
    ),
    Bench(
        "public_tables.py",
        "side_by_side",
        ("{public_tables}",),
        ("{public_tables}",),
        needs="public CSVs not shipped (--public-tables DIR)",
    ),  # fmt: skip
    Bench("tabm_speed.py", "tabm"),
    Bench("tabm_speed.py", "tabm", ("--xla",), ("--xla", "--quick"), key="--xla"),
    Bench("cluster_cv.py", "cluster", quick=("--folds", "2", "--seeds", "1")),
    Bench(
        "serve_load.py",
        "serve",
        (*SERVE_RUNS, "--profile"),
        (*SERVE_RUNS, "--rounds", "5", "--seconds", "1"),
        needs="three finished runs and a test CSV (--serve-runs PLAIN,NONKNN,KNN --serve-test CSV)",
        output="Loopback HTTP against a bare Starlette app (bench/serve_load.py's JSON line)",
    ),  # fmt: skip
    Bench("metric_fold.py", "metric", driven_by="metric.sh", needs=HOURS),
    Bench("metric_lgbm.py", "metric", driven_by="metric.sh", needs=HOURS),
    Bench("metric_report.py", "metric", driven_by="metric.sh", needs=HOURS),
    Bench("tune_holdout.py", "metric", driven_by="metric.sh", needs=HOURS),
    Bench("honest_oof.py", "metric", ("--train", OTTO_TRAIN), ("--quick", "--train", OTTO_TRAIN), needs=OTTO),
    Bench("metric.sh", "metric", ("{otto}", "$SCRATCH"), ("{otto}", "$SCRATCH"), needs=HOURS),
)
# Not benchmarks: the shared helper and this entry.
NOT_BENCHMARKS = ("common.py", "run.py")


def scripts() -> list[str]:
    """Every script of bench/ that the suite must cover."""
    return sorted(
        p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh") and p.name not in NOT_BENCHMARKS
    )


def has_smoke(script: str) -> bool:
    return "--smoke" in (BENCH / script).read_text()


@dataclass
class Outcome:
    name: str
    command: str
    rc: int | None  # None: not run
    seconds: float
    note: str = ""


def run_one(b: Bench, mode: str, opts, work: Path) -> Outcome:
    cmd = b.command(mode, opts)
    smoke_instead = mode != "smoke" and b.needs and not _given(b.needs, opts)
    note = f"--smoke only: needs {b.needs}" if smoke_instead else ""
    if cmd is None:
        return Outcome(
            b.name, "", None, 0.0, f"runs inside {b.driven_by}" if b.driven_by else f"needs {b.needs}"
        )
    if cmd[-1] == "--smoke" and not has_smoke(b.script):
        return Outcome(b.name, common.quote(cmd), None, 0.0, "has no --smoke yet")
    scratch = work / re.sub(r"\W", "-", b.name)
    cmd = [str(scratch) if c == "$SCRATCH" else c for c in cmd]
    print(f"\n=== {common.quote(cmd)}", flush=True)
    argv = [c.replace(str(scratch), "$SCRATCH") for c in cmd[2:]]
    # A smoke run in place of a real one writes beside the other smokes, never into bench/results.
    smoke = mode == "smoke" or bool(smoke_instead)
    folder = common.OUT / "smoke" if smoke else common.RESULTS if mode == "full" else common.OUT / mode
    run = common.Run(b.script, argv, smoke, mode == "quick", folder)
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if b.output else None, text=True)
    if b.output and p.returncode == 0:
        print(p.stdout, flush=True)
        run.record(b.topic, b.output, "```\n" + p.stdout.replace(str(scratch) + "/", "").strip() + "\n```")
    shown = common.quote(cmd).replace(str(work) + "/", "$SCRATCH/")
    return Outcome(b.name, shown, p.returncode, time.perf_counter() - run.t0, note)


def summary(outcomes: list[Outcome], mode: str) -> str:
    rows = [
        (o.name, f"`{o.command}`" if o.command else "", "ok" if o.rc == 0 else "not run" if o.rc is None else
         f"**failed ({o.rc})**", f"{o.seconds:.0f}", o.note)
        for o in outcomes
    ]  # fmt: skip
    flag = "" if mode == "full" else " --" + mode
    head = f"`python bench/run.py{flag}`, load average now {common.load_average()}"
    return head + "\n\n" + common.table(("benchmark", "command", "result", "seconds", "note"), rows)


# --------------------------------------------------------------------------------------
# The README's table and the index, from the results


README_ROWS = (  # figure, target, how to read it from speed.json
    ("logreg s/epoch ratio ottotrain / plain Keras (steady epochs)", "≤ 0.40", lambda R: _ratio(R, "logreg")),
    ("MLP s/epoch ratio (steady)", "≤ 0.40", lambda R: _ratio(R, "mlp")),
    ("3×512 s/epoch ratio (steady)", "≤ 0.85", lambda R: _ratio(R, "mlp3x512")),
    ("3×512 share of the machine's sgemm rate (numpy)", "≥ 40 %", lambda R: _percent(R["big"]["otto_frac"])),
    ("`ottotrain --help` / config error, seconds, no TensorFlow", "< 0.5 s", lambda R: _startup(R)),
    ("load + preprocess train and test vs `pandas.read_csv` (first read / cached)", "≤ 0.5",
     lambda R: f"{R['data']['ratio']:.2f} / **{R['data']['warm_ratio']:.2f}**"),
    ("peak memory of `fit` on the real train set", "< 1.5 GiB", lambda R: _memory(R)),
    ("validation log loss vs the plain script, same seed", "within noise", lambda R: _loss(R)),
)  # fmt: skip


def _percent(x) -> str:
    return f"{100 * x:.0f} %"


def _model(R, name):
    return next(r for r in R["training"] if r["model"] == name)


def _ratio(R, name) -> str:
    r = _model(R, name)
    return f"**{r['ratio']:.2f}** ({r['ratio_steady']:.2f})"


def _startup(R) -> str:
    t = R["startup"]["times"]
    return " / ".join(f"{v:.3f}" for k, v in t.items() if k != "python -c pass")


def _memory(R) -> str:
    rss = [r["otto_rss"] / 1024 for r in R["training"]]
    return f"{min(rss):.2f}–{max(rss):.2f} GiB"


def _loss(R) -> str:
    diff = max(abs(r["plain_loss"] - r["otto_loss"]) for r in R["training"])
    noise = max(abs(r["seed43_loss"] - r["plain_loss"]) for r in R["training"])
    return f"≤ {diff:.4f} (seed noise {noise:.4f})"


def readme_table(doc: dict) -> str:
    """The README's benchmark table: the figures of one speed.py run, with where they come from."""
    info, R = doc["info"], doc["results"]
    head = (
        f"<!-- generated by `python bench/run.py --readme` from bench/results/speed.json -->\n"
        f"`{info['command']}`, {info['date']}, {info['cores']} cores ({info['cpu']}), load average "
        f"{info['load0']} before, {info['load1']} after; {info['data']}. Every figure and its command: "
        "`bench/results/speed.md`.\n\n"
    )
    rows = [(figure, target, get(R)) for figure, target, get in README_ROWS]
    return head + common.table(("figure", "target", f"{info['date'][:10]}"), rows) + "\n"


def index() -> str:
    """bench/RESULTS.md: where each topic's figures are, with their sections."""
    lines = [
        "# ottotrain benchmark results: the index",
        "",
        "<!-- generated by `python bench/run.py --readme`: edit the topic files, not this one -->",
        "Every figure lies in one file per topic under `bench/results/`, with the command that made it, "
        "the machine and the load average. `python bench/run.py` runs every benchmark (`bench/README.md`). "
        "(`bench/RESULTS_METRIC.md` is now `results/metric.md`, "
        "`bench/RESULTS_AB.md` `results/side_by_side.md`.)",
        "",
    ]
    for p in sorted(RESULTS.glob("*.md")):
        if p.name == "README-table.md":
            continue
        heads = [ln for ln in p.read_text().splitlines() if re.match(r"#{1,3} ", ln)]
        lines.append(
            f"- [`results/{p.name}`](results/{p.name}): {heads[0].lstrip('# ') if heads else p.stem}"
        )
        lines += [f"  - {h.lstrip('# ')}" for h in heads[1:]]
    return "\n".join(lines) + "\n"


def write_readme() -> str:
    table = readme_table(json.loads((RESULTS / "speed.json").read_text()))
    (RESULTS / "README-table.md").write_text(table)
    (BENCH / "RESULTS.md").write_text(index())
    return table


# --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a shorter pass of every benchmark")
    mode.add_argument("--smoke", action="store_true", help="every script's --smoke")
    ap.add_argument("--list", action="store_true", help="print what runs in this mode, and how")
    ap.add_argument("--readme", action="store_true", help="write the README table and the index")
    ap.add_argument("--only", help="comma-separated script names")
    ap.add_argument(
        "--before", default=str(ROOT), help="before_after.py's other checkout (default: this one)"
    )
    ap.add_argument("--public-tables", help="public_tables.py's folder of public CSVs")
    ap.add_argument(
        "--serve-runs",
        help="serve_load.py's finished runs, comma-separated: the tutorial MLP, configs/otto.yaml "
        "without and with data.knn",
    )
    ap.add_argument("--serve-test", help="serve_load.py's test CSV")
    ap.add_argument("--long", action="store_true", help="also the metric experiments: hours")
    ap.add_argument("--otto", help="the folder of the real Otto train.csv.gz and test.csv.gz")
    opts = ap.parse_args(argv)
    opts.serve_plain, opts.serve_nonknn, opts.serve_knn = (opts.serve_runs or ",,").split(",")
    if opts.otto is None and (real := common.otto_files()) is not None and real.train.name == "train.csv.gz":
        opts.otto = str(real.train.parent)
    if opts.readme:
        print(write_readme())
        return 0
    m = "smoke" if opts.smoke else "quick" if opts.quick else "full"
    only = set(opts.only.split(",")) if opts.only else None
    suite = [b for b in SUITE if only is None or b.script in only or b.name in only]
    if m == "smoke":  # one smoke per script
        suite = [b for i, b in enumerate(suite) if b.script not in {c.script for c in suite[:i]}]
    elif m == "quick" and not opts.long:  # the shorter pass still runs every script to its end
        suite = [b for b in suite if not b.driven_by or b.needs]
    if opts.list:
        for b in suite:
            cmd = b.command(m, opts)
            how = (
                common.quote(cmd)
                if cmd
                else f"(inside {b.driven_by})"
                if b.driven_by
                else f"(needs {b.needs})"
            )
            print(f"{b.name:<22} {b.topic or '-':<13} {how}")
        return 0
    outcomes = []
    with common.scratch() as work:
        for b in suite:
            outcomes.append(run_one(b, m, opts, work))
    text = summary(outcomes, m)
    out = common.OUT / f"run-{m}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if m == "full" and only is None:
        write_readme()
    print("\n" + text + f"\n\n(also in {out.relative_to(ROOT)})")
    return 1 if any(o.rc not in (0, None) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
