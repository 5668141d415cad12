"""App database plumbing: engines, sessions and migrations (nothing is created at import time)."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

ROOT = Path(__file__).resolve().parent.parent


def _is_sqlite(url: str) -> bool:
    """True when url points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    """Turn on foreign keys, write-ahead logging and a lock wait for every new SQLite connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, **kwargs) -> Engine:
    """Create a SQLAlchemy 2.0-style engine for url (SQLite: make its folder, set pragmas)."""
    from sqlalchemy import create_engine

    # A database error's message would otherwise carry the statement's values (a champion's
    # words, answers, names) into the logs: SECURITY.md, "Logging".
    kwargs.setdefault("hide_parameters", True)
    if _is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            if not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Keep connections open between uses, as SQLAlchemy 2.0 does for a file (1.4 opens a new
            # one, and sets its pragmas, for every session: a sixth of the action server's time).
            kwargs.setdefault("poolclass", QueuePool)
            kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(url, future=True, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, future=True, **kwargs)


def make_session_factory(engine: Engine) -> "sessionmaker[Session]":
    """Sessions bound to engine; objects stay readable after commit."""
    return sessionmaker(bind=engine, future=True, expire_on_commit=False)


def load_models():
    """Import bot.models and every bot/*_models.py module; return the shared metadata they fill."""
    import importlib
    import pkgutil

    import bot
    from bot.models import Base

    for module in pkgutil.iter_modules(bot.__path__):
        if module.name.endswith("_models"):
            importlib.import_module(f"bot.{module.name}")
    return Base.metadata


def alembic_config(url: str):
    """Alembic configuration for this repository's migrations, aimed at url."""
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    # Passed as attributes, not ini options: a URL may hold '%' (configparser interpolation).
    config.attributes["database_url"] = url
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at url up to revision (what `alembic upgrade head` does)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
