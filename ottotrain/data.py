"""Reading the CSVs, checking them, and preprocessing features.

``read_table`` loads a CSV (plain or gzipped) and checks it the way a careful user
would: file present and readable, a real comma-separated header, no duplicated
columns, every feature numeric and finite, no missing values. Errors name the
file, the column and the line number (the header is line 1).

``Preprocessor`` learns everything from the training rows only (feature columns,
class names, transform and scaling statistics) and saves it as JSON, so a run
directory never needs pickle.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import warnings
from pathlib import Path

import numpy as np

from ottotrain.errors import DataError

# Format 2 fixed transform 'anscombe' (format 1 sent 0 to 0, not to sqrt(3/8)); runs saved
# in format 1 keep their formula, so they predict exactly as they were trained.
# Format 3 is format 2 with KNN features (written only when data.knn is on, so runs without
# them stay readable by earlier versions).
PREPROCESS_FORMAT = 2
_READABLE_FORMATS = (1, 2, 3)


def natural_key(s: str):
    """Sort key that puts Class_2 before Class_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def _open_text_head(path: Path, nbytes=65536) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read(nbytes)


def read_header(path, role="data") -> list[str]:
    """Return the column names of a CSV, checking that it looks like one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {role} file not found; check data.{role} in the config "
                        "(relative paths are relative to the config file)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    try:
        head = _open_text_head(path)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the file ({e}); is it a valid "
                        f"{'gzip' if path.suffix == '.gz' else 'CSV'} file?") from None
    if not head.strip():
        raise DataError(f"{path}: the file is empty; expected a CSV with a header row")
    if b"\x00" in head or head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04":
        hint = ("it is gzip-compressed: name it .csv.gz" if head[:2] == b"\x1f\x8b" else
                "a zip or Excel file? export it as CSV" if head[:4] == b"PK\x03\x04" else
                "save it as comma-separated text")
        raise DataError(f"{path}: looks like a binary file, not a CSV ({hint})")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) < 65536 or e.start < len(head) - 4:  # a cut multi-byte char at the end is fine
            raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8") from None
        text = head[: e.start].decode("utf-8")
    first = text.splitlines()[0].lstrip("\ufeff")
    cols = [c.strip().strip('"') for c in first.split(",")]
    if len(cols) < 2:
        for sep, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if sep in first:
                raise DataError(f"{path}: line 1 is separated by {label}, not commas; "
                                "save the file as comma-separated CSV")
        raise DataError(f"{path}: line 1 has a single column {cols[0][:40]!r}; expected a "
                        "comma-separated header such as id,feat_1,...,target")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{path}: duplicated column name(s) {', '.join(dup)} in the header; "
                        "column names must be unique")
    empty = [i + 1 for i, c in enumerate(cols) if not c]
    if empty:
        raise DataError(f"{path}: header column {empty[0]} has no name; every column needs one")
    return cols


@contextlib.contextmanager
def _utf8_errors(path):
    """Undecodable bytes beyond the header surface late, in pandas; report them as data errors."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a value); "
                        "save the CSV as UTF-8") from None


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# pandas' default missing-value markers, so that the fast path reads what pd.read_csv reads.
_NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
              "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


def _read_csv_arrow(path: Path, usecols=None):
    """``pd.read_csv(path, engine="pyarrow")``, minus its slow part.

    Given a path, pandas opens a ``.gz`` file in Python and hands pyarrow a Python
    file object, so decompression runs under the GIL and feeds the parser slowly
    (about 2x slower than pandas' own C parser on the Otto files). Handing pyarrow
    the path lets it decompress natively and parse on all cores. Same values,
    column names and missing-value markers as pandas; any error goes to the caller,
    which retries with pandas for a message with a line number.
    """
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(null_values=_NA_VALUES, strings_can_be_null=True,
                                   include_columns=list(usecols) if usecols is not None else None)
    table = pacsv.read_csv(str(path), convert_options=convert)
    # Free Arrow's buffers column by column as they convert, and skip pandas' block
    # consolidation (a second full copy): peak memory ~1x the table instead of ~3x.
    return table.to_pandas(self_destruct=True, split_blocks=True)


