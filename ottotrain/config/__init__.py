"""The config: its schema, loading it (YAML, ``--set``, cv variants) and its Keras checks.

Nothing here imports TensorFlow: a config is validated completely before training starts.
"""

from ottotrain.config.keras_checks import (
    check_layer,
    keras_spec,
    needs_train_accuracy,
    normalize_named,
)
from ottotrain.config.loading import (
    apply_override,
    config_to_dict,
    dump_yaml,
    get_path,
    json_schema,
    load_config,
    member_config,
    parse_override,
    parse_yaml_text,
    path_origin,
    synthetic_paths,
    trial_config,
    validate_tree,
    variant_index,
)
from ottotrain.config.schema import (
    METRICS,
    SYMBOLS,
    Config,
    CvConfig,
    DataConfig,
    KnnConfig,
    SyntheticConfig,
    TrainConfig,
)

__all__ = [
    "METRICS",
    "SYMBOLS",
    "Config",
    "CvConfig",
    "DataConfig",
    "KnnConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_override",
    "check_layer",
    "config_to_dict",
    "dump_yaml",
    "get_path",
    "json_schema",
    "keras_spec",
    "load_config",
    "member_config",
    "needs_train_accuracy",
    "normalize_named",
    "parse_override",
    "parse_yaml_text",
    "path_origin",
    "synthetic_paths",
    "trial_config",
    "validate_tree",
    "variant_index",
]
