"""The training, test and labelled tables: columns worked out and checked, labels encoded."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ottotrain.config import synthetic_paths
from ottotrain.data.columnar import row_place
from ottotrain.data.csv import (
    first_bad_row,
    read_columns,
    read_header,
    read_sample,
    release_arrow_memory,
    utf8_errors,
)
from ottotrain.data.synth import make_data
from ottotrain.data.typed import DROP, ColumnTypes, read_typed
from ottotrain.errors import DataError, did_you_mean
from ottotrain.log import phase

# Rows read to suggest an id or target column when the configured one is not in the file.
SAMPLE_ROWS = 2000
# The id of a table without an id column (data.id_column: null): its 1-based row position.
ROW = "row"


def id_name(id_column: str | None) -> str:
    """The id column's name in what a run writes (submission, predictions, folds)."""
    return ROW if id_column is None else id_column


def _ids(rest, id_column):
    """The ids of the rows read: the id column, or each row's 1-based position in its file."""
    if id_column is None:
        return rest.index.to_numpy() + 1
    return rest[id_column].to_numpy()


def natural_key(s: str):
    """Sort key that puts Class_2 before Class_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(s))]


def missing_labels(path, target: str, missing: np.ndarray) -> DataError:
    """Rows without a class label: how many, and where the first ones are."""
    rows = np.flatnonzero(missing)
    where = ", ".join(row_place(path, int(i)) for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return DataError(
        f"{path}: column '{target}': {len(rows)} row(s) without a class label ({where}); "
        "fill them in or drop those rows"
    )


def encode_target(df, path, target: str):
    """Return (class names in natural order, integer labels)."""
    s = df[target]
    if s.isna().any():
        raise missing_labels(path, target, s.isna().to_numpy())
    s = s.astype(str)
    classes = sorted(s.unique().tolist(), key=natural_key)
    if len(classes) < 2:
        raise DataError(
            f"{path}: column '{target}' has only one class ({classes[0]!r}); "
            "classification needs at least two"
        )
    y = pd.Categorical(s, categories=classes).codes.astype(np.int32)  # hashed, not a Python map
    return classes, y


def feature_columns(columns, data_cfg, path):
    """Work out the feature columns from the header and the config."""
    idc, tgt = data_cfg.id_column, data_cfg.target_column
    if data_cfg.feature_columns is not None:
        missing = [c for c in data_cfg.feature_columns if c not in columns]
        if missing:
            raise DataError(
                f"{path}: data.feature_columns names column(s) not in the file: {', '.join(missing[:10])}"
            )
        return list(data_cfg.feature_columns)
    feats = [c for c in columns if c not in (idc, tgt)]
    if not feats:
        besides = f"'{tgt}'" if idc is None else f"'{idc}' and '{tgt}'"
        raise DataError(f"{path}: no feature columns besides {besides}")
    return feats


def data_paths(data_cfg) -> tuple[Path, Path | None]:
    """The train and test paths of a config, generating built-in synthetic data if asked."""
    if data_cfg.synthetic is None:
        return Path(data_cfg.train), (Path(data_cfg.test) if data_cfg.test else None)
    syn = data_cfg.synthetic
    train, test = synthetic_paths(syn)
    if not train.exists() or (test is not None and not test.exists()):
        make_data(train.parent, rows=syn.rows, seed=syn.seed, test_rows=syn.test_rows)
        if test is None:
            (train.parent / "test.csv").unlink(missing_ok=True)
    return train, test


@dataclass
class TrainData:
    """The training table, checked."""

    ids: np.ndarray  # the id column, in file order
    x: np.ndarray | None  # float32 features (None once a fit has preprocessed its copies)
    y: np.ndarray  # integer labels, indices into classes
    classes: list[str]  # class names in natural order (Class_2 before Class_10)
    features: list[str]  # the feature columns, in order
    path: str  # the file, for messages
    types: ColumnTypes = field(default_factory=ColumnTypes)  # numeric, categorical, dropped
    notes: list[str] = field(default_factory=list)  # warning lines: columns dropped, ...


def _names(cols, limit=8) -> str:
    more = len(cols) - limit
    return ", ".join(cols[:limit]) + (f", ... ({more} more)" if more > 0 else "")


def _looks_unique(s: pd.Series) -> bool:
    """Every row its own value, and whole numbers or text: what an id column holds."""
    kind = (
        "text"
        if not pd.api.types.is_numeric_dtype(s)
        else ("int" if pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s) else "other")
    )
    return kind != "other" and len(s) > 1 and s.notna().all() and s.is_unique


def column_candidates(sample: pd.DataFrame, key: str, other: str) -> list[str]:
    """The columns of ``sample`` that could be the id (``key="id_column"``) or the target.

    Ids: whole numbers or text, a different value on every row. Targets: text columns
    that are not ids; where there are none, whole-number columns with 2 to 100 values,
    the most even spread first (a class column's commonest value is a fraction of the rows;
    a sparse count feature's commonest value, 0, is most of them). ``other`` (the configured
    column of the other kind) is never a candidate.
    """
    cols = [c for c in sample.columns if c != other]
    if key == "id_column":
        return [c for c in cols if _looks_unique(sample[c])]
    not_ids = [c for c in cols if not _looks_unique(sample[c])]
    text = [
        c
        for c in not_ids
        if not pd.api.types.is_numeric_dtype(sample[c]) or pd.api.types.is_bool_dtype(sample[c])
    ]
    if text:
        return text
    whole = [
        c for c in not_ids if pd.api.types.is_integer_dtype(sample[c]) and 2 <= sample[c].nunique() <= 100
    ]
    return sorted(whole, key=lambda c: sample[c].value_counts(normalize=True).iloc[0])


def missing_column_error(path, cols, data_cfg, key: str) -> DataError:
    """``data.id_column`` or ``data.target_column`` names no column: which ones could it be?

    Reads the first rows to find the columns that look like ids or class labels, so that
    the user's real column is named even when the header is long.
    """
    is_id = key == "id_column"
    col, other = getattr(data_cfg, key), data_cfg.target_column if is_id else data_cfg.id_column
    what = "look like ids (a different value on every row)" if is_id else "could be the target"
    head = f"{path}: no column '{col}' (data.{key}){did_you_mean(col, cols)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mixed types and the like: only a sample
            sample = read_sample(path, SAMPLE_ROWS)
        found = column_candidates(sample, key, other)
    except Exception:  # an unparsable file: its own error comes once the column is right
        return DataError(f"{head}; the header has: {_names(cols)}; set data.{key} to one of them")
    if found:
        return DataError(f"{head}; columns that {what}: {_names(found, 5)}; set data.{key} to one of them")
    kind = "a different value on every row" if is_id else "text or whole numbers with 2 to 100 values"
    return DataError(
        f"{head}; no column has {kind} in the first {len(sample):,} rows (the header has: "
        f"{_names(cols)}); set data.{key} to the right column"
    )


def load_train(data_cfg, path=None, nrows=None) -> TrainData:
    """Load and check the training CSV named in ``data_cfg``."""
    path = Path(path or data_paths(data_cfg)[0])
    cols = read_header(path, "train")
    for key in ("id_column", "target_column"):
        if getattr(data_cfg, key) is not None and getattr(data_cfg, key) not in cols:
            raise missing_column_error(path, cols, data_cfg, key)
    feats = feature_columns(cols, data_cfg, path)
    idc, tgt = data_cfg.id_column, data_cfg.target_column
    others = (tgt,) if idc is None else (idc, tgt)
    declared = data_cfg.columns
    unknown = [c for c in declared if c not in cols]
    if unknown:
        raise DataError(
            f"{path}: data.columns names column(s) not in the file: {unknown[0]!r}"
            f"{did_you_mean(unknown[0], cols)}{' (and more)' if len(unknown) > 1 else ''}; "
            "name columns of the training file there"
        )
    allow = data_cfg.missing != "none"
    dropped = {c: "data.columns" for c in feats if declared.get(c) == DROP}
    feats = [c for c in feats if c not in dropped]
    if not feats:
        raise DataError(f"{path}: every feature column is dropped (data.columns); keep at least one")
    got = None
    with phase(f"Reading {path.name}"):
        if not data_cfg.na_values and "categorical" not in declared.values():
            got = read_columns(path, "train", feats, others, allow_missing=allow, careful=False)
        if got is not None:
            x, rest = got
            types, notes = ColumnTypes(numeric=feats), []
        else:
            with utf8_errors(path):
                t = read_typed(path, feats, others, None, declared, data_cfg.na_values, allow)
            x, rest, feats, types, notes = t.x, t.rest, t.features, t.types, t.notes
    types.dropped = {**dropped, **types.dropped}
    if idc is None:
        notes += [_looks_like_row_id(path, f) for f in _row_ids(x, feats, types)]
    if not feats:
        raise DataError(f"{path}: no feature column is left ({', '.join(types.dropped)} dropped)")
    if nrows is not None and len(rest) > nrows:
        rest = rest.sample(n=nrows, random_state=0).sort_index()
        x = x[rest.index.to_numpy()]
    with utf8_errors(path):
        classes, y = encode_target(rest, path, tgt)
    ids = _ids(rest, idc)
    del rest
    release_arrow_memory()
    return TrainData(ids, x, y, classes, feats, str(path), types, notes)


@dataclass
class ColumnInfo:
    """One column of the training file, as ``check`` reports it."""

    name: str
    type: str  # numeric, categorical, or dropped
    distinct: int | None  # distinct non-missing values (None: a dropped column, not read)
    missing: int | None  # missing cells
    note: str = ""  # why a column was dropped, or which text cells were read as missing


def column_info(train: TrainData) -> list[ColumnInfo]:
    """Each feature column's type, distinct and missing counts (``train.x`` still loaded)."""
    out = []
    for j, f in enumerate(train.features):
        col = train.x[:, j]
        gaps = np.isnan(col)
        if f in train.types.categorical:
            kind, distinct = "categorical", len(train.types.categorical[f])
        else:
            kind, distinct = "numeric", int(len(np.unique(col[~gaps])))
        tokens = train.types.na_tokens.get(f)
        note = f"cells {', '.join(repr(t) for t in tokens)} read as missing" if tokens else ""
        out.append(ColumnInfo(f, kind, distinct, int(gaps.sum()), note))
    return out + [ColumnInfo(f, "dropped", None, None, why) for f, why in train.types.dropped.items()]


