"""A run as one TensorFlow graph: raw feature columns in, class probabilities out (SavedModel).

Everything ``features.Preprocessor.transform`` does in numpy is done again here in
TensorFlow ops, from the same fitted state (``PreprocessState``), so the SavedModel needs
neither ottotrain nor the run directory: missing-value filling and 'was missing' columns,
the transform, TF-IDF, the KNN features (the reference rows are variables of the
SavedModel), scaling, and the category lookups ('other' bucket, missing as a category).
The members' Keras models follow (their numeric embeddings and category embeddings are
layers already), then the members' probabilities are averaged with their weights as
``workflows.predictor.Predictor.predict_proba`` averages them.

The serving signature takes one ``[None]`` tensor per feature column (float32 numbers,
NaN missing; strings for categorical columns, ``""`` or a missing-value marker missing)
and returns ``probabilities`` (rows x classes, float32) and ``classes`` (rows x classes,
the class names, as TensorFlow's classification signatures have them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ottotrain.engine import ensemble, layers, numeric_embeddings  # noqa: F401  (registers ottotrain's layers)
from ottotrain.engine.env import tf
from ottotrain.features import knn
from ottotrain.features.categories import EMBEDDING, ONE_HOT
from ottotrain.features.preprocess import Preprocessor, PreprocessState

SIGNATURE = "serving_default"
PACKED = (
    "packed"  # the signature of two inputs: every numeric column in one matrix, every text one in another
)
NUMBERS, STRINGS = "numbers", "strings"
KNN_CHUNK = knn.CHUNK  # query rows per distance matrix, as the numpy code computes them
_QS = np.linspace(0, 1, Preprocessor.N_QUANTILES)


@dataclass
class GraphInput:
    """One input of the signature: the feature ``column`` (CSV header) under its signature ``key``."""

    column: str
    key: str  # the column name made a valid signature key (see workflows.export.signature_keys)
    categorical: bool


@dataclass
class GraphMember:
    """One model of the run with what its preprocessing learned."""

    name: str
    state: PreprocessState
    model: object  # a keras.Model
    weight: float
    reference: knn.Reference | None  # the KNN reference rows (state.knn set)


def _signed_log1p(x):
    # numpy's signed_log1p takes plain log1p for rows without negatives: the same values.
    return tf.math.log1p(tf.maximum(x, 0.0)) - tf.math.log1p(tf.maximum(-x, 0.0))


def _interp(x, xp, fp):
    """np.interp per column: ``x`` (F, N) float64, ``xp`` (F, M) increasing, ``fp`` (M,)."""
    m = xp.shape[1]
    j = tf.searchsorted(xp, x, side="right") - 1  # the last knot <= x
    jc = tf.clip_by_value(j, 0, m - 2)
    x0, x1 = tf.gather(xp, jc, batch_dims=1), tf.gather(xp, jc + 1, batch_dims=1)
    f0, f1 = tf.gather(fp, jc), tf.gather(fp, jc + 1)
    inside = f0 + (f1 - f0) / tf.where(x1 > x0, x1 - x0, 1.0) * (x - x0)
    return tf.where(j < 0, fp[0], tf.where(j >= m - 1, fp[-1], inside))


class _Preprocess(tf.Module):
    """One member's preprocessing (``Preprocessor.transform``) as TensorFlow ops."""

    def __init__(self, state: PreprocessState, reference, ref_variable=None):
        super().__init__()
        s = self.state = state
        f32 = lambda v: tf.constant(np.asarray(v, dtype=np.float32))
        cats = {c.column for c in s.categorical or ()}
        self.numeric = [f for f in s.features if f not in cats]
        self.medians = None if s.medians is None else f32(s.medians)
        self.indicators = list(s.indicators or ())
        self.idf = None if s.idf is None else f32(s.idf)
        self.center = None if s.center is None else f32(s.center)
        self.scale = None if s.scale is None else f32(s.scale)
        if s.transform == "quantile":
            q = np.asarray(s.quantiles, dtype=np.float64)
            self.q_lo, self.q_hi = tf.constant(q), tf.constant(-q[:, ::-1].copy())
        self.ref = ref_variable  # (columns, norms) of the reference's knn.Layout
        if reference is not None:
            self.ref_space = reference.space
            self.ref_idf = None if reference.idf is None else f32(reference.idf)
            self.ref_counts = reference.counts.tolist()
            self.ref_starts = reference.layout.starts.tolist()
        self.tables = []  # per categorical column: value -> model index (absent: 'other' or missing)
        for c in s.categorical or ():
            init = tf.lookup.KeyValueTensorInitializer(
                tf.constant(c.values, tf.string), tf.constant(c.index, tf.int64)
            )
            self.tables.append(tf.lookup.StaticHashTable(init, default_value=-1))

    def __call__(self, numbers, strings, numeric_order, string_order, na_tokens, exact=True):
        """The model's input rows from the packed inputs: ``numbers`` (rows x numeric columns,
        in ``numeric_order``) and ``strings`` (rows x categorical columns, in ``string_order``).
        ``exact=False``: float32 throughout and the KNN rows in one step (TensorFlow Lite's ops)."""
        s = self.state
        z = None
        if self.numeric:
            at = [numeric_order.index(f) for f in self.numeric]
            x = numbers if at == list(range(len(numeric_order))) else tf.gather(numbers, at, axis=1)
            z = self._numeric(x, exact)
        if s.categorical:
            ones, embedded = [], []
            for c, table in zip(s.categorical, self.tables):
                v = strings[:, string_order.index(c.column)]
                found = table.lookup(v)
                missing = tf.equal(v, "") | tf.reduce_any(tf.equal(v[:, None], na_tokens[None, :]), axis=1)
                idx = tf.where(found >= 0, found, tf.where(missing, tf.cast(c.missing, tf.int64), 0))
                if c.encoding == ONE_HOT:
                    ones.append(tf.one_hot(idx, c.size, dtype=tf.float32))
                elif c.encoding == EMBEDDING:
                    embedded.append(tf.cast(idx, tf.float32)[:, None])
            z = tf.concat(([z] if z is not None else []) + ones + embedded, axis=1)
        return z

    def _numeric(self, x, exact=True):
        s = self.state
        missing = None
        if self.medians is not None:
            gaps = tf.math.is_nan(x)
            if self.indicators:
                missing = tf.cast(tf.gather(gaps, self.indicators, axis=1), tf.float32)
            x = tf.where(gaps, self.medians, x)
        parts = [self._transform(x)]
        if s.tfidf:
            counts = tf.maximum(x, 0.0)
            tf_ = counts / tf.maximum(tf.reduce_sum(counts, axis=1, keepdims=True), 1.0)
            parts.append(tf_ * self.idf)
        if s.nonzero_count:
            parts.append(tf.cast(tf.math.count_nonzero(x, axis=1, keepdims=True), tf.float32))
        if s.knn is not None:
            q = self._knn_space(x)
            parts.append(self._knn(q) if exact else self._knn_lite(q, self.state.knn.k))
        if missing is not None:
            parts.append(missing)
        z = tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]
        if s.scaling != "none":
            z = (z - self.center) / self.scale
        return z

    def _transform(self, x):
        s, t = self.state, self.state.transform
        if t == "log1p":
            return _signed_log1p(x)
        if t == "sqrt":
            return tf.sign(x) * tf.sqrt(tf.abs(x))
        if t == "anscombe" and s.format == 1:
            return tf.sign(x) * tf.sqrt(tf.abs(x) + 0.375)  # format 1's formula (0 -> 0)
        if t == "anscombe":
            z = tf.sqrt(tf.abs(x) + 0.375)
            return tf.where(x < 0, -z, z)
        if t == "power":
            return tf.sign(x) * tf.pow(tf.abs(x), tf.constant(s.power, tf.float32))
        if t == "quantile":
            xt = tf.transpose(tf.cast(x, tf.float64))  # (F, N): one row of knots per feature
            qs = tf.constant(_QS)
            lo = _interp(xt, self.q_lo, qs)
            hi = -_interp(-xt, self.q_hi, tf.constant(-_QS[::-1].copy()))
            p = tf.clip_by_value((lo + hi) / 2, 1e-3, 1 - 1e-3)
            return tf.transpose(tf.cast(tf.math.ndtri(p), tf.float32))
        return x

    def _knn(self, q):
        """knn.features for new rows (in the distance space): chunks of rows against every
        reference row."""
        ks = self.state.knn.k
        width = len(self.ref_counts) * len(ks)
        n = tf.shape(q)[0]
        chunks = (n + KNN_CHUNK - 1) // KNN_CHUNK
        out = tf.TensorArray(tf.float32, size=chunks, infer_shape=False, element_shape=[None, width])

        def body(i, out):
            return i + 1, out.write(i, self._knn_chunk(q[i * KNN_CHUNK : (i + 1) * KNN_CHUNK], ks))

        # Two chunks at a time, as the numpy code's two threads: each holds a rows x reference matrix.
        _, out = tf.while_loop(lambda i, _: i < chunks, body, [0, out], parallel_iterations=2)
        return tf.reshape(out.concat(), [n, width])

    def _knn_space(self, x):
        """knn.space: the rows where the distances are measured."""
        if self.ref_space == "raw":
            return x
        if self.ref_space == "tfidf":
            w = tf.maximum(x, 0.0) * self.ref_idf
            return w / tf.maximum(tf.sqrt(tf.reduce_sum(w * w, axis=1, keepdims=True)), 1e-12)
        return _signed_log1p(x)

    def _knn_chunk(self, qc, ks):
        """knn.features of the rows ``qc``, found as ``knn.ranking`` and ``knn.nearest`` find them."""
        # Read as tensors: a gather on the variable itself (ResourceGather) would switch it to
        # copy-on-read, and every later read would copy the whole reference (12 ms a read).
        columns, norms = (tf.convert_to_tensor(v) for v in self.ref)
        used = tf.where(tf.reduce_any(tf.not_equal(qc, 0.0), axis=0))[:, 0]
        g = tf.matmul(tf.gather(qc, used, axis=1), tf.gather(columns, used)) * -2.0 + norms
        outs = []
        for c, count in enumerate(self.ref_counts):
            lo, hi = self.ref_starts[c], self.ref_starts[c + 1]
            kk = min(max(ks), count)
            idx = _nearest(g[:, lo:hi], kk)
            near = tf.transpose(tf.gather(columns, lo + idx, axis=1), [1, 2, 0])  # (rows, kk, features)
            diff = near - qc[:, None, :]
            d = tf.sort(tf.sqrt(tf.reduce_sum(diff * diff, axis=2)), axis=1)
            # numpy's cumsum is float32, its division by the counts float64
            mean = tf.cast(tf.cumsum(d, axis=1), tf.float64) / np.arange(1, kk + 1, dtype=np.float64)
            pick = tf.gather(mean, [min(k, kk) - 1 for k in ks], axis=1)
            outs.append(tf.cast(tf.math.log(pick + knn.EPS), tf.float32))
        return tf.concat(outs, axis=1)

    def _knn_lite(self, qc, ks):
        """``_knn_chunk`` in float32 for TensorFlow Lite, all rows at once: per class, one product
        of the rows (times -2) with the class's reference rows, plus their norms. The class's rows
        are the transposed columns, which the converter folds into a constant: the product is a
        fully-connected op whose weights are the reference rows (packed once by XNNPACK), the
        chosen rows are gathered whole, and no matrix of the reference is made per request."""
        columns, norms = (tf.convert_to_tensor(v) for v in self.ref)
        left, outs = qc * -2.0, []
        for c, count in enumerate(self.ref_counts):
            lo, hi = self.ref_starts[c], self.ref_starts[c + 1]
            rows = tf.transpose(columns[:, lo:hi])
            kk = min(max(ks), count)
            near = tf.gather(rows, _nearest(tf.matmul(left, rows, transpose_b=True) + norms[lo:hi], kk))
            diff = near - qc[:, None, :]
            d = -tf.math.top_k(-tf.sqrt(tf.reduce_sum(diff * diff, axis=2)), kk)[0]  # ascending
            mean = tf.cumsum(d, axis=1) / np.arange(1, kk + 1, dtype=np.float32)
            pick = tf.gather(mean, [min(k, kk) - 1 for k in ks], axis=1)
            outs.append(tf.math.log(pick + np.float32(knn.EPS)))
        return tf.concat(outs, axis=1)


