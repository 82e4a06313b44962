"""The Preprocessor: transform, TF-IDF and KNN features, then scaling; learned from training rows only.

Everything it learns (feature columns, class names, transform and scaling statistics)
is kept as JSON, so a run directory never needs pickle.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy.special import ndtri

from ottotrain.data.typed import ColumnTypes
from ottotrain.errors import DataError, RunError
from ottotrain.features import knn
from ottotrain.features.bins import quantile_edges
from ottotrain.features.categories import (
    EMBEDDING,
    ONE_HOT,
    CategoryState,
    InputBlock,
    fit_category,
    indices,
    one_hot,
    unseen,
)
from ottotrain.features.transforms import signed_log1p
from ottotrain.io import atomic_path, write_text
from ottotrain.log import phase

# Format 2 fixed transform 'anscombe' (format 1 sent 0 to 0, not to sqrt(3/8)); runs saved
# in format 1 keep their formula, so they predict exactly as they were trained.
# Format 3 is format 2 with KNN features (written only when data.knn is on, so runs without
# them stay readable by earlier versions); format 4 adds typed columns (categorical, dropped,
# text read as missing), written only for a table that has them; format 5 adds data.knn.space
# other than log1p and data.nonzero_count, written only when one is used.
PREPROCESS_FORMAT = 2
_READABLE_FORMATS = (1, 2, 3, 4, 5)


@dataclass
class KnnState:
    k: list[int]  # data.knn.k
    reference: str  # the sidecar file of reference rows: knn-<content hash>.npz
    space: str | None = None  # data.knn.space; None: log1p (the only space before format 5)


@dataclass
class PreprocessState:
    """Everything the preprocessing learned from the training rows (preprocess.json)."""

    format: int
    features: list[str]  # the feature columns, in order
    classes: list[str]  # the class names, in the model's output order
    id_column: str | None  # None: the files have no id column (see data.tables.ROW)
    target_column: str
    transform: str
    power: float
    tfidf: bool
    scaling: str
    nonzero_count: bool | None = None  # data.nonzero_count; None: off
    knn: KnnState | None = None
    quantiles: list[list[float]] | None = None  # transform 'quantile': per feature
    idf: list[float] | None = None  # TF-IDF's inverse document frequencies
    center: list[float] | None = None  # scaling: subtract, ...
    scale: list[float] | None = None  # ... then divide
    missing: str | None = None  # data.missing; None: a run from before it (missing is an error)
    medians: list[float] | None = None  # what a missing value becomes, per feature
    indicators: list[int] | None = None  # the numeric features that get a 0/1 "was missing" column
    categorical: list[CategoryState] | None = None  # the categorical features, in file order
    dropped: dict[str, str] | None = None  # columns of the training file left out, and why
    na_tokens: dict[str, list[str]] | None = None  # numeric columns' text cells read as missing
    na_values: list[str] | None = None  # data.na_values
    bins: list[list[float]] | None = None  # PiecewiseLinearEmbedding's quantile edges, per input

    def to_dict(self) -> dict:
        """The JSON layout: a setting that does not apply is left out, not written as null
        (but ``id_column: null`` says the files have no id column)."""
        d = {k: v for k, v in asdict(self).items() if v is not None or k == "id_column"}
        if "knn" in d:
            d["knn"] = {k: v for k, v in d["knn"].items() if v is not None}
        return d

    @classmethod
    def from_dict(cls, d: dict, source) -> "PreprocessState":
        names = {f.name for f in fields(cls)}
        try:
            d = {k: v for k, v in d.items() if k in names}
            if d.get("knn") is not None:
                d["knn"] = KnnState(**d["knn"])
            if d.get("categorical") is not None:
                d["categorical"] = [CategoryState(**c) for c in d["categorical"]]
            return cls(**d)
        except TypeError as e:
            raise RunError(
                f"{source}: damaged preprocessing state ({e}); the run directory is damaged"
            ) from None

    @property
    def numeric(self) -> list[str]:
        """The numeric features, in file order (all of them for a run without categories)."""
        cats = {c.column for c in self.categorical or ()}
        return [f for f in self.features if f not in cats]

    def column_types(self) -> ColumnTypes:
        """How fit read the training file's columns: a test file is read the same way."""
        return ColumnTypes(
            self.numeric,
            {c.column: c.values for c in self.categorical or ()},
            dict(self.dropped or {}),
            dict(self.na_tokens or {}),
        )


def has_nan(x) -> bool:
    """Whether ``x`` holds a NaN: one pass, no mask (min propagates NaN; it cannot overflow)."""
    return x.size > 0 and bool(np.isnan(x.min()))


