"""Speed against plain Keras, start-up, data loading, predict, memory and growth: one topic.

    python bench/speed.py            # full, ~35 min on 2 cores with the real data
    python bench/speed.py --quick    # 1 repetition, fewer epochs, no 5M-row growth step
    python bench/speed.py --smoke    # seconds: small generated data, every section once
    python bench/speed.py --render   # bench/results/speed.md again from bench/results/speed.json

Writes bench/results/speed.md (machine, versions, exact commands, results) and the raw figures
in bench/results/speed.json, which the README's benchmark table is made from (``python
bench/run.py --readme``). Uses the real Otto files (``common.otto_files``) when they are
there, else generated data of the same shape, and says which. Every A/B pair runs in separate
processes, interleaved (A B B A ...), and figures are medians over the repetitions, because
the machine is shared. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import common
from common import BENCH, PY, ROOT, interleave
from common import median as med

OTTO = str(Path(PY).with_name("ottotrain"))
if not Path(OTTO).exists():
    OTTO = shutil.which("ottotrain") or "ottotrain"

# 3 x 512 model, forward multiply-adds per row (93 features, 9 classes).
MACS_3X512 = 93 * 512 + 512 * 512 + 512 * 512 + 512 * 9

COMMANDS: list[str] = []


def q(cmd) -> str:
    s = " ".join(shlex.quote(str(c)) for c in cmd)
    return s.replace(str(ROOT) + "/", "").replace(PY, "python").replace(OTTO, "ottotrain")


def run(cmd, record=True, env=None, check=True):
    """Run a command (``common.timed``); return (wall seconds, stdout, stderr)."""
    wall, _, out, err = peak_rss(cmd, record, env, check)
    return wall, out, err


def peak_rss(cmd, record=True, env=None, check=True):
    """(wall, peak RSS MiB of exactly this command, stdout, stderr); the command is recorded."""
    if record and q(cmd) not in COMMANDS:
        COMMANDS.append(q(cmd))
    return common.timed(cmd, env=env, check=check)


# --------------------------------------------------------------------------------------


def matmul_shapes(rows):
    """The 3x512's matrix multiplies alone at its training shapes, and TF's own sgemm rate."""
    n_val = round(rows * 0.15)  # the benchmark's 15 % validation split
    _, out, _ = run([PY, BENCH / "matmul_shapes.py", "--rows", rows - n_val, "--val-rows", n_val])
    return json.loads(out)


def n_rows(train_csv) -> int:
    import pandas as pd

    return len(pd.read_csv(train_csv, usecols=[0]))


def sgemm_rate():
    """GFLOP/s of a float32 2048x2048 matmul with numpy on all cores (best of 5 after warm-up)."""
    code = (
        "import numpy as np,time;n=2048;a=np.random.rand(n,n).astype('f4');b=a.T.copy();a@b;"
        "ts=[];exec('for _ in range(5):\\n t=time.perf_counter();a@b;ts.append(time.perf_counter()-t)');"
        "print(2*n**3/min(ts)/1e9)"
    )
    _, out, _ = run([PY, "-c", code])
    return float(out.strip())


# --------------------------------------------------------------------------------------
# 1-2, 6. Training vs plain Keras


TRAIN_MODELS = [  # name, batch size, epochs (full), epochs (quick)
    # The tutorial trains both of its models for epochs=20 (its ModelCheckpoint cell and
    # its MLP cell); the 3x512 model runs 3 epochs to keep the suite short.
    ("logreg", 32, 20, 2),
    ("mlp", 128, 20, 3),
    ("mlp3x512", 128, 3, 2),
]


def plain_job(train, model, bs, epochs, work, seed=42, checkpoint=True):
    def job():
        out = work / f"plain-{model}-{seed}-{time.monotonic_ns()}.json"
        wall, rss, _, _ = peak_rss(
            [
                PY,
                BENCH / "plain_keras.py",
                "--train",
                train,
                "--model",
                model,
                "--batch-size",
                bs,
                "--epochs",
                epochs,
                "--seed",
                seed,
                "--json",
                out,
                *([] if checkpoint else ["--no-checkpoint"]),
            ]
        )
        r = json.loads(out.read_text())
        r.update(
            wall=wall,
            rss=rss,
            per_epoch=r["fit_seconds"] / epochs,
            steady=med(r["epoch_seconds"][1:]) if epochs > 1 else r["epoch_seconds"][0],
            last_val_loss=r["val_loss_history"][-1],
        )
        return r

    return job


def otto_job(train, model, epochs, work, extra=(), tag=""):
    def job():
        run_dir = work / f"otto-{model}{tag}-{time.monotonic_ns()}"
        cmd = [
            OTTO,
            "fit",
            BENCH / "configs" / f"{model}.yaml",
            "--set",
            f"data.train={train}",
            "--set",
            f"train.epochs={epochs}",
            *extra,
            "--run-dir",
            run_dir,
            "--json",
            "-q",
        ]
        wall, rss, out, _ = peak_rss(cmd)
        m = json.loads(out)

        with open(run_dir / "history.csv") as f:
            hist = list(csv.DictReader(f))
        secs = [float(h["seconds"]) for h in hist]
        t = m["timings"]
        m.update(
            wall=wall,
            rss=rss,
            run_dir=str(run_dir),
            per_epoch=t["train_seconds"] / epochs,
            steady=med(secs[1:]) if epochs > 1 else secs[0],
            epoch_seconds=secs,
            loop_overhead=(t["train_seconds"] - sum(secs)) / epochs,
            last_val_loss=float(hist[-1]["val_loss"]),
        )
        return m

    return job


def bench_training(train, work, reps, r: common.Run):
    rows = []
    sg, mm = [], []
    big = None
    # A smoke run keeps the one model every section needs (the FLOP rate, predict).
    for model, bs, ep_full, ep_quick in TRAIN_MODELS[-1:] if r.smoke else TRAIN_MODELS:
        epochs = r.pick(ep_full, ep_quick, 2)
        jobs = [plain_job(train, model, bs, epochs, work), otto_job(train, model, epochs, work)]
        if not r.smoke:  # a smoke run leaves out the plain script's second and third runs (below)
            jobs.append(plain_job(train, model, bs, epochs, work, checkpoint=False))
        if model == "mlp3x512":
            jobs.append(lambda: sg.append(sgemm_rate()))
            jobs.append(lambda: mm.append(matmul_shapes(n_rows(train))))
        res = interleave(reps, *jobs)
        plain, otto = res[0], res[1]
        bare = plain if r.smoke else res[2]
        # The seed-to-seed noise: the plain script with another seed.
        seed2 = plain[0] if r.smoke else plain_job(train, model, bs, epochs, work, seed=43)()
        row = {
            "model": model,
            "batch": bs,
            "epochs": epochs,
            "reps": reps,
            "plain_per_epoch": med([r["per_epoch"] for r in plain]),
            "otto_per_epoch": med([r["per_epoch"] for r in otto]),
            "plain_steady": med([r["steady"] for r in plain]),
            "otto_steady": med([r["steady"] for r in otto]),
            "ratio": med([o["per_epoch"] / p["per_epoch"] for p, o in zip(plain, otto)]),
            "ratio_steady": med([o["steady"] / p["steady"] for p, o in zip(plain, otto)]),
            "bare_per_epoch": med([r["per_epoch"] for r in bare]),
            "ratio_bare": med([o["per_epoch"] / b["per_epoch"] for b, o in zip(bare, otto)]),
            "loop_overhead": med([o["loop_overhead"] for o in otto]),
            "plain_first": med([r["epoch_seconds"][0] for r in plain]),
            "otto_first": med([r["epoch_seconds"][0] for r in otto]),
            "plain_loss": plain[0]["last_val_loss"],
            "otto_loss": otto[0]["last_val_loss"],
            "otto_best_loss": otto[0]["val_log_loss"],
            "seed43_loss": seed2["last_val_loss"],
            "plain_losses": sorted({round(r["last_val_loss"], 6) for r in plain}),
            "otto_losses": sorted({round(r["last_val_loss"], 6) for r in otto}),
            "plain_rss": med([r["rss"] for r in plain]),
            "otto_rss": med([r["rss"] for r in otto]),
            "plain_jit": plain[0]["jit_compile"],
        }
        rows.append(row)
        if model == "mlp3x512":
            n_tr, n_va = otto[0]["n_train"], otto[0]["n_val"]
            flop = (n_tr * 6 + n_va * 2) * MACS_3X512
            big = {
                "flop_per_epoch": flop,
                "sgemm": med(sg),
                "sgemm_all": sg,
                "otto_rate": med([flop / o["steady"] / 1e9 for o in otto]),
                "plain_rate": med([flop / p["steady"] / 1e9 for p in plain]),
                "run_dir": otto[0]["run_dir"],
            }
            big["otto_frac"] = big["otto_rate"] / big["sgemm"]
            big["plain_frac"] = big["plain_rate"] / big["sgemm"]
            big["tf_sgemm"] = med([m["tf_sgemm_gflops"] for m in mm])
            big["mm_rate"] = med([m["gflops"] for m in mm])
            big["mm_seconds"] = med([m["seconds"] for m in mm])
            big["mm_floor"] = big["mm_seconds"] / med([p["steady"] for p in plain])
    return rows, big


def bench_xla(train, work, r: common.Run):
    """3x512: explicit XLA (jit_compile: true) vs the default, twice each (determinism)."""
    epochs = r.pick(3, 2, 2)
    xla = ["--set", "train.jit_compile=true"]
    jobs = [otto_job(train, "mlp3x512", epochs, work, xla, tag="-xla")]
    if not r.smoke:  # a smoke run compares XLA with itself: one process fewer
        jobs.insert(0, otto_job(train, "mlp3x512", epochs, work))
    res = interleave(r.pick(2, 1, 1), *jobs)
    a, b = res[0], res[-1]
    return {
        "default_steady": med([r["steady"] for r in a]),
        "xla_steady": med([r["steady"] for r in b]),
        "default_first": med([r["epoch_seconds"][0] for r in a]),
        "xla_first": med([r["epoch_seconds"][0] for r in b]),
        "default_per_epoch": med([r["per_epoch"] for r in a]),
        "xla_per_epoch": med([r["per_epoch"] for r in b]),
        "xla_repeatable": len({r["last_val_loss"] for r in b}) == 1
        and len({r["val_log_loss"] for r in b}) == 1,
        "default_repeatable": len({r["last_val_loss"] for r in a}) == 1,
        "xla_loss": b[0]["last_val_loss"],
        "default_loss": a[0]["last_val_loss"],
        "epochs": epochs,
    }


def bench_autotune(train, r: common.Run):
    """3x512 epochs with ottotrain's pipeline vs the earlier one with tf.data's autotuner."""
    epochs = r.pick(10, 3, 2)

    def job(flag):
        def go():
            _, out, _ = run([PY, BENCH / "pipeline_autotune.py", "--train", train, "--epochs", epochs, *flag])
            return json.loads(out.strip().splitlines()[-1])

        return go

    a, b = interleave(r.pick(2, 1, 1), job([]), job(["--autotune"]))
    steady = lambda rs: [t for r in rs for t in r["epoch_seconds"][1:]]
    return {
        "epochs": epochs,
        "shipped": a,
        "autotune": b,
        "shipped_steady": med(steady(a)),
        "autotune_steady": med(steady(b)),
        "shipped_mean": statistics.mean(steady(a)),
        "autotune_mean": statistics.mean(steady(b)),
        "slow_epochs": [sum(t > 2.4 for t in steady(rs)) for rs in (a, b)],
        "same_loss": len({r["val_loss"] for r in a + b}) == 1,
    }


# --------------------------------------------------------------------------------------
# 3. Start-up


def bench_startup(work, reps):
    bad = work / "bad.yaml"
    bad.write_text("model:\n  layers:\n    - Dense: {units: 10}\ntrain:\n  batch_size: 0\n")
    jobs = {
        "python -c pass": [PY, "-c", "pass"],
        "ottotrain --help": [OTTO, "--help"],
        "ottotrain fit bad.yaml (invalid config)": [OTTO, "fit", bad],
    }

    def job(cmd, ok):
        return lambda: run(cmd, check=False)[0]

    names = list(jobs)
    res = interleave(reps, *[job(jobs[n], n) for n in names])
    times = {n: med(r) for n, r in zip(names, res)}
    # Which heavy modules load on those paths? (python -X importtime, in-process.)
    heavy = {}
    for n in names[1:]:
        cmd = [
            PY,
            "-X",
            "importtime",
            "-c",
            "import sys;sys.argv="
            + repr(["ottotrain"] + [str(c) for c in jobs[n][1:]])
            + ";from ottotrain.cli import main\ntry:\n main()\nexcept SystemExit:\n pass",
        ]
        _, _, err = run(cmd, record=False, check=False)
        mods = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in err.splitlines()
            if line.startswith("import time:")
        }
        heavy[n] = sorted(
            m
            for m in mods
            if m in ("tensorflow", "keras", "pandas", "sklearn", "scipy", "pyarrow", "matplotlib", "numpy")
        )
    _, _, err = run([OTTO, "fit", bad], check=False)
    return {
        "times": times,
        "ratio": {n: times[n] / times["python -c pass"] for n in names[1:]},
        "heavy": heavy,
        "error": err.strip().splitlines()[-1] if err.strip() else "",
    }


# --------------------------------------------------------------------------------------
# 4. Data loading, 5. predict


def bench_data(train, test, reps):
    import tempfile

    warm_cache = tempfile.mkdtemp(prefix="ottotrain-bench-cache-")

    imports = []  # ottotrain's module imports, timed apart (see data_load.py)

    def job(mode, env=None):
        def j():
            _, out, _ = run([PY, BENCH / "data_load.py", mode, train, test], env=env)
            res = json.loads(out)
            if "import_seconds" in res:
                imports.append(res["import_seconds"])
            return res["seconds"]

        return j

    # Cold: the parsed-CSV cache off, every file parsed. Warm: the cache filled by an
    # earlier run on the same files (the daily loop: fit, change the config, fit again).
    cold_env = {"OTTOTRAIN_CSV_CACHE": "0"}
    warm_env = {"OTTOTRAIN_CACHE": warm_cache}
    job("ottotrain", warm_env)()  # fill the cache
    import importlib.util

    # polars (a dev extra), when installed: a second parser's floor, to show the first read's
    # limit is the parsing itself and not pyarrow's.
    parsers = ["arrow"] + (["polars"] if importlib.util.find_spec("polars") else [])
    try:
        pd_t, ot_t, wa_t, *floors = interleave(
            reps, job("pandas"), job("ottotrain", cold_env), job("ottotrain", warm_env), *map(job, parsers)
        )
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
    out = {
        "pandas": med(pd_t),
        "ottotrain": med(ot_t),
        "warm": med(wa_t),
        "ratio": med([o / p for p, o in zip(pd_t, ot_t)]),
        "warm_ratio": med([o / p for p, o in zip(pd_t, wa_t)]),
        "imports": med(imports),
    }
    for name, ts in zip(parsers, floors):
        out[name] = med(ts)
        out[f"{name}_ratio"] = med([a / p for p, a in zip(pd_t, ts)])
    return out


def bench_predict(run_dir, test, work, reps):
    def otto():
        out = work / f"sub-{time.monotonic_ns()}.csv"
        wall, rss, _, err = peak_rss([OTTO, "predict", run_dir, test, "-o", out])
        rows = sum(1 for _ in open(out)) - 1
        line = [x for x in err.splitlines() if "rows/s" in x][-1]
        return {
            "wall": wall,
            "rss": rss,
            "rows": rows,
            "rows_per_s": float(line.split("(")[1].split()[0]),
            "seconds": float(line.split(" in ")[1].split("s")[0]),
        }

    def read():
        _, out, _ = run(
            [
                PY,
                "-c",
                "import pandas as pd,time,sys;t=time.perf_counter();"
                "pd.read_csv(sys.argv[1]);print(time.perf_counter()-t)",
                test,
            ]
        )
        return float(out)

    o, r = interleave(reps, otto, read)
    return {
        "rows": o[0]["rows"],
        "rows_per_s": med([x["rows_per_s"] for x in o]),
        "seconds": med([x["seconds"] for x in o]),
        "wall": med([x["wall"] for x in o]),
        "rss": med([x["rss"] for x in o]),
        "read_csv": med(r),
        "ratio": med([x["seconds"] / y for x, y in zip(o, r)]),
    }


# --------------------------------------------------------------------------------------
# 7. Growth


def _mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    return float("inf")


def bench_growth(work, r: common.Run):
    quick = [(50_000, 3), (500_000, 2)]
    sizes = r.pick([*quick, (5_000_000, 1)], quick, [(2_000, 2)])
    out = []
    for rows, epochs in sizes:
        if len(out) >= 2:  # never risk the OOM killer on a shared machine
            a, b = out[-2], out[-1]
            need = b["rss"] + (b["rss"] - a["rss"]) / (b["rows"] - a["rows"]) * (rows - b["rows"])
            avail = _mem_available_mib()
            if need > 0.7 * avail:
                out.append(
                    {
                        "rows": rows,
                        "epochs": epochs,
                        "skipped": True,
                        "projected_rss": need,
                        "available": avail,
                    }
                )
                continue
        d = work / f"gen-{rows}"
        t0 = time.perf_counter()
        run([OTTO, "make-data", d, "--rows", rows, "--test-rows", 10, "--seed", 0])
        gen = time.perf_counter() - t0
        m = otto_job(d / "train.csv", "mlp", epochs, work, tag=f"-{rows}")()
        fit_epoch = med(m["epoch_seconds"][1:]) if epochs > 1 else m["epoch_seconds"][0]
        out.append(
            {
                "rows": rows,
                "epochs": epochs,
                "gen_seconds": gen,
                "data_seconds": m["timings"]["data_seconds"],
                "epoch_seconds": fit_epoch,
                "per_epoch_all": m["per_epoch"],
                "us_per_row": fit_epoch / m["n_train"] * 1e6,
                "rss": m["rss"],
                "val_loss": m["val_log_loss"],
            }
        )
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(m["run_dir"], ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------
# Report


def fmt(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"


def ok(flag):
    return "**met**" if flag else "**not met**"


def report(doc: dict) -> str:
    """bench/results/speed.md from the figures of one run (speed.json)."""
    info, R = doc["info"], doc["results"]
    L = []
    w = L.append
    w("# Speed: ottotrain against plain Keras, start-up, data, predict, memory, growth\n")
    w(
        f"<!-- generated by bench/speed.py from speed.json: edit the script, not this file -->\n\n"
        f"Generated by `{info['command']}` on {info['date']} in {info['minutes']:.1f} min. "
        f"Data: {info['data']}."
        + (
            " A shorter pass: no figure here is to be reported."
            if {"--smoke", "--quick"} & set(info["command"].split())
            else ""
        )
        + "\n"
    )
    w(
        f"Machine: {info['cores']} cores, {info['cpu']}, {info['memory']} RAM, {info['os']}, "
        f"Python {info['python']}. Load average before/after: {info['load0']} / {info['load1']} "
        "(the machine is shared: every figure is a ratio of runs made side by side, interleaved, "
        "medians over the repetitions).\n"
    )
    w("Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".\n")

    tr, big = R["training"], R["big"]
    w("## 1. Training speed vs plain Keras (`bench/plain_keras.py`, the tutorial's way)\n")
    w(
        "Seconds per epoch = wall time of the whole training loop / epochs (first-epoch "
        "compilation, per-epoch validation and checkpoints included: the plain script saves "
        "the best model with the tutorial's `ModelCheckpoint(save_best_only=True)`, ottotrain "
        "its resume point and best model). *Steady* = median of epochs 2.. (the `model.fit` "
        "part only). *Bare* = the plain script with no callback at all (`--no-checkpoint`), "
        "a stricter reference than the tutorial. Same rows (unstratified 15 % split, seed 42), "
        "model, batch size, epochs (the tutorial's 20 for its two models), seed. *First epoch* "
        "includes tracing the train and test functions, a fixed cost per run. *Outside "
        "`model.fit`*: ottotrain's input pipelines, per-epoch resume files and final model "
        "save, spread over the epochs. Target ratio: logreg and MLP ≤ 0.40, 3×512 ≤ 0.85.\n"
    )
    w(
        "| model | batch | epochs × reps | plain s/epoch | ottotrain s/epoch | **ratio** | "
        "steady plain | steady ottotrain | steady ratio | bare plain s/epoch | ratio to bare | "
        "first epoch plain / ottotrain s | ottotrain outside `model.fit` s/epoch | target |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in tr:
        target = 0.85 if r["model"] == "mlp3x512" else 0.40
        w(
            f"| {r['model']} | {r['batch']} | {r['epochs']} × {r['reps']} | {fmt(r['plain_per_epoch'])} | "
            f"{fmt(r['otto_per_epoch'])} | **{fmt(r['ratio'])}** | {fmt(r['plain_steady'])} | "
            f"{fmt(r['otto_steady'])} | {fmt(r['ratio_steady'])} | {fmt(r['bare_per_epoch'])} | "
            f"{fmt(r['ratio_bare'])} | {fmt(r['plain_first'])} / {fmt(r['otto_first'])} | "
            f"{fmt(r['loop_overhead'], 3)} | "
            f"≤ {target}: {ok(r['ratio'] <= target)} |"
        )
    w(
        "\nValidation log loss after the last epoch (same seed 42; the plain script with seed 43 "
        "shows the seed-to-seed noise):\n"
    )
    w(
        "| model | plain (seed 42) | ottotrain (seed 42) | |difference| | plain seed 43 - seed 42 | "
        "ottotrain best-epoch model (metrics.json) | repeatable across reps (plain / ottotrain) |"
    )
    w("|---|---|---|---|---|---|---|")
    for r in tr:
        w(
            f"| {r['model']} | {r['plain_loss']:.4f} | {r['otto_loss']:.4f} | "
            f"{abs(r['plain_loss'] - r['otto_loss']):.4f} | {r['seed43_loss'] - r['plain_loss']:+.4f} | "
            f"{r['otto_best_loss']:.4f} | {len(r['plain_losses']) == 1} / {len(r['otto_losses']) == 1} |"
        )
    w(
        f'\nPlain Keras resolved `jit_compile="auto"` to {tr[0]["plain_jit"]} '
        "(Keras 3 turns XLA off on CPU-only machines).\n"
    )

    if R.get("xla"):
        x = R["xla"]
        w(
            f"**Explicit XLA** (`--set train.jit_compile=true`), 3×512, {x['epochs']} epochs, 2 runs each, "
            "interleaved with the default:\n"
        )
        w("| | default (no XLA) | XLA | ratio XLA/default |")
        w("|---|---|---|---|")
        w(
            f"| first epoch (compile) s | {fmt(x['default_first'])} | {fmt(x['xla_first'])} | "
            f"{fmt(x['xla_first'] / x['default_first'])} |"
        )
        w(
            f"| steady epoch s | {fmt(x['default_steady'])} | {fmt(x['xla_steady'])} | "
            f"{fmt(x['xla_steady'] / x['default_steady'])} |"
        )
        w(
            f"| s/epoch incl. compile | {fmt(x['default_per_epoch'])} | {fmt(x['xla_per_epoch'])} | "
            f"{fmt(x['xla_per_epoch'] / x['default_per_epoch'])} |"
        )
        w(
            f"| val loss, identical in both runs | {x['default_loss']:.6f}, {x['default_repeatable']} | "
            f"{x['xla_loss']:.6f}, {x['xla_repeatable']} | |\n"
        )

    if R.get("autotune"):
        a = R["autotune"]
        n = a["epochs"] - 1
        w(
            f"**tf.data's autotuner** (`bench/pipeline_autotune.py`): the 3×512 for {a['epochs']} epochs, "
            "2 runs each, interleaved: ottotrain's pipeline (no autotuning, no prefetch thread) against "
            "the one it used before 2026-11-28 evening (`prefetch(AUTOTUNE)`, autotuning on).\n"
        )
        w("| | shipped | with the autotuner | ratio |")
        w("|---|---|---|---|")
        w(
            f"| steady epoch s, median | {fmt(a['shipped_steady'])} | {fmt(a['autotune_steady'])} | "
            f"{fmt(a['shipped_steady'] / a['autotune_steady'])} |"
        )
        w(
            f"| steady epoch s, mean | {fmt(a['shipped_mean'])} | {fmt(a['autotune_mean'])} | "
            f"{fmt(a['shipped_mean'] / a['autotune_mean'])} |"
        )
        w(f"| epochs over 2.4 s (of {2 * n}) | {a['slow_epochs'][0]} | {a['slow_epochs'][1]} | |")
        w(f"| same validation loss in all runs | {a['same_loss']} | | |\n")
        w(
            "Epoch seconds: "
            + "; ".join(
                f"{'autotuner' if r['autotune'] else 'shipped'} "
                + ", ".join(f"{t:.2f}" for t in r["epoch_seconds"])
                for r in a["shipped"] + a["autotune"]
            )
            + ".\n"
        )

    w("## 2. 3×512 FLOP rate vs this machine's sgemm\n")
    w(
        f"Training FLOPs per epoch = (train rows × 3 + validation rows × 1) × 2 × {MACS_3X512:,} "
        f"forward multiply-adds per row = {big['flop_per_epoch'] / 1e9:.1f} GFLOP, over the steady "
        "epoch time. sgemm: numpy float32 2048×2048 matmul on all cores, best of 5, measured "
        "between the training runs (values: "
        + ", ".join(f"{v:.0f}" for v in big["sgemm_all"])
        + " GFLOP/s).\n"
    )
    w("| | GFLOP/s | fraction of sgemm | target |")
    w("|---|---|---|---|")
    w(f"| sgemm (numpy, 2048²) | {big['sgemm']:.1f} | 1.00 | |")
    w(f"| plain Keras 3×512 | {big['plain_rate']:.1f} | {big['plain_frac']:.2f} | |")
    w(
        f"| ottotrain 3×512 | {big['otto_rate']:.1f} | **{big['otto_frac']:.2f}** | ≥ 0.40: "
        f"{ok(big['otto_frac'] >= 0.40)} |"
    )
    if "mm_rate" in big:
        w(
            f"| sgemm (TensorFlow's oneDNN kernel, 2048², `bench/matmul_shapes.py`) | "
            f"{big['tf_sgemm']:.1f} | {big['tf_sgemm'] / big['sgemm']:.2f} | |"
        )
        w(
            f"| the 3×512's matrix multiplies alone, at its training shapes (`bench/matmul_shapes.py`) | "
            f"{big['mm_rate']:.1f} | {big['mm_rate'] / big['sgemm']:.2f} | |\n"
        )
        w(
            f"Where the 3×512's time goes: its matrix multiplies alone, run with TensorFlow's "
            f"kernels at the training shapes (batch 128: forward, weight and input gradients, "
            f"plus the validation pass), take {big['mm_seconds']:.2f} s per epoch, "
            f"{big['mm_seconds'] / big['flop_per_epoch'] * big['otto_rate'] * 1e9:.0%} of "
            f"ottotrain's steady epoch. The rest is batch norm, PReLU, dropout, the loss and Adam, "
            f"the same Keras layers and kernels in both scripts. A trainer that ran everything but "
            f"the matrix multiplies for free would reach {big['mm_floor']:.2f}× plain Keras's "
            f"steady epoch"
            + (
                f"; to reach 0.85× on these kernels, the other ops would have to take "
                f"{rest_cut_needed(big):.0%} less time than they do in Keras.\n"
                if rest_cut_needed(big) > 0
                else "; ottotrain's steady epoch is already below 0.85× plain's (no per-step "
                "dispatch: steps_per_execution; no waiting on tf.data's autotuner).\n"
            )
        )
    else:
        w("")

    s = R["startup"]
    w("## 3. Start-up\n")
    w(
        "Wall time of the command (median of interleaved runs), ratio to `python -c pass`, and "
        "which heavy modules it imports (`python -X importtime`).\n"
    )
    w("| command | seconds | ratio to python -c pass | heavy imports | target < 0.5 s, no TF |")
    w("|---|---|---|---|---|")
    w(f"| python -c pass | {s['times']['python -c pass']:.3f} | 1.0 | | |")
    for n, r in s["ratio"].items():
        tf_free = "tensorflow" not in s["heavy"][n] and "keras" not in s["heavy"][n]
        w(
            f"| {n} | {s['times'][n]:.3f} | {r:.1f} | {', '.join(s['heavy'][n]) or 'none'} | "
            f"{ok(s['times'][n] < 0.5 and tf_free)} |"
        )
    w(f"\nThe invalid config's message: `{s['error'][:200]}`\n")

    d = R["data"]
    w("## 4. Data: load + preprocess the train and test CSVs\n")
    w(
        "`bench/data_load.py`: ottotrain's `load_train` + `load_test` + `Preprocessor` (fit + "
        "transform of both) vs `pandas.read_csv` with defaults on both files (nothing else). "
        "Each side's clock starts after its imports (`import pandas`, which also imports pyarrow; "
        "ottotrain's config and data modules), as in a session that loads data."
    )
    if "imports" in d:
        w(
            f" ottotrain's imports take {d['imports']:.3f} s on top (mostly pydantic, for the config "
            "schema), paid once per command before any data is read. (Before 2026-11-28 evening "
            "they were inside the timing.)"
        )
    w("")
    w("| | seconds | ratio | target |")
    w("|---|---|---|---|")
    w(f"| pandas.read_csv × 2 | {d['pandas']:.3f} | 1.00 | |")
    w(
        f"| ottotrain load + preprocess, first read (cache off: `OTTOTRAIN_CSV_CACHE=0`) | "
        f"{d['ottotrain']:.3f} | **{d['ratio']:.2f}** | ≤ 0.5: {ok(d['ratio'] <= 0.5)} |"
    )
    if "warm" in d:
        w(
            f"| ottotrain load + preprocess, files read before (parsed-CSV cache) | {d['warm']:.3f} | "
            f"**{d['warm_ratio']:.2f}** | ≤ 0.5: {ok(d['warm_ratio'] <= 0.5)} |"
        )
    w(
        f"| pyarrow.csv.read_csv × 2 alone (the parser ottotrain uses; its floor) | {d['arrow']:.3f} | "
        f"{d['arrow_ratio']:.2f} | |"
    )
    if "polars" in d:
        w(
            f"| polars.read_csv × 2 alone (another multi-threaded parser) | {d['polars']:.3f} | "
            f"{d['polars_ratio']:.2f} | |"
        )
    w("")

    p = R["predict"]
    w("## 5. Predict\n")
    w(
        f"`ottotrain predict` with the 3×512 run over the {p['rows']:,}-row test file, submission "
        "written (the rows/s ottotrain reports: load + check + preprocess + predict + write CSV), "
        "side by side with `pandas.read_csv` of the same file.\n"
    )
    w("| | value |")
    w("|---|---|")
    w(f"| rows/s | **{p['rows_per_s']:,.0f}** |")
    w(f"| predict seconds (in-process) / whole command wall | {p['seconds']:.2f} / {p['wall']:.2f} |")
    w(f"| ratio predict seconds / pandas.read_csv of the test file | {p['ratio']:.2f} |")
    w(f"| peak RSS | {p['rss']:.0f} MiB |\n")

    w("## 6. Memory: peak RSS of `fit` on the full real train set\n")
    w("| model | plain Keras script | ottotrain fit | target < 1.5 GiB |")
    w("|---|---|---|---|")
    for r in tr:
        w(
            f"| {r['model']} | {r['plain_rss']:.0f} MiB | {r['otto_rss']:.0f} MiB | "
            f"{ok(r['otto_rss'] < 1536)} |"
        )
    w("")

    g = R["growth"]
    w("## 7. Growth with rows (generated data, tutorial MLP, batch 128)\n")
    w(
        "Epoch seconds: median of epochs 2.. where there are several, else the one epoch (which "
        "then includes tracing, under a second). Linear growth means constant µs/row and "
        "constant MiB per extra row.\n"
    )
    w("| rows | epochs | load+check+preprocess s | s/epoch | µs per training row | peak RSS MiB |")
    w("|---|---|---|---|---|---|")
    for r in g:
        if r.get("skipped"):
            w(
                f"| {r['rows']:,} | skipped | | | | projected {r['projected_rss']:,.0f} > 70 % of the "
                f"{r['available']:,.0f} MiB available now |"
            )
            continue
        w(
            f"| {r['rows']:,} | {r['epochs']} | {r['data_seconds']:.1f} | {r['epoch_seconds']:.2f} | "
            f"{r['us_per_row']:.1f} | {r['rss']:.0f} |"
        )
    done = [r for r in g if not r.get("skipped")]
    if len(done) >= 2:
        a, b = done[-2], done[-1]
        w(
            f"\nMemory per extra row between {a['rows']:,} and {b['rows']:,}: "
            f"{(b['rss'] - a['rss']) * 2**20 / (b['rows'] - a['rows']):.0f} bytes "
            f"(the float32 features alone are {93 * 4} bytes/row)."
        )
    w("\n## Commands\n")
    w(
        "Run from the repository root (`ottotrain` is the installed console script; `TRAIN`/`TEST` "
        "paths as above; temporary files under a scratch folder):\n"
    )
    w("```")
    L.extend(doc["commands"])
    w("```")
    return "\n".join(L) + "\n"


def commands(work: Path) -> list[str]:
    """The commands run, once each, with the scratch folder as $WORK and run ids as N."""
    seen = []
    for c in COMMANDS:
        c = re.sub(r"-\d{9,}", "-N", c.replace(str(work) + "/", "$WORK/"))
        if c not in seen:
            seen.append(c)
    return seen


def rest_cut_needed(big):
    """How much faster the non-matmul work would have to be for a 0.85 steady-epoch ratio."""
    plain = big["flop_per_epoch"] / big["plain_rate"] / 1e9  # plain's steady epoch, seconds
    otto = big["flop_per_epoch"] / big["otto_rate"] / 1e9
    rest_now, rest_needed = otto - big["mm_seconds"], 0.85 * plain - big["mm_seconds"]
    return max(0.0, 1 - rest_needed / rest_now) if rest_now > 0 else 0.0


def measure(train, test, work, r: common.Run, reps: int) -> dict:
    """Every section, in the order that keeps the 3x512 run for predict."""
    R = {}
    print("3. start-up", file=sys.stderr)
    R["startup"] = bench_startup(work, r.pick(7, 3, 1))
    print("4. data", file=sys.stderr)
    R["data"] = bench_data(train, test, r.pick(reps + 2, reps + 2, 1))
    print("1-2, 6. training", file=sys.stderr)
    R["training"], R["big"] = bench_training(train, work, reps, r)
    print("XLA", file=sys.stderr)
    R["xla"] = bench_xla(train, work, r)
    print("pipeline autotuner", file=sys.stderr)
    R["autotune"] = bench_autotune(train, r)
    print("5. predict", file=sys.stderr)
    R["predict"] = bench_predict(R["big"]["run_dir"], test, work, reps)
    print("7. growth", file=sys.stderr)
    R["growth"] = bench_growth(work, r)
    return R


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--reps", type=int, default=None, help="repetitions per A/B pair")
    ap.add_argument("--render", action="store_true", help="speed.md again from speed.json, nothing run")
    args = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, args)
    out = r.results / "speed.md"
    if args.render:
        out.write_text(report(json.loads(out.with_suffix(".json").read_text())))
        return
    reps = args.reps or r.pick(3, 1, 1)
    COMMANDS.clear()
    with common.scratch() as work:
        d = common.data(r, work)
        print(f"data: {d.label}", file=sys.stderr)
        R = measure(d.train, d.test, work, r, reps)
        minutes = (time.perf_counter() - r.t0) / 60
        info = {**common.machine(), "command": r.command, "date": r.started, "minutes": minutes}
        info.update(data=d.label, load0=r.load_before, load1=common.load_average())
        doc = {"info": info, "commands": commands(work), "results": R}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    out.write_text(report(doc))
    print(report(doc))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
