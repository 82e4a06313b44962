"""Reading CSVs and checking them the way a careful user would.

File present and readable, a real comma-separated header, no duplicated columns,
every feature numeric and finite, no missing values. Errors name the file, the
column and the line number (the header is line 1). ``read_columns`` is the fast
path (Arrow parses the features straight into one float32 matrix, cached); anything
it cannot vouch for goes down the careful path (``read_table`` + ``check_features``),
whose errors say which line is wrong.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ottotrain.config import path_origin
from ottotrain.data.cache import cache_load, cache_store, csv_cache_path
from ottotrain.data.columnar import columnar_format, read_arrow, row_place, schema_names
from ottotrain.errors import DataError, first_line


def _open_text_head(path: Path, nbytes=65536) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read(nbytes)


def _where_from(path: Path) -> str:
    """What a missing file's path was relative to: its config's folder, or the current directory."""
    if origin := path_origin(path):
        return origin
    if not path.is_absolute():
        return f"relative to the current directory {Path.cwd()}"
    return "check the path"


def read_header(path, role="data") -> list[str]:
    """Return the column names of a CSV, checking that it looks like one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {role} file not found ({_where_from(path)})")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    fmt = columnar_format(path)
    if fmt is not None:
        return _checked_names(path, schema_names(path, fmt))
    try:
        head = _open_text_head(path)
    except (OSError, EOFError) as e:
        raise DataError(
            f"{path}: cannot read the file ({e}); is it a valid "
            f"{'gzip' if path.suffix == '.gz' else 'CSV'} file?"
        ) from None
    if not head.strip():
        raise DataError(f"{path}: the file is empty; expected a CSV with a header row")
    if b"\x00" in head or head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04":
        hint = (
            "it is gzip-compressed: name it .csv.gz"
            if head[:2] == b"\x1f\x8b"
            else "a zip or Excel file? export it as CSV"
            if head[:4] == b"PK\x03\x04"
            else "save it as comma-separated text"
        )
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
                raise DataError(
                    f"{path}: line 1 is separated by {label}, not commas; "
                    "save the file as comma-separated CSV"
                )
        raise DataError(
            f"{path}: line 1 has a single column {cols[0][:40]!r}; expected a "
            "comma-separated header such as id,feat_1,...,target"
        )
    return _checked_names(path, cols)


def _checked_names(path, cols: list[str]) -> list[str]:
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(
            f"{path}: duplicated column name(s) {', '.join(dup)} in the header; column names must be unique"
        )
    empty = [i + 1 for i, c in enumerate(cols) if not c]
    if empty:
        raise DataError(f"{path}: header column {empty[0]} has no name; every column needs one")
    return cols


