"""What every benchmark script shares: its options, its data, its side-by-side runs, its results.

Every script in bench/ is run three ways:

    python bench/SCRIPT.py [ARGS]        # the real measurement (the real Otto data where it needs data)
    python bench/SCRIPT.py --quick ...   # a shorter pass of the same (fewer repetitions, epochs, rows)
    python bench/SCRIPT.py --smoke       # seconds: its own small generated data, the same code path,
                                         # results into a scratch folder, never the repository

Results go to ``bench/results/<topic>.md``: each script replaces its own generated block there
(between ``<!-- begin SCRIPT -->`` and ``<!-- end SCRIPT -->``), headed by the exact command, the
date, the machine and the load average before and after. What else a topic file holds (figures
recorded by hand from hours-long runs, with their commands) stays as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import inspect
import io
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
OUT = BENCH / "out"  # git-ignored scratch for results of --smoke and --quick runs
# Where the real Kaggle Otto files may lie, first found wins (never in git).
OTTO_DIRS = (ROOT.parent / "shared" / "otto", ROOT / "data" / "otto")
PY = sys.executable


@dataclass(frozen=True)
class Data:
    """A train and a test file, and one line saying what they are (it goes into the results)."""

    train: Path
    test: Path | None
    label: str
    real: bool


def otto_files() -> Data | None:
    """The real Otto files, or None when neither ``../shared/otto`` nor ``data/otto`` holds them."""
    for d in OTTO_DIRS:
        for suffix in (".csv.gz", ".csv"):
            train, test = d / f"train{suffix}", d / f"test{suffix}"
            if train.exists() and test.exists():
                rel = os.path.relpath(d, ROOT)
                return Data(train, test, f"real Kaggle Otto data ({rel}/)", True)
    return None


def synthetic(work: Path, rows: int, test_rows: int, seed: int = 0, **kw) -> Data:
    """Otto-shaped generated data (``ottotrain.data.synth.make_data``) in ``work/data-<rows>``."""
    from ottotrain.data.synth import make_data

    d = Path(work) / f"data-{rows}"
    train, test = make_data(d, rows=rows, test_rows=test_rows, seed=seed, **kw)
    extra = "".join(f", {k}={v}" for k, v in kw.items())
    label = f"generated data (ottotrain.data.synth.make_data: {rows:,} rows, {test_rows:,} test rows{extra})"
    return Data(Path(train), Path(test) if test_rows else None, label, False)


def data(run: Run, work: Path, rows: int = 61_878, test_rows: int = 144_368, smoke_rows: int = 1_500) -> Data:
    """The real Otto files when present (not in smoke), else generated data of the same shape."""
    real = None if run.smoke else otto_files()
    if real is not None:
        return real
    if run.smoke:
        return synthetic(work, smoke_rows, max(smoke_rows // 4, 100))
    return synthetic(work, rows, test_rows)


def cv_runs(work: Path, train: Path, n: int, folds: int = 2) -> tuple[Path, list[Path]]:
    """``n`` small finished cv runs of bench/configs/mlp.yaml (1 epoch, the same folds, batch sizes
    32, 64, ...) for the scripts that read cv runs; made through the CLI in this process. (The
    config, the run directories.)"""
    from ottotrain.cli import main as cli

    config = BENCH / "configs" / "mlp.yaml"
    dirs = [work / f"cv-{s}" for s in range(1, n + 1)]
    for s, d in enumerate(dirs, 1):
        sets = [f"data.train={train}", "data.test=null", "train.epochs=1", f"train.batch_size={16 << s}"]
        args = ["cv", str(config), "--folds", str(folds), "--run-dir", str(d), "-q"]
        cli([*args, *(x for kv in sets for x in ("--set", kv))], standalone_mode=False)
    return config, dirs


def interleave(reps: int, *jobs: Callable[[], object]) -> list[list]:
    """Run jobs A, B, ... ``reps`` times in the order A B, B A, A B, ...; a list of results per job.

    Side by side and alternated, because the machine is shared: a drift in other people's load
    hits both sides alike, and ratios of neighbouring runs stay comparable when seconds do not.
    """
    res: list[list] = [[] for _ in jobs]
    for r in range(reps):
        order = list(range(len(jobs)))
        if r % 2:
            order.reverse()
        for i in order:
            res[i].append(jobs[i]())
    return res


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def machine() -> dict:
    """Cores, CPU model, memory, Python, OS and the versions of the libraries that matter."""
    cpu, mem = "?", "?"
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    vers = {}
    for pkg in ("ottotrain", "tensorflow", "keras", "numpy", "pandas", "pyarrow", "scikit-learn"):
        try:
            vers[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            vers[pkg] = "-"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": vers,
    }


def machine_line(m: dict | None = None) -> str:
    m = m or machine()
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
    return f"{m['cores']} cores, {m['cpu']}, {m['memory']} RAM, Python {m['python']}; {v}"


def quote(cmd: Sequence) -> str:
    """A command as one would type it from the repository root."""
    s = " ".join(shlex.quote(str(c)) for c in cmd)
    return s.replace(str(ROOT) + "/", "").replace(PY, "python")


def timed(cmd: Sequence, env: dict | None = None, cwd: Path = ROOT, check: bool = True):
    """Run a command in a child process: (wall seconds, its own peak RSS in MiB, stdout, stderr).

    The child runs under a small wrapper process, so that the peak RSS (``RUSAGE_CHILDREN`` of
    the wrapper) is this command's alone, not the largest of all the children run so far.
    In a ``--smoke`` run, a command that would start TensorFlow runs in this process instead
    (``in_process``; its peak RSS is then this process's): one TensorFlow import for all.
    """
    if SMOKE_IN_PROCESS and env is None and _python_entry(cmd):
        t0 = time.perf_counter()
        rc, out, err = in_process(cmd)
        r = {"rc": rc, "wall": time.perf_counter() - t0, "out": out, "err": err}
        r["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        wrapper = (
            "import json,resource,subprocess,sys,time;t=time.perf_counter();"
            "p=subprocess.run(sys.argv[1:],capture_output=True);w=time.perf_counter()-t;"
            "sys.stdout.write(json.dumps({'rc':p.returncode,'wall':w,"
            "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
            "'out':p.stdout.decode(),'err':p.stderr.decode()}))"
        )
        e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        p = subprocess.run(
            [PY, "-c", wrapper, *map(str, cmd)], cwd=cwd, env=e, capture_output=True, text=True
        )
        if p.returncode:
            raise SystemExit(f"benchmark wrapper failed: {p.stderr[-2000:]}")
        r = json.loads(p.stdout)
    if check and r["rc"] != 0:
        raise SystemExit(f"command failed ({r['rc']}): {quote(cmd)}\n{r['err'][-3000:]}")
    return r["wall"], r["rss"], r["out"], r["err"]


# Set by ``Run.start`` for a --smoke run: see ``timed``.
SMOKE_IN_PROCESS = False


def _python_entry(cmd: Sequence) -> list[str] | None:
    """``["ottotrain", ARGS...]`` or ``[SCRIPT.py, ARGS...]`` for the commands ``in_process`` runs."""
    cmd = [str(c) for c in cmd]
    if Path(cmd[0]).name == "ottotrain":
        return ["ottotrain", *cmd[1:]]
    if cmd[0] == PY and cmd[1:3] == ["-m", "ottotrain"]:
        return ["ottotrain", *cmd[3:]]
    if cmd[0] == PY and cmd[1].endswith(".py") and Path(cmd[1]).parent == BENCH:
        return cmd[1:]
    return None


def load_script(path: Path):
    """bench/SCRIPT.py as a module (its ``main(argv)`` is its command line)."""
    name = f"bench_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and tf.function look their module up there
    spec.loader.exec_module(module)
    return module


def call_main(module, argv: list[str]):
    """``module.main(argv)``; for a script whose ``main()`` reads ``sys.argv`` itself, with that set."""
    if inspect.signature(module.main).parameters:
        return module.main(argv)
    saved = sys.argv
    sys.argv = [module.__file__, *argv]
    try:
        return module.main()
    finally:
        sys.argv = saved


def in_process(cmd: Sequence) -> tuple[int, str, str]:
    """Run ``ottotrain ARGS`` or ``python bench/SCRIPT.py ARGS`` here: (exit code, stdout, stderr)."""
    import click

    from ottotrain.cli import main as cli

    entry = _python_entry(cmd)
    out, err = io.StringIO(), io.StringIO()
    rc = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if entry[0] == "ottotrain":
                cli(entry[1:], standalone_mode=False)
            else:
                call_main(load_script(Path(entry[0])), entry[1:])
        except click.ClickException as e:
            e.show()
            rc = e.exit_code
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def ottotrain(*args) -> list[str]:
    """The command line of ``ottotrain ARGS`` with this interpreter (the checkout on PYTHONPATH wins)."""
    return [PY, "-m", "ottotrain", *map(str, args)]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the three options every benchmark script has."""
    ap = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="seconds: own small data, scratch results")
    ap.add_argument("--quick", action="store_true", help="a shorter pass (fewer repetitions and epochs)")
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder of the topic files (default bench/results; bench/out/smoke or bench/out/quick)",
    )
    return ap


