"""Tables with text columns: which features are numbers and which are categories, read as one matrix.

The all-numeric file (Otto's kind) never comes here: ``csv.read_columns`` reads it on its fast,
cached path. A file with a text column, a declared category or extra missing-value markers is
read here, by Arrow, into the same float32 matrix: a numeric column holds its numbers, a
categorical column the position of each row's value in the column's sorted training values
(NaN: missing; -1: a value the training file did not have). The Preprocessor turns those
codes into one-hot columns or embedding indices (``features.categories``).

Types are decided once, at fit, from the training file and recorded in the run:

- a declared type (``data.columns``) wins;
- numbers are numeric, text and booleans categorical;
- a text column of numbers whose other cells are punctuation only (``?``, ``-``) is numeric,
  those cells read as missing (said in one warning line);
- a text column that is mostly numbers with a few words in it is an error: a typo or a
  category, the user decides;
- a categorical column with a different value on (nearly) every row, such as a name or a
  free-text note, is dropped with a warning: a model can learn nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ottotrain.data.columnar import columnar_format, read_arrow, row_place
from ottotrain.data.csv import NA_VALUES, _checked_matrix, check_features, read_table
from ottotrain.errors import DataError

NUMERIC, CATEGORICAL, DROP = "numeric", "categorical", "drop"
# A categorical column with at least this share of distinct values among its non-missing
# cells, and at least UNIQUE_MIN of them, is an identifier or free text: dropped.
UNIQUE_SHARE = 0.9
UNIQUE_MIN = 20
# A text column with at least this share of numbers is a numeric column with bad cells.
MOSTLY_NUMBERS = 0.9
_NUMBER = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)\s*$"
_PUNCTUATION = r"^[^0-9A-Za-z]+$"
UNIQUE_REASON = "text with a different value on nearly every row (an id or free text?)"


@dataclass
class ColumnTypes:
    """What fit decided about the training file's feature columns (recorded in the run)."""

    numeric: list[str] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> sorted training values
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why
    na_tokens: dict[str, list[str]] = field(default_factory=dict)  # numeric column -> cells read as missing

    @property
    def plain(self) -> bool:
        """Numbers only, read the standard way: the fast path can read such a file."""
        return not self.categorical and not self.na_tokens


@dataclass
class Typed:
    x: np.ndarray  # float32 features in file order: numbers, and category codes (see module doc)
    rest: pd.DataFrame  # the other columns asked for (id, target)
    features: list[str]  # the feature columns kept, in file order
    types: ColumnTypes
    notes: list[str]  # warning lines: columns dropped, cells read as missing


def _cells(values, n=3) -> str:
    return ", ".join(repr(v) for v in values[:n]) + (", ..." if len(values) > n else "")


def _read(path: Path, features, others, known: dict[str, str], na_values, infer=False) -> pa.Table:
    """The columns as an Arrow table: known numeric columns as float32, other features as text
    (``infer``: as Arrow's type inference reads them, text where it fails)."""
    fmt = columnar_format(path)
    if fmt is not None:
        return read_arrow(path, fmt, [*others, *features])
    text = pa.string()
    types = {f: pa.float32() if known.get(f) == NUMERIC else text for f in features}
    if infer:  # numbers come out as numbers: no text to parse again (the common case)
        try:
            table = _read_csv(
                path, [*others, *features], {f: t for f, t in types.items() if f in known}, na_values
            )
        except Exception:  # a later block disagrees with the first one's types: read as text
            pass
        else:
            # Booleans, dates, times: their categories are the cells' text, as a test file's
            # are read (Arrow would write True as "true").
            odd = [f for f in features if not _plain_type(table.column(f).type)]
            if not odd:
                return table
            again = _read_csv(path, odd, dict.fromkeys(odd, text), na_values)
            for f in odd:
                table = table.set_column(table.schema.get_field_index(f), f, again.column(f))
            return table
    try:
        return _read_csv(path, [*others, *features], types, na_values)
    except Exception:  # a malformed row, or text in a numeric column: pandas says which line
        df = read_table(path, "data", usecols=[*others, *features], na_values=na_values)
        for f in features:
            if df[f].dtype == object:  # mixed cells (numbers and text): all text, checked below
                df[f] = df[f].where(df[f].isna(), df[f].astype(str))
        return pa.Table.from_pandas(df, preserve_index=False)


