"""Where a tune study lives, opening it, and what happens to a trial whose process died.

By default a study is an Optuna journal file in its own directory (``journal.log``): safe for
several processes on one machine, no server. ``--storage URL`` puts it in a PostgreSQL (or
MySQL) database instead, which processes on several machines share: each runs the same
command with the same ``--storage`` and ``--study`` and keeps its own study directory for the
trials it trains. On a database, running trials send heartbeats, and a trial silent for two
of them is failed by the next process that asks for a trial, which queues its parameters
again (Optuna's ``RetryHeartbeatStaleTrialCallback``). A trial this machine's study process
left running when it died is failed and queued again by ``--resume``. Either way a trial is
queued again at most ``execute.RERUNS`` times: the executor's one limit for a job whose
process died. Only the study process
(the client) talks to the storage: the workers that train its trials never do.

A password in the URL is never printed, logged or written: ``study.json`` keeps the URL
without it (the client library then finds it in ``PGPASSWORD`` or ``~/.pgpass``).
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy.exc
import yaml
from optuna.exceptions import ExperimentalWarning
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import URL, make_url

from ottotrain.config import Config, config_to_dict, dump_yaml
from ottotrain.config.diff import config_changes, format_change
from ottotrain.errors import ConfigError, RunError, first_line
from ottotrain.execute import RERUNS
from ottotrain.io import read_json, write_json
from ottotrain.runs import process_alive

JOURNAL = "journal.log"
JOURNAL_STUDY = "ottotrain"  # the study's name inside its journal file
STUDY_FILE = "study.json"
# What may differ between the processes of one study (each machine names its own data copy).
JOIN_CHANGES = ("tune.trials", "tune.timeout", "tune.heartbeat", "data.train", "data.test")
_DRIVERS = {  # database -> what to pip install for its default SQLAlchemy driver
    "postgresql": "'ottotrain[postgres]' (psycopg 3)",
    "mysql": "mysqlclient (or use mysql+pymysql:// with pymysql)",
    "sqlite": None,  # in Python's standard library
}


@dataclass(frozen=True)
class Place:
    """Where a study is: a journal file in its directory (``url`` None) or a database."""

    name: str  # the study's name in its storage
    url: str | None = None  # the whole URL, password included: never shown or written
    keep: int | None = None  # keep only the run directories of the best ``keep`` trials

    @property
    def shown(self) -> str:
        return "journal file" if self.url is None else hidden(self.url)

    @property
    def is_database(self) -> bool:
        return self.url is not None


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ConfigError(
            "--storage: not a database URL; expected e.g. postgresql://USER@HOST:5432/DB "
            "(the password in PGPASSWORD or ~/.pgpass), or leave --storage out for the "
            "study directory's journal file"
        ) from None


def hidden(url: str) -> str:
    """The URL as it may be shown: its password replaced by ***."""
    parsed = _parse(url)
    query = {k: ("***" if k == "password" else v) for k, v in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def without_password(url: str) -> str:
    """The URL as it may be written: no password at all."""
    p = _parse(url)
    query = {k: v for k, v in p.query.items() if k != "password"}
    bare = URL.create(p.drivername, p.username, None, p.host, p.port, p.database, query)
    return bare.render_as_string(hide_password=False)


def _scrub(text: str, url: str) -> str:
    """A database error's message without the URL's password, should the driver quote it."""
    password = _parse(url).password
    return text.replace(str(password), "***") if password else text


def place_of(storage: str | None, study: str | None, default_name: str, keep: int | None = None) -> Place:
    """Check ``--storage``/``--study`` before anything starts; the study's place."""
    if storage is None:
        if study is not None:
            raise ConfigError(
                "--study names a study in a database; give --storage URL with it, or leave "
                "--study out (without --storage the study lives in its directory's journal file)"
            )
        return Place(JOURNAL_STUDY, None, keep)
    backend = _parse(storage).get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            f"--storage {hidden(storage)}: database '{backend}' is not supported; use "
            "postgresql:// or mysql:// (or leave --storage out for the journal file)"
        )
    return Place(study or default_name, storage, keep)


def save_place(study_dir: Path, place: Place) -> None:
    write_json(
        study_dir / STUDY_FILE,
        {
            "storage": "journal" if place.url is None else without_password(place.url),
            "study": place.name,
            "keep": place.keep,
        },
    )


def load_place(study_dir: Path, storage: str | None = None, keep: int | None = None) -> Place:
    """The place a study directory names; ``storage``, if given, must be the same database
    (it brings the password the directory does not keep)."""
    path = study_dir / STUDY_FILE
    saved = read_json(path) if path.exists() else {"storage": "journal", "study": JOURNAL_STUDY}
    keep = saved.get("keep") if keep is None else keep
    if saved["storage"] == "journal":
        if storage is not None:
            raise RunError(f"{study_dir}: the study lives in its journal file; resume it without --storage")
        return Place(saved["study"], None, keep)
    if storage is not None and without_password(storage) != saved["storage"]:
        raise RunError(
            f"{study_dir}: the study lives in {hidden(saved['storage'])}, not in "
            f"{hidden(storage)}; resume with the same --storage (or none)"
        )
    return Place(saved["study"], storage or saved["storage"], keep)