def _row_ids(x, features, types) -> list[str]:
    """Numeric features that count the rows (strictly increasing whole numbers): ids, not features."""
    if len(x) < SAMPLE_ROWS // 100:
        return []
    out = []
    for j, f in enumerate(features):
        if f in types.categorical:
            continue
        col = x[:, j]
        if col[0] == np.floor(col[0]) and (np.diff(col) > 0).all() and (col == np.floor(col)).all():
            out.append(f)
    return out


def _looks_like_row_id(path, column: str) -> str:
    return (
        f"{path}: column '{column}' looks like a row id (a larger whole number on every row), and with "
        f"data.id_column: null it is a feature; declare data.columns: {{{column}: drop}} or set "
        f"data.id_column: {column}"
    )


def column_mismatch(path, cols, features, other=()) -> str | None:
    """Describe how a file's columns differ from the features seen at fit (None if they don't).

    ``other`` lists the non-feature columns the file may also have (id, target).
    """
    missing = [c for c in features if c not in cols]
    unexpected = [c for c in cols if c not in features and c not in other]
    parts = []
    if missing:
        parts.append(
            f"missing {len(missing)} feature column(s) seen at fit: {', '.join(missing[:10])}"
            + (", ..." if len(missing) > 10 else "")
        )
    if unexpected:
        parts.append(
            f"unexpected column(s): {', '.join(unexpected[:10])}" + (", ..." if len(unexpected) > 10 else "")
        )
    return f"{path}: columns differ from the training data: {'; '.join(parts)}" if parts else None