# The fast path: the feature columns are parsed as float32 by Arrow (all cores) and
# copied block by block into one C-ordered float32 matrix, never through pandas: about half
# the memory of a pandas frame of int64/float64 columns and its float32 copy, and one
# conversion instead of two. Anything it cannot vouch for (a value that is not a number, a
# missing or non-finite value, a ragged row, no rows) sends the file down the careful path,
# ``read_table`` + ``check_features``, which reports the problem with its line number.
#
# Its parsed tables are cached as Arrow IPC files (plain columnar data, no code), keyed by
# the file's absolute path, size and modification time and the columns read: the daily loop
# reads the same files again and again, and parsing is most of the load time.
# OTTOTRAIN_CSV_CACHE=0 turns it off. Small files are not worth it. The folder is kept under
# OTTOTRAIN_CSV_CACHE_MAX_MB (default 2048): least recently used entries go first, and a
# table bigger than that is not cached at all (generated files of millions of rows would
# otherwise pile up gigabytes that are never read again).
CSV_CACHE_MIN_BYTES = 1 << 20
CSV_CACHE_MAX_BYTES = 2048 << 20
CSV_CACHE_FORMAT = 2  # 2: the columns read, features as one matrix; 1 (pandas frames): unread


def _csv_cache_budget() -> int:
    import os

    try:
        return int(float(os.environ["OTTOTRAIN_CSV_CACHE_MAX_MB"]) * (1 << 20))
    except (KeyError, ValueError):
        return CSV_CACHE_MAX_BYTES


def _csv_cache_path(path: Path, columns=()):
    import hashlib
    import os

    from ottotrain.io import cache_dir

    if os.environ.get("OTTOTRAIN_CSV_CACHE", "1") == "0":
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_size < CSV_CACHE_MIN_BYTES:
        return None
    key = f"{CSV_CACHE_FORMAT}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{json.dumps(list(columns))}"
    return cache_dir("csv", hashlib.sha256(key.encode()).hexdigest()[:32] + ".arrow")


def _cache_load(cache, columns):
    import pyarrow as pa

    try:
        with pa.memory_map(str(cache)) as src:
            table = pa.ipc.open_file(src).read_all()
    except Exception:  # a damaged cache entry is simply re-made
        return None
    if table.column_names != list(columns):
        return None
    with contextlib.suppress(OSError):
        cache.touch()  # recently used: pruned last
    return table


