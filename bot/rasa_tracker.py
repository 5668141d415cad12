"""Rasa's conversation store (its SQL tracker store), read and pruned for a champion's own data.

Rasa keeps every conversation as rows of its ``events`` table (``sender_id`` such as
``web-<id>`` or ``tg-<chat id>``, a float ``timestamp``, the event as JSON in ``data``).
The champion's "what do you know about me?" file includes their events, and the erasure
pass (bot/erasure.py) deletes them.

Where that table lives is read from Rasa's own endpoints file (RASA_ENDPOINTS, default
``endpoints.yml``), so there is one source of truth: its ``tracker_store`` section, read as
Rasa reads it (``${VAR}`` filled from the environment; ``url`` is the host; ``dialect``,
``host``, ``port``, ``db``, ``username``, ``password``, ``login_db``, ``query``), and the
database address built as ``rasa.core.tracker_store.SQLTrackerStore.get_db_url`` builds it
(tests/test_erasure.py checks they agree). Importing Rasa itself would add about 60 MB to the
web and delivery processes, hence the few lines here. A relative SQLite path is relative to
the current directory, as it is for Rasa (every process runs from the repository root).

Only Rasa's SQL tracker store can be read and pruned. With no tracker store (Rasa keeps
conversations in memory and loses them at a restart) there is nothing to read or delete;
any other kind (Redis, Mongo, DynamoDB) is reported in the log and left alone.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, event, func, inspect, select
from sqlalchemy.engine import URL, Engine, make_url

log = logging.getLogger(__name__)

# Rasa's table (rasa.core.tracker_store.SQLTrackerStore.SQLEvent), described, never created here.
_metadata = MetaData()
EVENTS = Table(
    "events",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255), nullable=False),
    Column("type_name", String(255), nullable=False),
    Column("timestamp", Float),
    Column("intent_name", String(255)),
    Column("action_name", String(255)),
    Column("data", Text),
)
# ${VAR} as Rasa expands it in endpoint files.
_ENV_VAR = re.compile(r"\$\{([^}]*)\}")
# Rows per "sender_id IN (...)" (a champion has one or two sender ids; this is a safety bound).
_SENDERS_PER_QUERY = 100
# Endpoint types that are Rasa's SQL tracker store: its own, and ours that keeps trackers in memory
# (components/tracker_store.py, same tables and settings).
SQL_STORE_TYPES = ("sql", "components.tracker_store.cachedsqltrackerstore")


class TrackerConfigError(ValueError):
    """The endpoints file can't be read, or its tracker store can't be used."""


@dataclass(frozen=True)
class TrackerStoreConfig:
    """What the endpoints file says about Rasa's tracker store."""

    kind: Optional[str]  # None: in memory; "sql"; or another Rasa tracker store type
    url: Optional[URL] = None  # for "sql"