def missing_allowed(state) -> bool:
    """Whether a run fills missing feature values (runs from before data.missing do not)."""
    return state.missing not in (None, "none")


def _read_features(path, role, features, others, types, na_values, allow_missing):
    """(x, DataFrame of ``others``): the fast reader for plain numbers, else the typed one."""
    with phase(f"Reading {Path(path).name}"):
        if types is None or (types.plain and not na_values):
            return read_columns(path, role, features, others, allow_missing)
        with utf8_errors(path):
            t = read_typed(path, features, others, types, na_values=na_values, allow_missing=allow_missing)
        return t.x, t.rest


def load_test(
    path, id_column, target_column, features, nrows=None, allow_missing=False, types=None, na_values=()
):
    """Load a test file and check its columns against those seen at fit.

    ``types`` (a ``ColumnTypes``) says how fit read each column; its dropped columns may be
    in the file. Returns (ids, float32 feature matrix) in file order.
    """
    path = Path(path)
    cols = read_header(path, "test")
    if target_column in cols:
        raise DataError(
            f"{path}: has a target column '{target_column}'; a test file holds "
            "only the id and the features (is this the training file?)"
        )
    if id_column is not None and id_column not in cols:
        raise DataError(
            f"{path}: no id column '{id_column}'; the submission needs it (a file without ids: "
            "data.id_column: null numbers the rows instead)"
        )
    others = () if id_column is None else (id_column,)
    dropped = tuple(types.dropped) if types is not None else ()
    problem = column_mismatch(path, cols, features, (*others, *dropped))
    if problem:
        raise DataError(problem)
    x, rest = _read_features(path, "test", features, others, types, na_values, allow_missing)
    if nrows is not None:
        x, rest = x[:nrows], rest.iloc[:nrows]
    if id_column is not None:
        with utf8_errors(path):
            dup = rest[id_column].duplicated()
        if dup.any():
            i = first_bad_row(dup.to_numpy())
            raise DataError(
                f"{path}: column '{id_column}', {row_place(path, i)}: duplicated id "
                f"{rest[id_column].iloc[i]}; each test row needs a unique id"
            )
    ids = _ids(rest, id_column)
    del rest
    release_arrow_memory()
    return ids, x