@dataclass
class Run:
    """One invocation of a benchmark script: its mode, its command, where its results go."""

    script: str
    argv: list[str]
    smoke: bool
    quick: bool
    results: Path
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    load_before: str = field(default_factory=load_average)
    t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, file: str, argv: Sequence[str] | None, args: argparse.Namespace) -> Run:
        argv = list(sys.argv[1:] if argv is None else argv)
        # Only a real run's figures go to bench/results/; a shorter pass's are not to be reported.
        default = OUT / "smoke" if args.smoke else OUT / "quick" if args.quick else RESULTS
        global SMOKE_IN_PROCESS
        SMOKE_IN_PROCESS = args.smoke
        return cls(Path(file).name, argv, args.smoke, args.quick, args.results or default)

    def pick(self, full, quick, smoke):
        """The value for this run's mode."""
        return smoke if self.smoke else quick if self.quick else full

    @property
    def command(self) -> str:
        return quote(["bash" if self.script.endswith(".sh") else PY, BENCH / self.script, *self.argv])

    def record(self, topic: str, title: str, body: str, key: str = "", data: str = "") -> Path:
        """Write this run's results as its generated block of ``<results>/<topic>.md``; the path."""
        name = self.script + (f" {key}" if key else "")
        minutes = (time.perf_counter() - self.t0) / 60
        head = (
            f"### {title}\n\n`{self.command}` on {self.started} ({minutes:.1f} min"
            + (", a --smoke run: no figure to report" if self.smoke else "")
            + (", --quick" if self.quick and not self.smoke else "")
            + f"). Machine: {machine_line()}. Load average before / after: {self.load_before} / "
            + f"{load_average()}."
            + (f" Data: {data}." if data else "")
        )
        block = f"<!-- begin {name} -->\n{head}\n\n{body.strip()}\n<!-- end {name} -->\n"
        return write_block(self.results / f"{topic}.md", name, block, topic)


def write_block(path: Path, name: str, block: str, topic: str) -> Path:
    """Replace the block named ``name`` in ``path`` (or append it), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else f"# {topic}\n\n"
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->\n.*?<!-- end {re.escape(name)} -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


class scratch:
    """A temporary folder, removed on exit: where a benchmark's data and runs go."""

    def __init__(self, prefix: str = "ottotrain-bench-"):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def median(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
