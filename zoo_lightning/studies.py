"""The Optuna studies of ``sweep``: where a study is stored, how its trials are pruned, which trials count, and
the table of its trials that ``sweep`` prints and ``report`` shows.

A study lives in a storage that every worker of a sweep shares. By default that is a SQLite file,
``studies.db``, in the experiment folder; ``--storage`` takes any database URL SQLAlchemy knows
(``postgresql+psycopg://user@host/db``, ``mysql+pymysql://...``, ``sqlite:///path``) or the path of a
journal file, for a shared file system whose locks SQLite cannot trust (NFS). A database storage keeps a
heartbeat of every running trial: once a trial's worker has been silent for two heartbeats, the next
worker marks the trial failed and queues it again (Optuna's ``RetryHeartbeatStaleTrialCallback``, at
most :data:`RETRIES` times). Optuna's journal storage has no heartbeat.

A study has ``--trials`` slots. A trial takes one unless it failed and was queued again (its retry takes
the slot) or it was started past the last slot by two workers asking at the same moment (a surplus trial,
ended before it trains): :func:`counted_trials`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from optuna import Study
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = [
    "STUDIES_FILE",
    "RETRIES",
    "default_storage",
    "is_database",
    "shown",
    "absolute",
    "stored_file",
    "open_storage",
    "make_pruner",
    "counted_trials",
    "quiet_optuna",
    "trials_table",
    "RUNS",
    "SURPLUS",
]

STUDIES_FILE = "studies.db"  # the default storage: one SQLite file per experiment folder, holding its studies
RETRIES = 3  # how often a trial whose worker died (or was stopped) is queued again
SURPLUS = "surplus"  # the user attribute of a trial started past the study's last slot
RUNS = "runs"  # a trial's user attribute: its run folders, experiment/version


def quiet_optuna() -> None:
    """Optuna's own log lines off (the sweep says what happens in its words; a failed trial would come with a
    traceback) and its experimental-feature warnings (heartbeats, the plots) with them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(experiment: Path) -> str:
    return f"sqlite:///{experiment / STUDIES_FILE}"


def is_database(url: str) -> bool:
    """A database URL (``dialect[+driver]://...``) rather than a journal file's path."""
    return "://" in url


def shown(url: str) -> str:
    """The storage as it may be printed or recorded: a database URL without its password."""
    if not is_database(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def absolute(url: str) -> str:
    """A SQLite URL or a journal file's path made absolute, so a record of it holds wherever it is read."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        return f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
    return url if is_database(url) else str(Path(url).resolve())


def stored_file(url: str) -> Path | None:
    """The file a SQLite URL or a journal path names (None for a database server)."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None if is_database(url) else Path(url)


def open_storage(url: str, heartbeat: int | None = None) -> BaseStorage:
    """The Optuna storage at ``url``, connected: its tables made on first use.

    Args:
        url: a database URL, or a journal file's path.
        heartbeat: seconds between a running trial's heartbeats (database storages); None for none, as a fit
            that only reports to its trial needs.

    Raises:
        ValueError: the URL is not one, its driver is not installed, or the database cannot be reached.
        FileNotFoundError: a journal file's folder does not exist.
    """
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not is_database(url):
        if not Path(url).parent.is_dir():
            raise FileNotFoundError(
                f"--storage {url}: the folder {Path(url).parent} does not exist. Give a journal "
                "file in an existing folder, or a database URL (postgresql+psycopg://...)."
            )
        return JournalStorage(JournalFileBackend(url))
    import sqlalchemy.exc

    sqlite = url.startswith("sqlite")
    # SQLite lets one writer in at a time: the workers, their heartbeats and their fits wait their turn.
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES) if heartbeat else None
    for attempt in range(3):
        try:
            return RDBStorage(
                url, engine_kwargs=engine, heartbeat_interval=heartbeat, heartbeat_stale_trial_callback=retry
            )
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError):
            raise ValueError(
                f"--storage {shown(url)!r} is not a database URL SQLAlchemy knows: write "
                "dialect+driver://user@host/database (postgresql+psycopg://...), sqlite:///FILE, or "
                "a journal file's path."
            ) from None
        except ModuleNotFoundError as error:
            raise ValueError(
                f"--storage {shown(url)}: its driver, the Python module {error.name!r}, is not "
                "installed (PostgreSQL: pip install -c constraints.txt -e '.[postgresql]')."
            ) from None
        except sqlalchemy.exc.OperationalError as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            # Two workers making a new SQLite file's tables at once: the second finds them made.
            if "already exists" in reason and attempt < 2:
                time.sleep(1)
                continue
            where = f"the folder of {url.split(':///', 1)[-1]} must exist" if sqlite else "is the server up?"
            raise ValueError(f"--storage {shown(url)}: cannot open the database ({reason}); {where}") from None
        except optuna.exceptions.StorageInternalError as error:
            raise ValueError(f"--storage {shown(url)}: {error}") from None
    raise AssertionError("unreachable")