@contextlib.contextmanager
def utf8_errors(path):
    """Undecodable bytes beyond the header surface late, in pandas; report them as data errors."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a value); save the CSV as UTF-8"
        ) from None


def first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


# pandas' default missing-value markers, so that the fast path reads what pd.read_csv reads.
NA_VALUES = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]


def _read_csv_arrow(path: Path, usecols=None, na_values=()):
    """``pd.read_csv(path, engine="pyarrow")``, minus its slow part.

    Given a path, pandas opens a ``.gz`` file in Python and hands pyarrow a Python
    file object, so decompression runs under the GIL and feeds the parser slowly
    (about 2x slower than pandas' own C parser on the Otto files). Handing pyarrow
    the path lets it decompress natively and parse on all cores. Same values,
    column names and missing-value markers as pandas; any error goes to the caller,
    which retries with pandas for a message with a line number.
    """
    convert = pacsv.ConvertOptions(
        null_values=[*NA_VALUES, *na_values],
        strings_can_be_null=True,
        include_columns=list(usecols) if usecols is not None else None,
    )
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
# otherwise pile up gigabytes that are never read again). The cache itself is cache.py.


def _to_matrix(table, features) -> np.ndarray:
    """The float32 feature columns of an Arrow table as one C-ordered matrix.

    Arrow lays each record batch (a few thousand rows) out row-major in C++; a Python loop
    over columns, or pandas, was 2-6x slower here.
    """
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    row = 0
    for batch in table.select(features).to_batches():
        n = batch.num_rows
        x[row : row + n] = np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
        row += n
    return x


def _checked_matrix(table, features, allow_missing=False) -> np.ndarray | None:
    """The features as a float32 matrix (a missing value NaN, if allowed), or None unless
    every value is a finite number or allowed missing."""
    if table.num_rows == 0:
        return None
    cols = []
    for f in features:
        col = table.column(f)
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        if (col.null_count and not allow_missing) or not numeric:
            return None  # the careful path says which row
        cols.append(col if col.type == pa.float32() else col.cast(pa.float32(), safe=False))
    x = _to_matrix(pa.table(cols, names=list(features)), features)
    return x if _all_finite(x, allow_missing) else None


def _all_finite(x, allow_missing: bool) -> bool:
    """No infinite value, and no NaN unless missing values are allowed (then NaN is one)."""
    if not allow_missing:
        return bool(np.isfinite(x).all())
    return not np.isinf(x).any()


_CACHED_X = "__features__"  # the cache keeps the checked matrix row-major: a hit is one copy


def _read_fast(path: Path, features, others, allow_missing=False):
    """(x, DataFrame of ``others``) by the fast path, or None where the careful path must look."""
    columns = [*others, *features]
    cache = csv_cache_path(path, columns)
    hit = cache_load(cache, [*others, _CACHED_X]) if cache is not None and cache.exists() else None
    if hit is not None:
        flat = hit.column(_CACHED_X)
        flat = flat.chunk(0) if flat.num_chunks == 1 else flat.combine_chunks()
        x = flat.flatten().to_numpy().reshape(len(flat), len(features)).copy()  # off the mmap
        if not allow_missing and np.isnan(x.sum(dtype=np.float64)):
            return None  # cached by a run that allowed missing values: the careful path says where
        return x, hit.select(list(others)).to_pandas()
    convert = pacsv.ConvertOptions(
        column_types={f: pa.float32() for f in features},
        include_columns=columns,
        null_values=NA_VALUES,
        strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(str(path), convert_options=convert)
    except Exception:  # malformed, non-numeric, a header Arrow reads otherwise, ...
        return None
    x = _checked_matrix(table, features, allow_missing)
    if x is None:
        return None
    rest = table.select(list(others))
    del table
    if cache is not None:
        cache_store(
            cache,
            rest.append_column(
                _CACHED_X, pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), len(features))
            ),
        )
    return x, rest.to_pandas()


def read_columns(path, role, features, others=(), allow_missing=False, careful=True):
    """Read a CSV's feature columns as one checked float32 matrix, plus a few other columns.

    Args:
        path: ``.csv`` or ``.csv.gz`` file (its header already checked by ``read_header``).
        role: ``train``, ``test`` or ``labelled``, for messages.
        features: the feature columns, in the order wanted.
        others: columns to return as they are (id, target).
        allow_missing: a missing feature value is NaN rather than an error (data.missing).
        careful: where the fast path cannot vouch for the file, read it carefully (and say
            which value is wrong); if false, return None instead (a file with text columns
            is ``typed.read_typed``'s).

    Returns:
        (float32 matrix of the features, pandas DataFrame of ``others``), or None.

    Raises:
        DataError: a value that is not a number, a missing or non-finite feature value,
            a ragged row, no data rows; with the column and line.
    """
    path = Path(path)
    fmt = columnar_format(path)
    if fmt is not None:
        table = read_arrow(path, fmt, [*others, *features])
        got = _checked_matrix(table, features, allow_missing)
        if got is not None:
            return got, table.select(list(others)).to_pandas()
        if not careful:
            return None
        df = table.to_pandas()
        return check_features(df, path, features, allow_missing), df[list(others)]
    with utf8_errors(path):
        got = _read_fast(path, features, others, allow_missing)
        if got is not None or not careful:
            return got
        df = read_table(path, role)
        return check_features(df, path, features, allow_missing), df[list(others)]


def read_table(path, role="train", usecols=None, na_values=()):
    """Read a CSV into a DataFrame, checking its layout.

    This is the careful path (``read_columns`` is the fast one for feature matrices): its
    errors say which line is wrong.

    Args:
        path: ``.csv`` or ``.csv.gz`` file.
        role: ``train`` or ``test``, for messages.
        usecols: read only these columns (all by default).
        na_values: more cell values that mean missing (data.na_values).

    Returns:
        A pandas DataFrame.
    """
    path = Path(path)
    cols = read_header(path, role)
    fmt = columnar_format(path)
    if fmt is not None:
        df = read_arrow(path, fmt, usecols).to_pandas()
        if len(df) == 0:
            raise DataError(f"{path}: has columns but no rows")
        return df
    try:
        df = _read_csv_arrow(path, usecols, na_values)
    except Exception as e:  # pandas and pyarrow raise many types for malformed files
        # A row with too few fields is what pandas would read silently, its last values
        # missing, and report later as a "missing value" in the last column: say what it is.
        ragged = ragged_row(path)
        if ragged is not None:
            line, got, want = ragged
            raise DataError(
                f"{path}: line {line} has {got} field{'s' * (got != 1)}, the header has "
                f"{want}; every row needs one value per column ("
                + (
                    "fields are missing: an empty value still needs its comma, as in 1,,3"
                    if got < want
                    else "an extra comma? quote a value that holds one"
                )
                + ")"
            ) from None
        msg = first_line(e)
        if not re.search(r"[Rr]ow #?(\d+)|line (\d+)", msg):
            # pandas' C parser says which line it stopped at; retry for a better message.
            try:
                df = pd.read_csv(path, usecols=usecols, na_values=list(na_values) or None)
            except Exception as e2:
                msg = str(e2).strip().splitlines()[0]
            else:
                return df
        raise DataError(
            f"{path}: cannot parse as CSV: {msg}; check that every row has {len(cols)} comma-separated values"
        ) from None
    if len(df) == 0:
        raise DataError(f"{path}: has a header but no data rows")
    return df


def read_sample(path, nrows: int) -> pd.DataFrame:
    """The first ``nrows`` rows, for a message that suggests a column."""
    fmt = columnar_format(path)
    if fmt is not None:
        return read_arrow(Path(path), fmt).slice(0, nrows).to_pandas()
    return pd.read_csv(path, nrows=nrows)


def ragged_row(path) -> tuple[int, int, int] | None:
    """The first row whose field count differs from the header's: (line, fields, header fields).

    Only called once a fast parser has refused the file, so its plain Python pace does not
    matter. Lines are the file's lines (the header is line 1; a quoted value over several
    lines counts them all); blank lines are skipped, as the parsers skip them.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.reader(f)
            want = None
            for row in reader:
                if not row:
                    continue
                if want is None:
                    want = len(row)
                elif len(row) != want:
                    return reader.line_num, len(row), want
    except (OSError, EOFError, csv.Error):
        return None
    return None


def check_features(df, path, features: list[str], allow_missing=False):
    """Return the feature block as float32, checking it is numeric, finite and (unless
    ``allow_missing``: then NaN) present."""
    for col in features:
        s = df[col]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & s.notna()
            if bad.any():
                i = first_bad_row(bad.to_numpy())
                raise DataError(
                    f"{path}: column '{col}', {row_place(path, i)}: non-numeric value "
                    f"{str(s.iloc[i])[:30]!r}; feature columns must be numbers"
                )
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 1e39 -> inf in float32: reported below
        x = df[features].to_numpy(dtype=np.float32, na_value=np.nan)
    finite = np.isfinite(x) | (np.isnan(x) if allow_missing else False)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raw = df[features[c]].iloc[r]
        kind = (
            "missing value"
            if np.isnan(x[r, c])
            else "infinite value"
            if not np.isfinite(float(raw))
            else f"value {raw!r} too large for float32 (|x| > 3.4e38)"
        )
        raise DataError(
            f"{path}: column '{features[c]}', {row_place(path, r)}: {kind}; "
            + (
                "fill or drop such rows before training (or train with data.missing: auto, which fills them)"
                if np.isnan(x[r, c])
                else "fill or drop such rows before training"
            )
        )
    return x


def release_arrow_memory():
    """Hand the memory pyarrow's allocator keeps for reuse back to the system.

    After parsing a big CSV and dropping the table, the pool holds on to several times the
    float32 features (3.8 GiB for 5M Otto-shaped rows) that training never reuses.
    """
    pa.default_memory_pool().release_unused()