def _nearest(block, kk):
    """knn.nearest: the column indices of each row's ``kk`` smallest values (the block's
    width a multiple of knn.GROUP), found among the groups of columns with the smallest minima."""
    n, w = tf.shape(block)[0], block.shape[1] // knn.GROUP
    if w <= kk:
        return tf.math.top_k(-block, kk)[1]
    mins = tf.reduce_min(tf.reshape(block, [n, knn.GROUP, w]), axis=1)
    groups = tf.math.top_k(-mins, kk)[1]
    cols = tf.reshape(groups[:, :, None] + w * tf.range(knn.GROUP), [n, kk * knn.GROUP])
    pick = tf.math.top_k(-tf.gather(block, cols, batch_dims=1), kk)[1]
    return tf.gather(cols, pick, batch_dims=1)


def _function(fn, signature):
    """``fn`` as a tf.function without AutoGraph: its branches and loops run on Python values
    (the one loop over tensors is an explicit ``tf.while_loop``), and AutoGraph's rewriting of
    their source was most of an export's time (0.9 s of 1.2 s for the tutorial MLP)."""
    return tf.function(fn, input_signature=signature, autograph=False)


class ExportModule(tf.Module):
    """The run's members behind one serving function (``serve``)."""

    def __init__(self, members: list[GraphMember], inputs: list[GraphInput], classes, na_tokens):
        super().__init__()
        self.models = [m.model for m in members]
        self.weights = [float(m.weight) for m in members]
        self.class_names = tf.constant(list(classes), tf.string)
        self.na_tokens = tf.constant(list(na_tokens) or [""], tf.string)
        self.inputs = inputs
        refs = {}  # reference rows by content: the members of one cv fold share them
        self.references = []
        self.preprocess = []
        self._member_pre = []
        by_state = {}  # one preprocessing per distinct state, as Predictor's cache
        for m in members:
            key = Preprocessor(m.state).to_json()
            if key not in by_state:
                var = None
                if m.reference is not None:
                    if m.reference.digest not in refs:
                        lay = m.reference.layout
                        refs[m.reference.digest] = (
                            tf.Variable(lay.columns, trainable=False, name="knn_columns"),
                            tf.Variable(lay.norms, trainable=False, name="knn_norms"),
                        )
                        self.references.extend(refs[m.reference.digest])
                    var = refs[m.reference.digest]
                by_state[key] = len(self.preprocess)
                self.preprocess.append(_Preprocess(m.state, m.reference, var))
            self._member_pre.append(by_state[key])
        self.numeric_columns = [i.column for i in inputs if not i.categorical]
        self.string_columns = [i.column for i in inputs if i.categorical]
        dtype = lambda i: tf.string if i.categorical else tf.float32
        spec = {i.key: tf.TensorSpec([None], dtype(i), name=i.key) for i in inputs}
        self.serve = _function(self._serve, [spec])
        packed = [tf.TensorSpec([None, len(self.numeric_columns)], tf.float32, name=NUMBERS)]
        if self.string_columns:
            packed.append(tf.TensorSpec([None, len(self.string_columns)], tf.string, name=STRINGS))
        fn = self._packed if self.string_columns else self._packed_numbers
        self.serve_packed = _function(fn, packed)
        # The same in float32 ops only, saved beside the signatures: what serve converts to
        # TensorFlow Lite (engine.lite), which has no float64 arithmetic.
        lite = self._packed_lite if self.string_columns else self._packed_numbers_lite
        self.serve_lite = _function(lite, packed)

    def packed_only(self) -> None:
        """Leave out the per-column signature and the float32 function: what is saved then
        is the packed signature alone (all that MLflow's pyfunc calls), traced and written
        in less time."""
        del self.serve, self.serve_lite

    def _serve(self, features):
        n = tf.shape(next(iter(features.values())))[0]
        numbers = [features[i.key] for i in self.inputs if not i.categorical]
        numbers = tf.stack(numbers, axis=1) if numbers else tf.zeros([n, 0], tf.float32)
        strings = [features[i.key] for i in self.inputs if i.categorical]
        out = self._probabilities(numbers, tf.stack(strings, axis=1) if strings else None)
        return {**out, "classes": tf.tile(self.class_names[None, :], [n, 1])}

    def _packed_numbers(self, numbers):
        return self._probabilities(numbers, None)

    def _packed(self, numbers, strings):
        return self._probabilities(numbers, strings)

    def _packed_numbers_lite(self, numbers):
        return self._probabilities(numbers, None, exact=False)

    def _packed_lite(self, numbers, strings):
        return self._probabilities(numbers, strings, exact=False)

    def _probabilities(self, numbers, strings, exact=True):
        zs = [
            pre(numbers, strings, self.numeric_columns, self.string_columns, self.na_tokens, exact)
            for pre in self.preprocess
        ]
        total = sum(self.weights)
        dtype = tf.float64 if exact else tf.float32
        p = None
        for model, w, j in zip(self.models, self.weights, self._member_pre):
            q = tf.cast(model(zs[j], training=False), dtype)
            q = tf.maximum(q, 0.0)  # proba_rows: clipped at 0, rows summing to 1, in float64
            q = q / tf.reduce_sum(q, axis=1, keepdims=True) * (w / total)
            p = q if p is None else p + q
        return {"probabilities": tf.cast(p, tf.float32)}


