"""The data: CSV readers and their cache, the tables, the split and the folds, synthetic data."""

from ottotrain.data.csv import check_features, read_columns, read_header, read_table
from ottotrain.data.split import fold_assignment, inner_split, train_val_split
from ottotrain.data.synth import make_data
from ottotrain.data.tables import (
    TrainData,
    column_mismatch,
    data_paths,
    feature_columns,
    id_name,
    load_labelled,
    load_test,
    load_train,
    missing_allowed,
    natural_key,
)

__all__ = [
    "TrainData",
    "check_features",
    "column_mismatch",
    "data_paths",
    "feature_columns",
    "fold_assignment",
    "inner_split",
    "id_name",
    "load_labelled",
    "load_test",
    "load_train",
    "make_data",
    "missing_allowed",
    "natural_key",
    "read_columns",
    "read_header",
    "read_table",
    "train_val_split",
]