def open_storage(place: Place, study_dir: Path, heartbeat: int):
    """Optuna's storage for the place (a database is connected to, and its tables made, now)."""
    if place.url is None:
        return JournalStorage(JournalFileBackend(str(study_dir / JOURNAL)))
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats and their retry are marked experimental
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    return RDBStorage(
                        place.url,
                        engine_kwargs={"pool_pre_ping": True},
                        heartbeat_interval=heartbeat,
                        grace_period=2 * heartbeat,
                        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RERUNS),
                    )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Two processes making Optuna's tables in a new database at once: one of
                # them loses the race ("duplicate key", "already exists"); the tables are
                # there when it tries again.
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as e:
        backend = _parse(place.url).get_backend_name()
        raise ConfigError(
            f"--storage {place.shown}: the database driver is not installed ({first_line(e)}); "
            f"install it: pip install {_DRIVERS[backend]}"
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        reason = first_line(getattr(e, "orig", None) or e)
        hint = (
            "; give the password in PGPASSWORD or ~/.pgpass (or in --storage again)"
            if "password" in reason.lower()
            else ""
        )
        raise RunError(
            f"--storage {place.shown}: cannot open the study's database: {_scrub(reason, place.url)}{hint}"
        ) from None


def trial_owner() -> dict:
    """What a trial records of the process that trains it."""
    return {"host": platform.node(), "pid": os.getpid()}


def retry_dead(study, trials, log, why: str) -> None:
    """Fail trials whose process died and queue their parameters again, up to ``RERUNS``
    times per trial (Optuna's retry rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=RERUNS)
    for t in trials:
        study.tell(t.number, state=TrialState.FAIL)
        retry(study, study.get_trials(deepcopy=False)[t.number])
        log(f"trial {t.number}: {why}; recorded failed and queued again", 1)


def dead_here(study, place: Place) -> list:
    """This machine's running trials (on a journal, also those not yet marked with their
    process), all of whose processes are gone; refuse if one is alive."""
    host, out = platform.node(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("host")
        if not (owner == host if owner is not None else not place.is_database):
            continue
        pid = t.user_attrs.get("pid")
        if process_alive(pid):
            raise RunError(
                f"trial {t.number} is still being trained by process {pid}; stop it first "
                f"(kill {pid}), then resume"
            )
        out.append(t)
    return out


def open_study(cfg: Config, study_dir: Path, place: Place, sampler, pruner, create=False):
    """The study (made now if ``create`` and it does not exist); and whether it was made now.

    Joining a study that exists (another machine's, on a database) needs the same config,
    apart from ``JOIN_CHANGES``.
    """
    args = {
        "study_name": place.name,
        "storage": open_storage(place, study_dir, cfg.tune.heartbeat),
        "sampler": sampler,
        "pruner": pruner,
    }
    if create:
        try:
            study = optuna.create_study(direction="minimize", **args)
        except optuna.exceptions.DuplicatedStudyError:
            pass
        else:
            study.set_user_attr("config", dump_yaml(config_to_dict(cfg)))
            return study, True
    try:
        study = optuna.load_study(**args)
    except KeyError:
        raise RunError(f"{study_dir}: no study '{place.name}' in {place.shown}") from None
    saved = study.user_attrs.get("config")
    if saved is not None:
        _check_join(place, yaml.safe_load(saved), config_to_dict(cfg))
    return study, False


def _check_join(place: Place, saved: dict, ours: dict) -> None:
    refused = [format_change(*c) for c in config_changes(saved, ours) if c[0] not in JOIN_CHANGES]
    if refused:
        raise RunError(
            f"--study {place.name} in {place.shown}: the study was started with another "
            f"config: {'; '.join(refused[:10])}; join it with the same config (only "
            f"{', '.join(JOIN_CHANGES)} may differ), or name a new study with --study"
        )


@contextlib.contextmanager
def heartbeats(
    place: Place, interval: int, running: Callable[[], list[int]]
) -> Iterator[Callable[[int], None]]:
    """On a database, a heartbeat every ``interval`` seconds for the trials ``running()``
    numbers (those asked here and not told yet), so that a process that joins the study later
    sees that they are alive; a dead machine's trials go silent, and ``fail_stale`` fails them.
    Yields ``beat(number)``, a trial's first heartbeat, at once (Optuna counts a trial that
    never sent one as alive)."""
    if not place.is_database:
        yield lambda number: None
        return
    storage = open_storage(place, Path(), interval)  # its own connections, for its own thread
    study_id = storage.get_study_id_from_name(place.name)
    stop = threading.Event()

    def beat(number: int) -> None:
        with contextlib.suppress(Exception):  # a trial told meanwhile; a database blip
            storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, number))

    def beating():
        while not stop.wait(interval):
            for number in running():
                beat(number)

    thread = threading.Thread(target=beating, daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        stop.set()
        thread.join()


def fail_stale(study, place: Place) -> None:
    """On a database, fail the trials whose heartbeat stopped (a dead machine's) and queue
    them again (the storage's retry callback)."""
    if place.is_database:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