def build(members, inputs, classes, na_tokens) -> ExportModule:
    return ExportModule(members, inputs, classes, na_tokens)


def save(module: ExportModule, path) -> None:
    """Write the SavedModel to ``path`` (a new folder): the per-column signature (unless
    ``packed_only`` dropped it), and the packed one."""
    signatures = {SIGNATURE: module.serve} if hasattr(module, "serve") else {}
    tf.saved_model.save(module, str(path), signatures=signatures | {PACKED: module.serve_packed})


def packed_function(module_or_path, keys=None):
    """``f(numbers, strings=None) -> probabilities`` (rows x classes, float32 numpy) from an
    ``ExportModule`` or a SavedModel folder (loaded once, here): ``numbers`` is float32 rows x
    numeric columns, ``strings`` rows x categorical columns (in the schema's order). Thread-safe;
    traced once for any number of rows. An export made before the packed signature existed
    is called through its per-column one: ``keys`` (numeric keys, categorical keys) say how
    the matrices split into its inputs."""
    if isinstance(module_or_path, ExportModule):
        keep = module_or_path
    else:
        keep = tf.saved_model.load(str(module_or_path))
        if not hasattr(keep, "serve_packed"):
            return _per_column(keep, *keys)
    fn = keep.serve_packed.get_concrete_function()

    def predict(numbers, strings=None) -> np.ndarray:
        args = (numbers,) if strings is None else (numbers, tf.constant(strings, tf.string))
        return fn(*args)["probabilities"].numpy()

    predict.module = keep  # the loaded graph lives as long as the function
    return predict


def _per_column(keep, numeric_keys, string_keys):
    fn = keep.signatures[SIGNATURE]

    def predict(numbers, strings=None) -> np.ndarray:
        feeds = {k: tf.constant(numbers[:, j]) for j, k in enumerate(numeric_keys)}
        feeds |= {k: tf.constant(strings[:, j], tf.string) for j, k in enumerate(string_keys)}
        return fn(**feeds)["probabilities"].numpy()

    predict.module = keep
    return predict