def _cache_store(cache, table):
    import pyarrow as pa

    from ottotrain.io import atomic_path

    budget = _csv_cache_budget()
    if table.nbytes > budget:
        return
    with contextlib.suppress(Exception):  # a cache is an optimisation: never fail a run on it
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, pa.OSFile(tmp, "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        _prune_cache(cache.parent, budget, keep=cache)


def _prune_cache(folder, budget: int, keep):
    """Delete the least recently used entries until the folder holds at most ``budget`` bytes."""
    entries = []
    for f in folder.glob("*.arrow"):
        with contextlib.suppress(OSError):
            st = f.stat()
            entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    for _, size, f in sorted(entries, key=lambda e: e[0]):
        if total <= budget:
            break
        if f != keep:
            with contextlib.suppress(OSError):
                f.unlink()
                total -= size


def _to_matrix(table, features) -> np.ndarray:
    """The float32 feature columns of an Arrow table as one C-ordered matrix.

    Arrow lays each record batch (a few thousand rows) out row-major in C++; a Python loop
    over columns, or pandas, was 2-6x slower here.
    """
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    row = 0
    for batch in table.select(features).to_batches():
        n = batch.num_rows
        x[row:row + n] = np.asarray(batch.to_tensor(row_major=True))
        row += n
    return x


_CACHED_X = "__features__"  # the cache keeps the checked matrix row-major: a hit is one copy


def _read_fast(path: Path, features, others):
    """(x, DataFrame of ``others``) by the fast path, or None where the careful path must look."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = [*others, *features]
    cache = _csv_cache_path(path, columns)
    hit = _cache_load(cache, [*others, _CACHED_X]) if cache is not None and cache.exists() else None
    if hit is not None:
        flat = hit.column(_CACHED_X)
        flat = flat.chunk(0) if flat.num_chunks == 1 else flat.combine_chunks()
        x = flat.flatten().to_numpy().reshape(len(flat), len(features)).copy()  # off the mmap
        return x, hit.select(list(others)).to_pandas()
    convert = pacsv.ConvertOptions(
        column_types={f: pa.float32() for f in features}, include_columns=columns,
        null_values=_NA_VALUES, strings_can_be_null=True)
    try:
        table = pacsv.read_csv(str(path), convert_options=convert)
    except Exception:  # malformed, non-numeric, a header Arrow reads otherwise, ...
        return None
    if table.num_rows == 0 or any(table.column(f).null_count for f in features):
        return None
    x = _to_matrix(table, features)
    if not np.isfinite(x).all():
        return None
    rest = table.select(list(others))
    del table
    if cache is not None:
        _cache_store(cache, rest.append_column(
            _CACHED_X, pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), len(features))))
    return x, rest.to_pandas()


def read_columns(path, role, features, others=()):
    """Read a CSV's feature columns as one checked float32 matrix, plus a few other columns.

    Args:
        path: ``.csv`` or ``.csv.gz`` file (its header already checked by ``read_header``).
        role: ``train``, ``test`` or ``labelled``, for messages.
        features: the feature columns, in the order wanted.
        others: columns to return as they are (id, target).

    Returns:
        (float32 matrix of the features, pandas DataFrame of ``others``).

    Raises:
        DataError: a value that is not a number, a missing or non-finite feature value,
            a ragged row, no data rows; with the column and line.
    """
    path = Path(path)
    with _utf8_errors(path):
        got = _read_fast(path, features, others)
        if got is not None:
            return got
        df = read_table(path, role)
        return check_features(df, path, features), df[list(others)]


def read_table(path, role="train", usecols=None):
    """Read a CSV into a DataFrame, checking its layout.

    This is the careful path (``read_columns`` is the fast one for feature matrices): its
    errors say which line is wrong.

    Args:
        path: ``.csv`` or ``.csv.gz`` file.
        role: ``train`` or ``test``, for messages.
        usecols: read only these columns (all by default).

    Returns:
        A pandas DataFrame.
    """
    import pandas as pd

    path = Path(path)
    cols = read_header(path, role)
    kwargs = {}
    try:
        import pyarrow  # noqa: F401  -- multi-threaded parser: several times faster

        kwargs["engine"] = "pyarrow"
    except ImportError:
        pass
    try:
        df = _read_csv_arrow(path, usecols) if kwargs else pd.read_csv(path, usecols=usecols)
    except Exception as e:  # pandas and pyarrow raise many types for malformed files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"[Rr]ow #?(\d+)|line (\d+)", msg)
        if kwargs and not m:
            # The C parser reports the line number of a ragged row; retry for a better message.
            try:
                df = pd.read_csv(path, usecols=usecols)
            except Exception as e2:
                msg = str(e2).strip().splitlines()[0]
            else:
                return df
        raise DataError(f"{path}: cannot parse as CSV: {msg}; check that every row has "
                        f"{len(cols)} comma-separated values") from None
    if len(df) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return df


def check_features(df, path, features: list[str]):
    """Return the feature block as float32, checking it is numeric, present and finite."""
    import pandas as pd

    for col in features:
        s = df[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & s.notna()
            if bad.any():
                i = _first_bad_row(bad.to_numpy())
                raise DataError(f"{path}: column '{col}', line {i + 2}: non-numeric value "
                                f"{str(s.iloc[i])[:30]!r}; feature columns must be numbers")
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 1e39 -> inf in float32: reported below
        x = df[features].to_numpy(dtype=np.float32, na_value=np.nan)
    finite = np.isfinite(x)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raw = df[features[c]].iloc[r]
        kind = ("missing value" if np.isnan(x[r, c]) else
                "infinite value" if not np.isfinite(float(raw)) else
                f"value {raw!r} too large for float32 (|x| > 3.4e38)")
        raise DataError(f"{path}: column '{features[c]}', line {r + 2}: {kind}; fill or drop "
                        "such rows before training")
    return x


def encode_target(df, path, target: str):
    """Return (class names in natural order, integer labels)."""
    s = df[target]
    if s.isna().any():
        i = _first_bad_row(s.isna().to_numpy())
        raise DataError(f"{path}: column '{target}', line {i + 2}: missing class label")
    s = s.astype(str)
    classes = sorted(s.unique().tolist(), key=natural_key)
    if len(classes) < 2:
        raise DataError(f"{path}: column '{target}' has only one class ({classes[0]!r}); "
                        "classification needs at least two")
    import pandas as pd

    y = pd.Categorical(s, categories=classes).codes.astype(np.int32)  # hashed, not a Python map
    return classes, y


def feature_columns(columns, data_cfg, path):
    """Work out the feature columns from the header and the config."""
    idc, tgt = data_cfg.id_column, data_cfg.target_column
    if data_cfg.feature_columns is not None:
        missing = [c for c in data_cfg.feature_columns if c not in columns]
        if missing:
            raise DataError(f"{path}: data.feature_columns names column(s) not in the file: "
                            f"{', '.join(missing[:10])}")
        return list(data_cfg.feature_columns)
    feats = [c for c in columns if c not in (idc, tgt)]
    if not feats:
        raise DataError(f"{path}: no feature columns besides '{idc}' and '{tgt}'")
    return feats


def data_paths(data_cfg) -> tuple[Path, Path | None]:
    """The train and test paths of a config, generating built-in synthetic data if asked."""
    if data_cfg.synthetic is None:
        return Path(data_cfg.train), (Path(data_cfg.test) if data_cfg.test else None)
    from ottotrain.config import synthetic_paths
    from ottotrain.synth import make_data

    syn = data_cfg.synthetic
    train, test = synthetic_paths(syn)
    if not train.exists() or (test is not None and not test.exists()):
        make_data(train.parent, rows=syn.rows, seed=syn.seed, test_rows=syn.test_rows)
        if test is None:
            (train.parent / "test.csv").unlink(missing_ok=True)
    return train, test


class TrainData:
    """The training table, checked: ids, features (float32), labels, class names."""

    def __init__(self, ids, x, y, classes, features, path):
        self.ids, self.x, self.y = ids, x, y
        self.classes, self.features, self.path = classes, features, str(path)


def load_train(data_cfg, path=None, nrows=None) -> TrainData:
    """Load and check the training CSV named in ``data_cfg``."""
    path = Path(path or data_paths(data_cfg)[0])
    cols = read_header(path, "train")
    for key, col in (("id_column", data_cfg.id_column), ("target_column", data_cfg.target_column)):
        if col not in cols:
            from ottotrain.errors import did_you_mean

            raise DataError(f"{path}: no column '{col}' (data.{key}){did_you_mean(col, cols)}; "
                            f"the header has: {', '.join(cols[:6])}{', ...' if len(cols) > 6 else ''}")
    feats = feature_columns(cols, data_cfg, path)
    idc, tgt = data_cfg.id_column, data_cfg.target_column
    x, rest = read_columns(path, "train", feats, (idc, tgt))
    if nrows is not None and len(rest) > nrows:
        rest = rest.sample(n=nrows, random_state=0).sort_index()
        x = x[rest.index.to_numpy()]
    with _utf8_errors(path):
        classes, y = encode_target(rest, path, tgt)
    ids = rest[idc].to_numpy()
    del rest
    _release_arrow_memory()
    return TrainData(ids, x, y, classes, feats, path)


def _release_arrow_memory():
    """Hand the memory pyarrow's allocator keeps for reuse back to the system.

    After parsing a big CSV and dropping the table, the pool holds on to several times the
    float32 features (3.8 GiB for 5M Otto-shaped rows) that training never reuses.
    """
    with contextlib.suppress(Exception):  # pyarrow is optional
        import pyarrow as pa

        pa.default_memory_pool().release_unused()


def column_mismatch(path, cols, features, other=()) -> str | None:
    """Describe how a file's columns differ from the features seen at fit (None if they don't).

    ``other`` lists the non-feature columns the file may also have (id, target).
    """
    missing = [c for c in features if c not in cols]
    unexpected = [c for c in cols if c not in features and c not in other]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} feature column(s) seen at fit: {', '.join(missing[:10])}"
                     + (", ..." if len(missing) > 10 else ""))
    if unexpected:
        parts.append(f"unexpected column(s): {', '.join(unexpected[:10])}"
                     + (", ..." if len(unexpected) > 10 else ""))
    return f"{path}: columns differ from the training data: {'; '.join(parts)}" if parts else None


def load_test(path, id_column, target_column, features, nrows=None):
    """Load a test CSV and check its columns against those seen at fit.

    Returns:
        (ids, float32 feature matrix) in file order.
    """
    path = Path(path)
    cols = read_header(path, "test")
    if target_column in cols:
        raise DataError(f"{path}: has a target column '{target_column}'; a test file holds "
                        "only the id and the features (is this the training file?)")
    if id_column not in cols:
        raise DataError(f"{path}: no id column '{id_column}'; the submission needs it")
    problem = column_mismatch(path, cols, features, (id_column,))
    if problem:
        raise DataError(problem)
    x, rest = read_columns(path, "test", features, (id_column,))
    if nrows is not None:
        x, rest = x[:nrows], rest.iloc[:nrows]
    ids = rest[id_column]
    with _utf8_errors(path):
        dup = ids.duplicated()
    if dup.any():
        i = _first_bad_row(dup.to_numpy())
        raise DataError(f"{path}: column '{id_column}', line {i + 2}: duplicated id "
                        f"{ids.iloc[i]}; each test row needs a unique id")
    ids = ids.to_numpy()
    del rest
    _release_arrow_memory()
    return ids, x


def train_val_split(y, fraction, seed, stratify=True):
    """Indices of a (stratified) train/validation split, deterministic for a seed.

    Unstratified, this is exactly scikit-learn's ``train_test_split(test_size=n,
    random_state=seed)`` (the tutorial's split); stratified, each class gives its
    share of validation rows (largest remainders). Plain numpy: importing
    scikit-learn's model_selection costs more than half a second per run.
    """
    n = len(y)
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"data.validation_split={fraction} leaves {n_val} validation rows out of "
                        f"{n}; use more rows or another split")
    rng = np.random.RandomState(seed)
    counts = np.bincount(y)
    present = counts[counts > 0]
    if not stratify or present.min() < 2 or n_val < len(present):
        # A class with one row, or fewer validation rows than classes: no stratification.
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    quota = counts * n_val / n
    take = np.floor(quota).astype(int)
    extra = n_val - take.sum()
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:extra]] += 1
    take = np.minimum(take, np.maximum(counts - 1, 0))  # keep every class in training
    val = [rng.permutation(np.flatnonzero(y == k))[:take[k]] for k in range(len(counts))]
    va = np.sort(np.concatenate(val))
    mask = np.ones(n, dtype=bool)
    mask[va] = False
    return np.flatnonzero(mask), va


# --------------------------------------------------------------------------------------
# Preprocessing, fitted on training rows only and saved as JSON.


def signed_log1p(x):
    """log1p(x), mirrored for negative values; counts (all >= 0) skip the negative half."""
    if x.min(initial=0) >= 0:
        return np.log1p(x)
    return np.log1p(np.maximum(x, 0)) - np.log1p(np.maximum(-x, 0))


class Preprocessor:
    """Transform then scale features; every learned number is kept in ``state``.

    Transforms: ``none``, ``log1p``, ``sqrt``, ``anscombe`` (sqrt(x + 3/8)), ``power``
    (|x|^p), ``quantile`` (rank-gauss: empirical CDF mapped to a normal). Optional
    TF-IDF features are appended, then nearest-neighbour distances per class
    (``data.knn``, see ``ottotrain.knn``; the training rows are kept in a sidecar ``.npz``).
    Scaling: ``none``, ``standard``, ``minmax``, ``robust``.
    """

    N_QUANTILES = 200
    BLOCK = 1 << 16  # rows per block when computing scaling statistics

    def __init__(self, state: dict, folder=None):
        self.state = state
        self.folder = Path(folder) if folder is not None else None  # where the sidecar is
        self._ref = None  # knn.Reference, loaded on first use
        self._ref_order = None  # at fit: the reference row of each fitted row

    @classmethod
    def fit(cls, x, data_cfg, features, classes, id_column, target_column, y=None):
        """Learn the transform and scaling from the training rows ``x`` (float32).

        ``y`` (integer labels of those rows) is needed only for ``data.knn``.
        """
        state = {
            "format": PREPROCESS_FORMAT,
            "features": list(features),
            "classes": list(classes),
            "id_column": id_column,
            "target_column": target_column,
            "transform": data_cfg.transform,
            "power": data_cfg.power,
            "tfidf": data_cfg.tfidf,
            "scaling": data_cfg.scaling,
        }
        pre = cls(state)
        knn_tr = None
        if data_cfg.knn is not None:
            from ottotrain import knn

            counts = np.bincount(y, minlength=len(classes))
            if counts.min() < 2:
                c = int(counts.argmin())
                raise DataError(f"data.knn: class {classes[c]!r} has {counts[c]} training row(s); "
                                "nearest-neighbour features need at least 2 of every class "
                                "(remove data.knn or add rows)")
            pre._ref, order = knn.Reference.fit(x, y, len(classes))
            pre._ref_order = np.empty_like(order)
            pre._ref_order[order] = np.arange(len(order))
            state["format"] = 3
            state["knn"] = {"k": list(data_cfg.knn.k), "reference": f"knn-{pre._ref.digest}.npz"}
            knn_tr = pre._knn(x, fitted_rows=True)
        if data_cfg.transform == "quantile":
            qs = np.linspace(0, 1, cls.N_QUANTILES)
            state["quantiles"] = np.quantile(x, qs, axis=0).T.tolist()
        if data_cfg.tfidf:
            df_count = (x > 0).sum(axis=0)
            state["idf"] = (np.log((1 + len(x)) / (1 + df_count)) + 1).tolist()
        # Statistics of the transformed rows, a block of rows at a time: the whole transformed
        # matrix, and np.std's float64 copy of it, would cost 12 bytes per value on top.
        def part(i, n):  # rows i..i+n, transformed; training rows' KNN features leave themselves out
            return pre._transform(x[i:i + n], None if knn_tr is None else knn_tr[i:i + n])

        blocks = lambda: (part(i, cls.BLOCK) for i in range(0, len(x), cls.BLOCK))
        if data_cfg.scaling == "standard":
            if len(x) <= cls.BLOCK:  # one block: exactly numpy's mean and (two-pass) std
                z = part(0, len(x))
                mean, std = z.mean(axis=0, dtype=np.float64), z.std(axis=0, dtype=np.float64)
            else:  # the same two passes, block by block, summed in float64
                mean = sum(z.sum(axis=0, dtype=np.float64) for z in blocks()) / len(x)
                ss = sum(np.einsum("ij,ij->j", d, d) for d in (z - mean for z in blocks()))
                std = np.sqrt(ss / len(x))
            state["center"], state["scale"] = mean.tolist(), np.where(std > 0, std, 1.0).tolist()
        elif data_cfg.scaling == "minmax":
            lo = np.min([z.min(axis=0) for z in blocks()], axis=0)
            hi = np.max([z.max(axis=0) for z in blocks()], axis=0)
            state["center"], state["scale"] = lo.tolist(), np.where(hi > lo, hi - lo, 1.0).tolist()
        elif data_cfg.scaling == "robust":
            z = part(0, len(x))
            q1, med, q3 = np.percentile(z, [25, 50, 75], axis=0)
            iqr = q3 - q1
            state["center"], state["scale"] = med.tolist(), np.where(iqr > 0, iqr, 1.0).tolist()
        return pre

    @property
    def n_outputs(self) -> int:
        n = len(self.state["features"]) * (2 if self.state["tfidf"] else 1)
        if self.state.get("knn"):
            n += len(self.state["classes"]) * len(self.state["knn"]["k"])
        return n

    def _knn(self, x, fitted_rows=False):
        """The KNN features of raw rows ``x``; ``fitted_rows``: x is the rows given to fit."""
        from ottotrain import knn
        from ottotrain.errors import RunError

        if self._ref is None:
            name = str(self.state["knn"].get("reference"))
            path = (self.folder or Path(".")) / name
            if not re.fullmatch(r"knn-[0-9a-f]{16}\.npz", name):  # a plain name, never a path
                raise RunError(f"{path}: not a KNN reference file name; the run directory is damaged")
            try:
                self._ref = knn.Reference.load(path)
            except (OSError, ValueError, KeyError) as e:
                raise RunError(f"{path}: cannot read the KNN reference rows ({e}); the run "
                               "directory is damaged") from None
            if f"knn-{self._ref.digest}.npz" != path.name:
                raise RunError(f"{path}: contents do not match its name; the run directory is damaged")
        if fitted_rows and (self._ref_order is None or len(x) != len(self._ref_order)):
            raise ValueError("fitted_rows=True needs the very rows given to Preprocessor.fit")
        return knn.features(self._ref, x, self.state["knn"]["k"],
                            self._ref_order if fitted_rows else None)

    def save(self, path):
        """Write the JSON to ``path`` (atomically), the KNN reference rows beside it first."""
        from ottotrain.io import atomic_path, write_text

        path = Path(path)
        if self.state.get("knn"):
            side = path.parent / self.state["knn"]["reference"]
            if not side.exists():  # content-addressed: cv members of one fold share it
                with atomic_path(side) as tmp:
                    self._ref.save(tmp)
        write_text(path, self.to_json())

    def _transform(self, x, knn_features=None):
        s = self.state
        t = s["transform"]
        if t == "log1p":
            z = signed_log1p(x)
        elif t == "sqrt":
            z = np.sign(x) * np.sqrt(np.abs(x))
        elif t == "anscombe" and s["format"] == 1:
            z = np.sign(x) * np.sqrt(np.abs(x) + 0.375)  # format 1's formula (0 -> 0)
        elif t == "anscombe":
            # sqrt(x + 3/8) for counts; a negative value is mirrored (-sqrt(-x + 3/8)).
            z = np.sqrt(np.abs(x) + 0.375)
            if x.min(initial=0) < 0:
                z = np.where(x < 0, -z, z)
        elif t == "power":
            z = np.sign(x) * np.abs(x) ** s["power"]
        elif t == "quantile":
            from scipy.special import ndtri

            qs = np.linspace(0, 1, self.N_QUANTILES)
            q = np.asarray(s["quantiles"])
            z = np.empty_like(x, dtype=np.float32)
            for j in range(x.shape[1]):
                # Average of left and right interpolation handles the many tied zeros.
                lo = np.interp(x[:, j], q[j], qs)
                hi = -np.interp(-x[:, j], -q[j][::-1], -qs[::-1])
                z[:, j] = ndtri(np.clip((lo + hi) / 2, 1e-3, 1 - 1e-3))
        else:
            z = x
        z = np.asarray(z, dtype=np.float32)
        if s["tfidf"]:
            counts = np.maximum(x, 0)
            tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
            z = np.hstack([z, (tf * np.asarray(s["idf"], dtype=np.float32)).astype(np.float32)])
        if s.get("knn"):
            z = np.hstack([z, self._knn(x) if knn_features is None else knn_features])
        return z

    def transform(self, x, overwrite=False, fitted_rows=False):
        """Apply the fitted transform and scaling; returns float32.

        ``x`` is never modified unless ``overwrite`` is true, which lets a caller that owns
        a float32 copy have it scaled in place: one copy of the data less, same values.
        ``fitted_rows``: ``x`` is exactly the rows given to ``fit``, in order, so each
        row's nearest-neighbour features leave the row itself out (only matters with KNN).
        """
        z = self._transform(x, self._knn(x, True) if fitted_rows and self.state.get("knn") else None)
        # transform 'none' on float32 input returns x itself
        owned = overwrite or not np.shares_memory(z, x)
        if self.state["scaling"] != "none":
            # Subtracting into a new array when z is x: never modify x, and no extra copy pass.
            z = np.subtract(z, np.asarray(self.state["center"], dtype=np.float32),
                            out=z if owned else None)
            z /= np.asarray(self.state["scale"], dtype=np.float32)
        elif not owned:
            z = z.copy()
        return z

    def to_json(self) -> str:
        return json.dumps(self.state, indent=1)

    @classmethod
    def from_json(cls, text: str, source="preprocess.json"):
        """Read the state; a KNN sidecar is looked for in ``source``'s folder."""
        from ottotrain.errors import RunError

        try:
            state = json.loads(text)
        except json.JSONDecodeError as e:
            raise RunError(f"{source}: not valid JSON ({e}); the run directory is damaged") from None
        if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
            raise RunError(f"{source}: unknown preprocessing format; the run was made by an "
                           "incompatible ottotrain version")
        return cls(state, Path(source).parent)


def log_loss(y, proba, eps=1e-15) -> float:
    """Kaggle's multi-class log loss: clip to [eps, 1-eps], renormalise each row."""
    p = np.clip(np.asarray(proba, dtype=np.float64), eps, 1 - eps)
    p /= p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))
