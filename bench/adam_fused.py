"""Keras 3's Adam update against TensorFlow's fused ResourceApplyAdam kernel (one-off probe).

    python bench/adam_fused.py
    python bench/adam_fused.py --smoke   # 5 steps instead of 411

Writes its block of bench/results/probes.md.

Applies Adam to the 3x512 bench model's weight shapes (93 -> 3 x 512 PReLU/BatchNorm -> 9)
411 times, one epoch's steps at batch 128 on 52,596 rows, inside one tf.function, both
ways, twice each, and prints the seconds and how far the weights drift apart. Keras
updates each weight with several separate TensorFlow ops (each a pass over memory); the
fused kernel makes one pass. Its results differ in the last bit, so it is not used by
default (README "Benchmarks").
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402  (bench/ is on sys.path when run as a script)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from matmul_shapes import WIDTHS  # noqa: E402

# Per layer a Dense kernel and bias; hidden layers also a PReLU alpha and BatchNorm gamma, beta.
SHAPES = [
    s for a, b in zip(WIDTHS, WIDTHS[1:]) for s in [(a, b), (b,)] + ([(b,)] * 3 if b != WIDTHS[-1] else [])
]
STEPS = 411  # ceil(52,596 / 128)


def compare(steps: int) -> list[str]:
    """The weight drift after 1 and 10 steps, then each side's seconds for ``steps`` steps, twice."""
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s).astype("f4") for s in SHAPES]
    grads = [tf.constant(rng.normal(size=s).astype("f4")) for s in SHAPES]
    kvars = [keras.Variable(x) for x in init]
    opt = keras.optimizers.Adam(1e-3)
    opt.build(kvars)

    @tf.function
    def keras_steps(n):
        for _ in tf.range(n):
            opt.apply(grads, kvars)

    fvars = [tf.Variable(x) for x in init]
    ms = [tf.Variable(tf.zeros_like(x)) for x in init]
    vs = [tf.Variable(tf.zeros_like(x)) for x in init]
    step = tf.Variable(0, dtype=tf.int64)

    @tf.function
    def fused_steps(n):
        for _ in tf.range(n):
            step.assign_add(1)
            t = tf.cast(step, tf.float32)
            b1p, b2p = tf.pow(0.9, t), tf.pow(0.999, t)
            for var, m, v, g in zip(fvars, ms, vs, grads):
                tf.raw_ops.ResourceApplyAdam(
                    var=var.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=b1p,
                    beta2_power=b2p,
                    lr=tf.constant(1e-3),
                    beta1=tf.constant(0.9),
                    beta2=tf.constant(0.999),
                    epsilon=tf.constant(1e-7),
                    grad=g,
                )

    def drift():
        return max(float(tf.reduce_max(tf.abs(a.value - b))) for a, b in zip(kvars, fvars))

    lines = []
    keras_steps(tf.constant(1))
    fused_steps(tf.constant(1))
    lines.append(f"max |weight difference| after 1 step: {drift():.3g}")
    keras_steps(tf.constant(9))
    fused_steps(tf.constant(9))
    lines.append(f"max |weight difference| after 10 steps: {drift():.3g}")
    for _ in range(2):
        for name, f in (("keras Adam", keras_steps), ("fused ResourceApplyAdam", fused_steps)):
            t0 = time.perf_counter()
            f(tf.constant(steps))
            lines.append(f"{name}: {time.perf_counter() - t0:.3f} s per {steps} steps")
    return lines


def main(argv=None):
    a = common.parser(__doc__).parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    lines = compare(r.pick(STEPS, STEPS, 5))
    print("\n".join(lines))
    r.record(
        "probes",
        "Keras 3's Adam against the fused ResourceApplyAdam kernel",
        "\n".join(f"- {x}" for x in lines),
    )


if __name__ == "__main__":
    main()