def _expand(value: Any, environ: Mapping[str, str]) -> Any:
    """value with ${VAR} filled from environ, as Rasa does (an unset variable is an error)."""
    if isinstance(value, dict):
        return {k: _expand(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def fill(match: "re.Match[str]") -> str:
        """The variable's value."""
        name = match.group(1)
        if name not in environ:
            raise TrackerConfigError(f"the endpoints file needs the environment variable {name}")
        return environ[name]

    return _ENV_VAR.sub(fill, value)


def db_url(
    dialect: str = "sqlite",
    host: Optional[str] = None,
    port: Optional[int] = None,
    db: str = "rasa.db",
    username: Optional[str] = None,
    password: Optional[str] = None,
    login_db: Optional[str] = None,
    query: Optional[Dict[str, Any]] = None,
) -> URL:
    """The address of the database holding the events, as Rasa's SQLTrackerStore works it out.

    Rasa first connects to login_db (if given) only to create `db`, then works in `db`: the
    events are always in `db` (or in the database a complete URL in host names).
    """
    from urllib import parse

    if host and "://" in host:
        url = make_url(host)
        return url.set(database=db) if login_db else url
    if host:
        parsed = parse.urlsplit(f"scheme://{host}")
        port = parsed.port or port
        host = parsed.hostname or host
    return URL.create(
        dialect,
        username=username,
        password=None if password is None else str(password),
        host=host,
        port=None if port in (None, "") else int(port),
        database=db,
        query=dict(query or {}),
    )


def read_config(path: Path, environ: Optional[Mapping[str, str]] = None) -> TrackerStoreConfig:
    """The tracker store named in Rasa's endpoints file at path."""
    env = os.environ if environ is None else environ
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TrackerConfigError(f"can't read the endpoints file {path}: {exc}") from None
    if not isinstance(content, dict):
        raise TrackerConfigError(f"the endpoints file {path} is not a mapping")
    section = content.get("tracker_store")
    if section is None:
        return TrackerStoreConfig(kind=None)
    if not isinstance(section, dict):
        raise TrackerConfigError(f"tracker_store in {path} is not a mapping")
    section = _expand(section, env)
    kind = section.get("type")
    if kind is None or str(kind).lower() == "in_memory":
        return TrackerStoreConfig(kind=None)
    kind = str(kind).lower()
    if kind in SQL_STORE_TYPES:
        kind = "sql"
    if kind != "sql":
        return TrackerStoreConfig(kind=kind)
    url = db_url(
        dialect=section.get("dialect") or "sqlite",
        host=section.get("url") or section.get("host"),
        port=section.get("port"),
        db=section.get("db") or "rasa.db",
        username=section.get("username"),
        password=section.get("password"),
        login_db=section.get("login_db"),
        query=section.get("query"),
    )
    return TrackerStoreConfig(kind="sql", url=url)


def _sqlite_busy_timeout(dbapi_connection, _record) -> None:
    """Wait for Rasa's writes instead of failing at once (journal mode is Rasa's business)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def _decode(data: Optional[str]) -> Any:
    """An event's JSON as a dict (the raw text if it isn't JSON)."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data


class TrackerEvents:
    """Rasa's events table: read and delete the events of given sender ids (the engine opens on first use)."""

    def __init__(self, url: URL | str) -> None:
        """Work on the tracker store database at url."""
        self.url = make_url(str(url)) if isinstance(url, str) else url
        self._engine: Optional[Engine] = None

    @classmethod
    def from_settings(cls, settings: Any) -> Optional["TrackerEvents"]:
        """The tracker store named in settings.rasa_endpoints, or None (logged) when it can't be used."""
        path = Path(getattr(settings, "rasa_endpoints", "endpoints.yml"))
        try:
            config = read_config(path)
        except TrackerConfigError as exc:
            log.error("%s: Rasa's conversation records can't be read or deleted", exc)
            return None
        if config.kind is None:
            log.info("Rasa keeps conversations in memory (%s): there are no stored events to read or delete", path)
            return None
        if config.kind != "sql":
            log.error(
                "Rasa's tracker store in %s is %r: only the SQL tracker store can be read and pruned, "
                "so conversation records are NOT deleted on request",
                path, config.kind,
            )
            return None
        return cls(config.url)

    @property
    def engine(self) -> Engine:
        """The engine, created on first use."""
        if self._engine is None:
            from sqlalchemy import create_engine

            url = self.url
            # hide_parameters: an error's message would otherwise carry conversation events into the logs.
            kwargs: Dict[str, Any] = {"future": True, "hide_parameters": True}
            if url.get_backend_name() == "sqlite":
                engine = create_engine(url, **kwargs)
                event.listen(engine, "connect", _sqlite_busy_timeout)
            else:
                schema = os.environ.get("POSTGRESQL_SCHEMA")  # Rasa's own setting for a schema
                if schema and url.get_backend_name() == "postgresql":
                    kwargs["connect_args"] = {"options": f"-csearch_path={schema}"}
                engine = create_engine(url, pool_pre_ping=True, **kwargs)
            self._engine = engine
        return self._engine

    def close(self) -> None:
        """Close the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _has_table(self) -> bool:
        """True once Rasa has created its events table (not before its first start)."""
        return inspect(self.engine).has_table(EVENTS.name)

    def events(self, sender_ids: Sequence[str]) -> List[Dict[str, Any]]:
        """Every stored event of these senders, in the order Rasa stored them."""
        ids = [s for s in dict.fromkeys(sender_ids) if s]
        if not ids or not self._has_table():
            return []
        found: List[Dict[str, Any]] = []
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _SENDERS_PER_QUERY):
                rows = connection.execute(
                    select(EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data)
                    .where(EVENTS.c.sender_id.in_(ids[start : start + _SENDERS_PER_QUERY]))
                    .order_by(EVENTS.c.id)
                )
                found.extend(
                    {"sender_id": sender, "event": kind, "timestamp": timestamp, "data": _decode(data)}
                    for sender, kind, timestamp, data in rows
                )
        return found

    def count(self, sender_ids: Sequence[str]) -> int:
        """How many events these senders have."""
        ids = [s for s in dict.fromkeys(sender_ids) if s]
        if not ids or not self._has_table():
            return 0
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(EVENTS).where(EVENTS.c.sender_id.in_(ids))).scalar_one()
            )

    def delete(self, sender_ids: Sequence[str], up_to: Optional[datetime] = None) -> int:
        """Delete these senders' events stored up to up_to (all of them when None); returns how many."""
        ids = [s for s in dict.fromkeys(sender_ids) if s]
        if not ids or not self._has_table():
            return 0
        statement = delete(EVENTS).where(EVENTS.c.sender_id.in_(ids))
        if up_to is not None:
            statement = statement.where((EVENTS.c.timestamp <= up_to.timestamp()) | EVENTS.c.timestamp.is_(None))
        with self.engine.begin() as connection:
            return int(connection.execute(statement).rowcount or 0)

    def delete_before(self, cutoff: datetime) -> int:
        """Delete every sender's events stored before cutoff (the retention clean-up); returns how many."""
        if not self._has_table():
            return 0
        with self.engine.begin() as connection:
            return int(connection.execute(delete(EVENTS).where(EVENTS.c.timestamp < cutoff.timestamp())).rowcount or 0)

    def oldest(self, sender_ids: Sequence[str]) -> Optional[float]:
        """The earliest timestamp among these senders' events (None when they have none)."""
        ids = [s for s in dict.fromkeys(sender_ids) if s]
        if not ids or not self._has_table():
            return None
        with self.engine.connect() as connection:
            return connection.execute(
                select(func.min(EVENTS.c.timestamp)).where(EVENTS.c.sender_id.in_(ids))
            ).scalar_one()