def _read_csv(path: Path, columns, types: dict, na_values) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        null_values=[*NA_VALUES, *na_values],
        strings_can_be_null=True,
    )
    return pacsv.read_csv(str(path), convert_options=convert)


def _plain_type(t) -> bool:
    return _is_number_type(t) or pa.types.is_null(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number_type(t) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as strings, an empty cell missing."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)


def _detect(path, name: str, col: pa.ChunkedArray) -> tuple[str, list[str]]:
    """(numeric or categorical, the punctuation cells of a numeric text column)."""
    if _is_number_type(col.type) or pa.types.is_null(col.type):
        return NUMERIC, []  # (a column with no value at all: filled like any empty number)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return CATEGORICAL, []  # booleans, dates, ...: their values are the categories
    col = _as_text(col)
    filled = col.drop_null()
    if len(filled) == 0:
        return NUMERIC, []  # all missing: nothing to categorize (filled like any empty column)
    head = filled.slice(0, 2000)
    if (pc.sum(pc.match_substring_regex(head, _NUMBER, ignore_case=True)).as_py() or 0) < len(head) / 2:
        return CATEGORICAL, []  # mostly text from the start: a category (no pass over every cell)
    is_num = pc.match_substring_regex(filled, _NUMBER, ignore_case=True)
    n_num = pc.sum(is_num).as_py() or 0
    if n_num == len(filled):
        return NUMERIC, []
    other = pc.unique(pc.filter(filled, pc.invert(is_num)))
    punct = pc.match_substring_regex(other, _PUNCTUATION)
    if n_num and pc.all(punct).as_py() and len(other) <= 5:
        return NUMERIC, sorted(other.to_pylist())
    if n_num >= MOSTLY_NUMBERS * len(filled):
        words = pc.invert(pc.match_substring_regex(col, _NUMBER, ignore_case=True)).fill_null(False)
        i = int(np.flatnonzero(words.to_numpy(zero_copy_only=False))[0])
        value = str(col[i].as_py())[:30]
        raise DataError(
            f"{path}: column '{name}', {row_place(path, i)}: non-numeric value {value!r} in a "
            f"column of numbers ({n_num:,} of {len(filled):,} cells); fix the value, list it in "
            f"data.na_values if it means missing, or declare data.columns: {{{name}: categorical}}"
        )
    return CATEGORICAL, []


def _numbers(path, name: str, col: pa.ChunkedArray, tokens) -> pa.ChunkedArray:
    """A numeric column as float32 (its punctuation cells missing); an error names a bad cell."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return col
    if pa.types.is_decimal(col.type):
        return col.cast(pa.float64())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = col.cast(pa.string())
    if tokens:
        col = pc.if_else(pc.is_in(col, value_set=pa.array(tokens, col.type)), pa.scalar(None, col.type), col)
    trimmed = pc.utf8_trim_whitespace(col)
    try:
        return trimmed.cast(pa.float64())  # float32 comes later: 1e39 is "too large", not "inf"
    except pa.ArrowInvalid:
        bad = pc.invert(pc.match_substring_regex(trimmed, _NUMBER, ignore_case=True)).fill_null(False)
        i = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{path}: column '{name}', {row_place(path, i)}: non-numeric value {str(col[i].as_py())[:30]!r}; "
            "this column was numbers at fit (fix the value, or empty the cell: missing values are filled)"
        ) from None


def encode(col: pa.ChunkedArray, values: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """(float32 codes: position in ``values``, NaN missing, -1 not in ``values``; ``values``).

    ``values`` None: the column's own sorted distinct values (the training file).
    """
    col = _as_text(col)
    if values is None:
        values = sorted(pc.unique(col.drop_null()).to_pylist())
    idx = pc.index_in(col, value_set=pa.array(values, pa.string()))
    codes = idx.to_numpy(zero_copy_only=False).astype(np.float32)  # null -> NaN
    unseen = np.isnan(codes) & col.is_valid().to_numpy(zero_copy_only=False)
    codes[unseen] = -1
    return codes, values


def _unique(codes: np.ndarray, values: list[str]) -> bool:
    n = int((~np.isnan(codes)).sum())
    return n >= UNIQUE_MIN and len(values) >= UNIQUE_SHARE * n


def read_typed(
    path, features, others, types: ColumnTypes | None, declared=None, na_values=(), allow_missing=True
):
    """Read a table's features into one float32 matrix, typing them first if ``types`` is None.

    Args:
        path: a CSV (plain or gzip), Parquet or Arrow IPC file, its header checked.
        features: the feature columns to read (dropped ones already left out).
        others: columns returned as they are (id, target).
        types: what fit decided (test and labelled files), or None to decide it now from this
            file (the training file), honouring ``declared`` (data.columns).
        na_values: more cell values that mean missing (data.na_values).
        allow_missing: a missing number is NaN, not an error (data.missing).

    Raises:
        DataError: a malformed file, a bad number, a missing number when not allowed; with
            the column and line (or row).
    """
    path = Path(path)
    declared = dict(declared or {})
    # Columns with punctuation cells are read as text, then cleaned (see _numbers).
    known = (
        declared
        if types is None
        else dict.fromkeys(types.numeric, NUMERIC) | dict.fromkeys(types.na_tokens, CATEGORICAL)
    )
    table = _read(path, features, others, known, na_values, infer=types is None)
    if table.num_rows == 0:
        raise DataError(f"{path}: has a header but no data rows")
    fit = types is None
    if fit:
        types = _decide(path, features, table, declared)
    cols, kept = _encoded(path, features, table, types, declared, fit)
    x = _matrix(path, table.num_rows, cols, kept, types, allow_missing)
    notes = []
    if fit:
        types.numeric = [f for f in kept if f not in types.categorical]
        types.categorical = {f: types.categorical[f] for f in kept if f in types.categorical}
        notes = _notes(path, types)
    rest = table.select(list(others)).to_pandas()
    return Typed(x, rest, kept, types, notes)


def _decide(path, features, table, declared) -> ColumnTypes:
    """Each feature's type: declared (data.columns), or detected from the training file."""
    types = ColumnTypes()
    for f in features:
        kind = declared.get(f)
        if kind is None:
            kind, tokens = _detect(path, f, table.column(f))
            if tokens:
                types.na_tokens[f] = tokens
        if kind == NUMERIC:
            types.numeric.append(f)
        else:
            types.categorical[f] = None
    return types


def _encoded(path, features, table, types: ColumnTypes, declared, fit: bool):
    """Each kept column as numbers (categories as codes, learnt when ``fit``); the kept names.
    At fit, a categorical column of unique values is dropped (noted in ``types.dropped``)."""
    kept, cols = [], {}
    for f in features:
        if f in types.categorical:
            codes, values = encode(table.column(f), types.categorical[f])
            if fit and f not in declared and _unique(codes, values):
                types.dropped[f] = UNIQUE_REASON
                continue
            if fit:
                types.categorical[f] = values
            cols[f] = codes
        else:
            cols[f] = _numbers(path, f, table.column(f), types.na_tokens.get(f))
        kept.append(f)
    return cols, kept


def _matrix(path, n_rows: int, cols, kept, types: ColumnTypes, allow_missing: bool) -> np.ndarray:
    """The kept columns in one float32 matrix; a missing or infinite number not allowed is a
    DataError naming its column and row."""
    numeric = [f for f in kept if f not in types.categorical]
    num = pa.table([cols[f] for f in numeric], names=numeric) if numeric else None
    xn = _checked_matrix(num, numeric, allow_missing) if num is not None else None
    if num is not None and xn is None:  # a missing or infinite number: say where
        xn = check_features(num.to_pandas(), path, numeric, allow_missing)
    x = np.empty((n_rows, len(kept)), dtype=np.float32)
    where = {f: i for i, f in enumerate(numeric)}
    for j, f in enumerate(kept):
        x[:, j] = cols[f] if f in types.categorical else xn[:, where[f]]
    return x


def _notes(path, types: ColumnTypes) -> list[str]:
    """What typing the training file decided that a user should hear of."""
    notes = [
        f"{path}: column '{f}' dropped: {why}; declare data.columns: {{{f}: categorical}} to keep it"
        for f, why in types.dropped.items()
    ]
    for f, tokens in types.na_tokens.items():
        notes.append(
            f"{path}: column '{f}': numbers with cells {_cells(tokens)}, read as missing values "
            f"(declare data.columns: {{{f}: categorical}} to keep them as categories)"
        )
    return notes
