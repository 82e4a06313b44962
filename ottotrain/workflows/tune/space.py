"""What a study searches: its sampler and pruner, and each trial's values and config."""

from __future__ import annotations

import math
import warnings

import optuna
from pydantic import ValidationError

from ottotrain.config import Config, config_to_dict, get_path, trial_config
from ottotrain.errors import ConfigError


def sampler(cfg: Config, offset: int = 0):
    """The configured sampler; a process that joins or resumes a study gets seed + ``offset``
    (the same seed would suggest the same trials again)."""
    s = cfg.tune.sampler
    seed = None if s.seed is None else s.seed + offset
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if s.name == "grid":
        grid = {}
        for key, search in cfg.tune.space.items():
            if search.kind != "choice":
                raise ConfigError(
                    f"{cfg.source}: tune.sampler.name: grid searches choices only; "
                    f"tune.space.{key} is an {search.kind} range (give it as choice: [...])"
                )
            grid[key] = list(range(len(search.choice)))
        return _Grid(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, asked and told outside ``study.optimize``: it cannot stop the
    study when every combination has been tried (``Study.stop`` is for ``optimize`` only);
    the plan stops asking then (``grid_size``)."""

    def after_trial(self, study, trial, state, values):
        pass


def grid_size(cfg: Config) -> int | None:
    """The combinations a grid sampler tries (None for the other samplers)."""
    if cfg.tune.sampler.name != "grid":
        return None
    return math.prod(len(search.choice) for search in cfg.tune.space.values())


def pruner(cfg: Config):
    p = cfg.tune.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, p.warmup_epochs), max_resource=cfg.train.epochs
        )
    if p.name == "wilcoxon":  # compares a trial's folds with the best trial's same folds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(n_startup_steps=p.warmup_epochs)
    return optuna.pruners.NopPruner()


def _suggest(trial, key: str, search):
    """A trial's value of one key. Choices are suggested by index: any YAML value can be one."""
    if search.kind == "int":
        return trial.suggest_int(key, *search.int_range, log=search.log)
    if search.kind == "float":
        return trial.suggest_float(key, *search.float_range, log=search.log)
    return search.choice[trial.suggest_categorical(key, list(range(len(search.choice))))]


def suggest(cfg: Config, trial) -> dict:
    """A new trial's values of every searched key."""
    return {key: _suggest(trial, key, search) for key, search in cfg.tune.space.items()}


def own_values(cfg: Config) -> dict:
    """Trial 0: the config's own value of every searched key that it has, inside its range."""
    tree = config_to_dict(cfg)
    out = {}
    for key, search in cfg.tune.space.items():
        value = get_path(tree, key)
        if search.kind == "choice":
            if value in search.choice:
                out[key] = search.choice.index(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = search.int_range or search.float_range
            if lo <= value <= hi and (search.kind == "float" or float(value).is_integer()):
                out[key] = value
    return out


def params(cfg: Config, trial) -> dict:
    """A trial's values, choices resolved from their index."""
    out = {}
    for key, search in cfg.tune.space.items():
        value = trial.params[key]
        out[key] = search.choice[value] if search.kind == "choice" else value
    return out


def trial_settings(cfg: Config, values: dict) -> Config:
    """The config a trial trains. Values valid each alone (tune checks each at load) may not
    be together: that is a ConfigError in one line, naming the key."""
    try:
        return trial_config(cfg, values)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"{cfg.source}: tune.space: this trial's values make {where} invalid: {err['msg']}"
        ) from None