def load_labelled(path, state: dict):
    """Read a labelled CSV against a run's preprocessing state.

    Returns:
        (float32 features, integer labels in the run's class order).

    Raises:
        DataError: no target column, other feature columns than at fit, bad values,
            or class labels the run never saw.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; give a labelled CSV with the training columns")
    features, classes = state.features, state.classes
    idc, tgt = state.id_column, state.target_column
    cols = read_header(path, "labelled")
    if tgt not in cols:
        raise DataError(
            f"{path}: no target column '{tgt}'; evaluate and explain need labelled rows "
            "(for an unlabelled file use 'ottotrain predict')"
        )
    types = state.column_types()
    problem = column_mismatch(path, cols, features, (idc, tgt, *types.dropped))
    if problem:
        raise DataError(problem)
    x, rest = _read_features(
        path, "labelled", features, (tgt,), types, state.na_values or (), missing_allowed(state)
    )
    labels = rest[tgt]
    if labels.isna().any():
        raise missing_labels(path, tgt, labels.isna().to_numpy())
    labels = labels.astype(str)
    unseen = sorted(set(labels.unique()) - set(classes))
    if unseen:
        raise DataError(
            f"{path}: column '{tgt}' has class(es) the run never saw at fit: "
            f"{', '.join(unseen[:10])}{', ...' if len(unseen) > 10 else ''}; "
            f"the model knows {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''}"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    y = labels.map(lookup).to_numpy(dtype=np.int64)
    return x, y
