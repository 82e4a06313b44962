"""The 3×512 model's matrix multiplies alone, at its training shapes: a speed ceiling.

    python bench/matmul_shapes.py [--rows 52596] [--val-rows 9282] [--batch 128]
    python bench/matmul_shapes.py --smoke   # 2,000 rows, one repetition, a 256² sgemm

Runs, in one traced TensorFlow loop, exactly the matrix multiplies one training epoch of
the benchmark's 3×512 MLP does (per batch: 4 forward, 4 weight-gradient and 3
input-gradient products) plus the validation forward pass, with TensorFlow's own matmul
kernels and threads, and nothing else: no batch norm, activation, dropout, loss or
optimizer. Its time is what an epoch would take if everything but the matrix multiplies
were free, so ``matmul-only seconds / plain Keras steady epoch`` is the lowest ratio any
trainer running these kernels could reach. Prints one JSON line.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common  # noqa: E402
import tensorflow as tf  # noqa: E402

WIDTHS = (93, 512, 512, 512, 9)  # the 3x512 model: 93 features -> 3 x 512 -> 9 classes


def epoch_matmuls(rows, batch, val_rows, steps_override=None):
    steps = steps_override or -(-rows // batch)
    w = [tf.random.normal((a, b)) for a, b in zip(WIDTHS, WIDTHS[1:])]
    acts = [tf.random.normal((batch, d)) for d in WIDTHS]  # layer inputs / outputs
    val = tf.random.normal((val_rows, WIDTHS[0]))

    @tf.function
    def run():
        def body(i, acc):
            # Inputs that change with the step, so no product can be hoisted out of the loop
            # (the elementwise add is ~1/500 of a product's work).
            eps = tf.cast(i, tf.float32) * 1e-9
            x = [a + eps for a in acts]
            for k, wk in enumerate(w):  # forward: x_k @ W_k
                acc += tf.matmul(x[k], wk)[0, 0]
            for k, wk in enumerate(w):  # backward: dW_k = x_k^T @ dy_k; dx_k = dy_k @ W_k^T
                acc += tf.matmul(x[k], x[k + 1], transpose_a=True)[0, 0]
                if k > 0:
                    acc += tf.matmul(x[k + 1], wk, transpose_b=True)[0, 0]
            return i + 1, acc

        _, acc = tf.while_loop(lambda i, a: i < steps, body, (tf.constant(0), tf.constant(0.0)))
        h = val
        for wk in w:  # the validation pass: forward only, in one chunk as ottotrain does
            h = tf.matmul(h, wk)
        return acc + h[0, 0]

    return run


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--rows", type=int, default=52596)
    ap.add_argument("--val-rows", type=int, default=9282)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    if a.smoke:
        a.rows, a.val_rows, a.reps = 2_000, 300, 1
    run = epoch_matmuls(a.rows, a.batch, a.val_rows)
    run()  # trace and warm up
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        float(run())
        times.append(time.perf_counter() - t)
    per_row = sum(x * y for x, y in zip(WIDTHS, WIDTHS[1:]))  # forward multiply-adds
    flops = 2 * per_row * (3 * a.rows + a.val_rows)  # the figure section 2 uses
    best = min(times)
    print(
        json.dumps(
            {
                "seconds": best,
                "times": times,
                "gflops": flops / best / 1e9,
                "tf_sgemm_gflops": tf_sgemm(256 if a.smoke else 2048),
                "rows": a.rows,
                "val_rows": a.val_rows,
                "batch": a.batch,
            }
        )
    )


def tf_sgemm(n=2048):
    """GFLOP/s of TensorFlow's own float32 n x n matmul (best of 5 after warm-up)."""
    x = tf.random.normal((n, n))
    f = tf.function(lambda m: tf.matmul(m, m)[0, 0])
    float(f(x))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        float(f(x))
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


if __name__ == "__main__":
    main()