def gaps_outside(x, features, known) -> dict[str, int]:
    """Missing values per feature of ``x``, for the features whose index is not in ``known``."""
    if not has_nan(x):
        return {}
    counts = np.isnan(x).sum(axis=0)
    return {features[j]: int(counts[j]) for j in np.flatnonzero(counts) if j not in known}


class Preprocessor:
    """Transform then scale features; every learned number is kept in ``state``.

    Transforms: ``none``, ``log1p``, ``sqrt``, ``anscombe`` (sqrt(x + 3/8)), ``power``
    (|x|^p), ``quantile`` (rank-gauss: empirical CDF mapped to a normal). Optional
    TF-IDF features are appended, then nearest-neighbour distances per class
    (``data.knn``, see ``ottotrain.knn``; the training rows are kept in a sidecar ``.npz``).
    Scaling: ``none``, ``standard``, ``minmax``, ``robust``.
    """

    N_QUANTILES = 200
    MEDIAN_ROWS = 2_000  # rows sampled for the medians of features without gaps (see _fit_missing)
    BLOCK = 1 << 16  # rows per block when computing scaling statistics

    def __init__(self, state: PreprocessState, folder=None):
        self.state = state
        self.folder = Path(folder) if folder is not None else None  # where the sidecar is
        self._ref = None  # knn.Reference, loaded on first use
        self._ref_order = None  # at fit: the reference row of each fitted row

    @classmethod
    def fit(cls, x, data_cfg, features, classes, y=None, types: ColumnTypes | None = None):
        """Learn the transform and scaling from the training rows ``x`` (float32).

        ``data_cfg`` is the config's ``data`` section (transform, scaling, id and target
        columns...); ``y`` (integer labels of those rows) is needed only for ``data.knn``;
        ``types`` says which columns are categorical (codes, see ``data.typed``), which
        were dropped and which text cells were read as missing. The transforms, TF-IDF,
        KNN, missing-value filling and scaling apply to the numeric columns only.
        """
        state = PreprocessState(
            PREPROCESS_FORMAT,
            list(features),
            list(classes),
            data_cfg.id_column,
            data_cfg.target_column,
            data_cfg.transform,
            data_cfg.power,
            data_cfg.tfidf,
            data_cfg.scaling,
        )
        state.missing = data_cfg.missing
        if data_cfg.nonzero_count:
            state.nonzero_count, state.format = True, 5
        pre = cls(state)
        if types is not None:
            x = pre._fit_types(x, features, types, data_cfg.categorical)
        state.na_values = list(data_cfg.na_values) or None
        if state.categorical or state.dropped or state.na_tokens or state.na_values:
            state.format = max(state.format, 4)
        raw = x
        if data_cfg.missing != "none":
            pre._fit_missing(x, data_cfg.missing)
            x, _ = pre._fill(x)  # the statistics below are of the filled rows
        knn_tr = pre._fit_knn(x, y, data_cfg.knn) if data_cfg.knn is not None else None
        if data_cfg.transform == "quantile":
            qs = np.linspace(0, 1, cls.N_QUANTILES)
            state.quantiles = np.quantile(x, qs, axis=0).T.tolist()
        if data_cfg.tfidf:
            state.idf = knn.inverse_document_frequency(x).tolist()
        pre._fit_scaling(raw, knn_tr, data_cfg.scaling)
        return pre

    def _fit_types(self, x, features, types: ColumnTypes, categorical_cfg):
        """Record the typed columns (dropped, text read as missing) and fit the categorical
        ones; the numeric block of ``x``."""
        state = self.state
        state.dropped = dict(types.dropped) or None
        state.na_tokens = dict(types.na_tokens) or None
        cats = [f for f in features if f in types.categorical]
        if not cats:
            return x
        state.categorical = [
            fit_category(c, types.categorical[c], x[:, features.index(c)], categorical_cfg) for c in cats
        ]
        return self._split(x)[0]

    def _fit_knn(self, x, y, knn_cfg):
        """Fit the nearest-neighbour reference on the (filled) numeric rows ``x``; the training
        rows' own KNN features, each row leaving itself out."""
        classes = self.state.classes
        if x.shape[1] == 0:
            raise DataError("data.knn: no numeric feature to measure distances on; remove data.knn")
        counts = np.bincount(y, minlength=len(classes))
        if counts.min() < 2:
            c = int(counts.argmin())
            raise DataError(
                f"data.knn: class {classes[c]!r} has {counts[c]} training row(s); "
                "nearest-neighbour features need at least 2 of every class "
                "(remove data.knn or add rows)"
            )
        space = knn_cfg.space
        self._ref, order = knn.Reference.fit(x, y, len(classes), space)
        self._ref_order = np.empty_like(order)
        self._ref_order[order] = np.arange(len(order))
        self.state.format = max(self.state.format, 3 if space == "log1p" else 5)
        self.state.knn = KnnState(
            list(knn_cfg.k), f"knn-{self._ref.digest}.npz", None if space == "log1p" else space
        )
        return self._knn(x, fitted_rows=True)

    def _fit_scaling(self, raw, knn_tr, scaling: str) -> None:
        """The scaling's center and scale, from the transformed training rows.

        Statistics of the transformed rows, a block of rows at a time: the whole transformed
        matrix, and np.std's float64 copy of it, would cost 12 bytes per value on top.
        """
        state, n, block = self.state, len(raw), self.BLOCK

        def part(i, m):  # rows i..i+m, transformed; training rows' KNN features leave themselves out
            return self._transform(raw[i : i + m], None if knn_tr is None else knn_tr[i : i + m])

        blocks = lambda: (part(i, block) for i in range(0, n, block))
        if scaling == "standard":
            if n <= block:  # one block: exactly numpy's mean and (two-pass) std
                z = part(0, n)
                mean, std = z.mean(axis=0, dtype=np.float64), z.std(axis=0, dtype=np.float64)
            else:  # the same two passes, block by block, summed in float64
                mean = sum(z.sum(axis=0, dtype=np.float64) for z in blocks()) / n
                ss = sum(np.einsum("ij,ij->j", d, d) for d in (z - mean for z in blocks()))
                std = np.sqrt(ss / n)
            state.center, state.scale = mean.tolist(), np.where(std > 0, std, 1.0).tolist()
        elif scaling == "minmax":
            lo = np.min([z.min(axis=0) for z in blocks()], axis=0)
            hi = np.max([z.max(axis=0) for z in blocks()], axis=0)
            state.center, state.scale = lo.tolist(), np.where(hi > lo, hi - lo, 1.0).tolist()
        elif scaling == "robust":
            z = part(0, n)
            q1, med, q3 = np.percentile(z, [25, 50, 75], axis=0)
            iqr = q3 - q1
            state.center, state.scale = med.tolist(), np.where(iqr > 0, iqr, 1.0).tolist()

    @property
    def n_outputs(self) -> int:
        """The model's input width: numeric block, one-hot columns, one column per embedding."""
        s = self.state
        n = len(s.numeric) * (2 if s.tfidf else 1) + (1 if s.nonzero_count else 0)
        if s.knn is not None:
            n += len(s.classes) * len(s.knn.k)
        n += len(s.indicators or ())
        return n + sum(c.size if c.encoding == ONE_HOT else 1 for c in s.categorical or ())

    @property
    def numeric_width(self) -> int:
        """The numeric block's columns: numbers, TF-IDF, KNN and 'was missing' (the first ones)."""
        cats = self.state.categorical or ()
        return self.n_outputs - sum(c.size if c.encoding == ONE_HOT else 1 for c in cats)

    def input_block(self) -> InputBlock:
        """What the model's input columns are (embedding columns at the end, bins)."""
        emb = [c for c in self.state.categorical or () if c.encoding == EMBEDDING]
        return InputBlock(
            self.n_outputs - len(emb),
            [c.size for c in emb],
            [c.dim for c in emb],
            [c.column for c in emb],
            self.numeric_width,
            self.state.bins,
        )

    def fit_bins(self, z, bins: int) -> None:
        """Quantile bins of the numeric block of ``z`` (transformed training rows), for a
        PiecewiseLinearEmbedding; kept in the state (preprocess.json)."""
        if self.numeric_width:  # none: the embedding is left out of the model
            self.state.bins = quantile_edges(z[:, : self.numeric_width], bins)

    def describe_inputs(self) -> str:
        """The input block in words: what each part of the model's input is."""
        s = self.state
        parts = [f"{len(s.numeric)} numeric"]
        if s.tfidf:
            parts.append(f"{len(s.numeric)} TF-IDF")
        if s.nonzero_count:
            parts.append("1 non-zero count")
        if s.knn is not None:
            space = f" ({s.knn.space} space)" if s.knn.space else ""
            parts.append(f"{len(s.classes) * len(s.knn.k)} KNN{space}")
        if s.indicators:
            parts.append(f"{len(s.indicators)} 'was missing'")
        for c in s.categorical or ():
            parts.append(
                f"{c.column} one-hot ({c.size})"
                if c.encoding == ONE_HOT
                else f"{c.column} embedding ({c.size} x {c.dim})"
            )
        dropped = f"; dropped: {', '.join(s.dropped)}" if s.dropped else ""
        return f"{self.n_outputs} inputs: {', '.join(parts)}{dropped}"

    def _split(self, x):
        """(the numeric columns, a copy where there are categorical ones; the codes or None)."""
        s = self.state
        if not s.categorical:
            return x, None
        cats = {c.column for c in s.categorical}
        num = [j for j, f in enumerate(s.features) if f not in cats]
        cat = [s.features.index(c.column) for c in s.categorical]
        return x[:, num], x[:, cat]

    def _categories(self, xc) -> np.ndarray:
        """One-hot columns, then embedding indices (as float32), for the codes ``xc``."""
        s = self.state
        parts = [one_hot(c, xc[:, j]) for j, c in enumerate(s.categorical) if c.encoding == ONE_HOT]
        parts += [
            indices(c, xc[:, j]).astype(np.float32)[:, None]
            for j, c in enumerate(s.categorical)
            if c.encoding == EMBEDDING
        ]
        return np.hstack(parts) if parts else np.empty((len(xc), 0), dtype=np.float32)

    def unseen_categories(self, x) -> dict[str, int]:
        """Cells per categorical column with a value the training file did not have."""
        if not self.state.categorical:
            return {}
        return unseen(self.state.categorical, self._split(x)[1])

    def _fit_missing(self, x, mode: str):
        """The training medians and the features that get a "was missing" column (auto: those
        with missing values here).

        A feature with gaps here gets the median of all its training values. One without gaps
        needs a value only for a gap at predict time (an edge case, warned about): the median
        of ``MEDIAN_ROWS`` evenly spaced training rows, a fraction of the cost of the exact
        median over every row (40 ms on Otto's 52,596 x 93: half the cached load's time).
        """
        # Which features have gaps: a mask only when there is a gap at all (min's axis-0
        # reduction is slow on row-major rows; one whole-matrix min is not).
        had = np.isnan(x).any(axis=0) if has_nan(x) else np.zeros(x.shape[1], dtype=bool)
        med = np.median(x[:: max(1, len(x) // self.MEDIAN_ROWS)], axis=0)
        if had.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value at all
                med[had] = np.nanmedian(x[:, had], axis=0)
        self.state.medians = np.where(np.isnan(med), 0.0, med).tolist()
        self.state.indicators = list(range(x.shape[1])) if mode == "all" else np.flatnonzero(had).tolist()

    def _fill(self, x, overwrite=False):
        """(x with its missing values filled, the 0/1 "was missing" columns or None)."""
        s = self.state
        if s.medians is None:
            return x, None
        ind = np.isnan(x[:, s.indicators]).astype(np.float32) if s.indicators else None
        if has_nan(x):
            rows, cols = np.nonzero(np.isnan(x))
            x = x if overwrite else x.copy()
            x[rows, cols] = np.asarray(s.medians, dtype=np.float32)[cols]
        return x, ind

    def unseen_missing(self, x) -> dict[str, int]:
        """Missing numbers in features that had none at fit (filled all the same): counts."""
        s = self.state
        if s.medians is None:
            return {}
        return gaps_outside(self._split(x)[0], s.numeric, set(s.indicators or ()))

    def _knn(self, x, fitted_rows=False):
        """The KNN features of raw rows ``x``; ``fitted_rows``: x is the rows given to fit."""
        if fitted_rows and (self._ref_order is None or len(x) != len(self._ref_order)):
            raise ValueError("fitted_rows=True needs the very rows given to Preprocessor.fit")
        ref = self.knn_reference()
        order = self._ref_order if fitted_rows else None
        with phase("Nearest-neighbour features", total=len(x)) as p:
            return knn.features(ref, x, self.state.knn.k, order, on_rows=p.advance)

    def knn_reference(self) -> knn.Reference:
        """The KNN reference rows (data.knn), read from the sidecar file on first use and checked."""
        if self._ref is None:
            name = str(self.state.knn.reference)
            path = (self.folder or Path(".")) / name
            if not re.fullmatch(r"knn-[0-9a-f]{16}\.npz", name):  # a plain name, never a path
                raise RunError(f"{path}: not a KNN reference file name; the run directory is damaged")
            try:
                self._ref = knn.Reference.load(path)
            except (OSError, ValueError, KeyError) as e:
                raise RunError(
                    f"{path}: cannot read the KNN reference rows ({e}); the run directory is damaged"
                ) from None
            if f"knn-{self._ref.digest}.npz" != path.name or self._ref.space != (
                self.state.knn.space or "log1p"
            ):
                raise RunError(f"{path}: contents do not match its name; the run directory is damaged")
        return self._ref

    def save(self, path):
        """Write the JSON to ``path`` (atomically), the KNN reference rows beside it first."""
        path = Path(path)
        if self.state.knn is not None:
            side = path.parent / self.state.knn.reference
            if not side.exists():  # content-addressed: cv members of one fold share it
                with atomic_path(side) as tmp:
                    self._ref.save(tmp)
        write_text(path, self.to_json())

    def _transform(self, x, knn_features=None, fitted_rows=False, overwrite=False):
        s = self.state
        x, missing = self._fill(x, overwrite)
        t = s.transform
        if t == "log1p":
            z = signed_log1p(x)
        elif t == "sqrt":
            z = np.sign(x) * np.sqrt(np.abs(x))
        elif t == "anscombe" and s.format == 1:
            z = np.sign(x) * np.sqrt(np.abs(x) + 0.375)  # format 1's formula (0 -> 0)
        elif t == "anscombe":
            # sqrt(x + 3/8) for counts; a negative value is mirrored (-sqrt(-x + 3/8)).
            z = np.sqrt(np.abs(x) + 0.375)
            if x.min(initial=0) < 0:
                z = np.where(x < 0, -z, z)
        elif t == "power":
            z = np.sign(x) * np.abs(x) ** s.power
        elif t == "quantile":
            qs = np.linspace(0, 1, self.N_QUANTILES)
            q = np.asarray(s.quantiles)
            z = np.empty_like(x, dtype=np.float32)
            for j in range(x.shape[1]):
                # Average of left and right interpolation handles the many tied zeros.
                lo = np.interp(x[:, j], q[j], qs)
                hi = -np.interp(-x[:, j], -q[j][::-1], -qs[::-1])
                z[:, j] = ndtri(np.clip((lo + hi) / 2, 1e-3, 1 - 1e-3))
        else:
            z = x
        z = np.asarray(z, dtype=np.float32)
        if s.tfidf:
            counts = np.maximum(x, 0)
            tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            z = np.hstack([z, (tf * np.asarray(s.idf, dtype=np.float32)).astype(np.float32)])
        if s.nonzero_count:
            z = np.hstack([z, np.count_nonzero(x, axis=1).astype(np.float32)[:, None]])
        if s.knn is not None:
            z = np.hstack([z, self._knn(x, fitted_rows) if knn_features is None else knn_features])
        if missing is not None:
            z = np.hstack([z, missing])
        return z

    def transform(self, x, overwrite=False, fitted_rows=False):
        """Apply the fitted transform and scaling; returns float32.

        ``x`` is never modified unless ``overwrite`` is true, which lets a caller that owns
        a float32 copy have it scaled in place: one copy of the data less, same values.
        ``fitted_rows``: ``x`` is exactly the rows given to ``fit``, in order, so each
        row's nearest-neighbour features leave the row itself out (only matters with KNN).
        """
        xn, xc = self._split(x)
        overwrite = overwrite or xc is not None  # the numeric columns are a copy then
        z = self._transform(xn, fitted_rows=fitted_rows, overwrite=overwrite)
        # transform 'none' on float32 input returns x itself
        owned = overwrite or not np.shares_memory(z, xn)
        if self.state.scaling != "none":
            # Subtracting into a new array when z is x: never modify x, and no extra copy pass.
            z = np.subtract(z, np.asarray(self.state.center, dtype=np.float32), out=z if owned else None)
            z /= np.asarray(self.state.scale, dtype=np.float32)
        elif not owned:
            z = z.copy()
        if xc is not None:
            z = np.hstack([z, self._categories(xc)])
        return z

    def to_json(self) -> str:
        return json.dumps(self.state.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str, source="preprocess.json"):
        """Read the state; a KNN sidecar is looked for in ``source``'s folder."""
        try:
            state = json.loads(text)
        except json.JSONDecodeError as e:
            raise RunError(f"{source}: not valid JSON ({e}); the run directory is damaged") from None
        if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
            raise RunError(
                f"{source}: unknown preprocessing format; the run was made by an "
                "incompatible ottotrain version"
            )
        return cls(PreprocessState.from_dict(state, source), Path(source).parent)