def make_pruner(name: str) -> BasePruner:
    """The pruner ``--pruner`` names. Optuna keeps no pruner in the storage: the sweep and each fit build it alike.

    ``median``: stop a trial whose metric at a validation is worse than the median of the finished trials' at
    the same validation (after 5 trials have finished). ``hyperband``: successive halving over brackets of
    budgets (Li et al., 2018), the budget being validations. ``none``: every trial runs to its end.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _retried(trials: list[FrozenTrial]) -> set[int]:
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return {number for trial in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(trial)}


def counted_trials(trials: list[FrozenTrial], up_to: int | None = None) -> int:
    """How many of a study's trial slots ``trials`` take (those numbered ``up_to`` or lower, if given): every
    trial but a failed one that was queued again and a surplus one."""
    retried = _retried(trials)
    return sum(
        1
        for t in trials
        if t.number not in retried and not t.user_attrs.get(SURPLUS) and (up_to is None or t.number <= up_to)
    )


def trials_table(study: Study, metric: str) -> list[str]:
    """The study's trials as a markdown table: number, state, values, metric and run folders."""
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    lines = [
        f"| trial | state | {' | '.join(keys)}{' | ' if keys else ''}{metric} | runs |",
        "|--:|---|" + "---|" * len(keys) + "--:|---|",
    ]
    for trial in trials:
        values = [_short(trial.params.get(k, "-")) for k in keys]
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        state = trial.state.name.lower() + (" (surplus)" if trial.user_attrs.get(SURPLUS) else "")
        runs = ", ".join(trial.user_attrs.get(RUNS) or []) or "-"
        lines.append(f"| {trial.number} | {state} | {' | '.join(values)}{' | ' if values else ''}{value} | {runs} |")
    return lines


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class SearchedOption(Protocol):
    """What a sampler needs of a searched option (``sweep``'s ``Dimension``): its choices, or its bounds."""

    @property
    def values(self) -> tuple[str | float | int | bool | None, ...]: ...


def make_sampler(name: str, dimensions: Mapping[str, SearchedOption]) -> BaseSampler:
    """Optuna's sampler ``name``; a grid's points are the ``values`` of each of the search space's dimensions."""
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler({k: list(d.values) for k, d in dimensions.items()}, seed=0)
    if name == "random":
        return optuna.samplers.RandomSampler()
    # The constant liar keeps workers from drawing the point another is training.
    return optuna.samplers.TPESampler(constant_liar=True)


def open_study(
    url: str,
    name: str,
    direction: Literal["minimize", "maximize"],
    record: dict[str, Any],
    sampler: BaseSampler | None,
    pruner: BasePruner | None,
    heartbeat: int | None,
) -> Study:
    """The study ``name`` in the storage at ``url``: loaded when it exists (its recorded space, metric and seeds must
    be ``record``'s), else created with ``record`` as its user attributes.

    Raises:
        ValueError: the storage cannot be used, or the study searched something else.
    """
    import optuna

    storage = open_storage(url, heartbeat=heartbeat if is_database(url) else None)
    if name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        stored = study.user_attrs
        if study.direction.name.lower() != direction:
            raise ValueError(
                f"Study {name!r} in {shown(url)} {study.direction.name.lower()}s its metric, this "
                f"command would {direction} it: give another --study NAME."
            )
        for key, value in record.items():
            if key in stored and stored[key] != value:
                raise ValueError(
                    f"Study {name!r} in {shown(url)} has {key} {_said(stored[key])}, this command "
                    f"{_said(value)}: give another --study NAME, or the same {key} to continue it."
                )
        missing = {k: v for k, v in record.items() if k not in stored}  # a study made outside a sweep
    else:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner, load_if_exists=True
        )
        missing = record
    for key, value in missing.items():
        study.set_user_attr(key, value)
    return study


def _said(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)
