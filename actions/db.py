"""The action server's one connection to the app database, opened (and migrated) on first use."""
from __future__ import annotations

import logging
import threading
from typing import Optional

from sqlalchemy.orm import Session, sessionmaker

from actions.settings import get_settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_sessions: Optional["sessionmaker[Session]"] = None
_engine = None


def get_sessions() -> "sessionmaker[Session]":
    """Sessions on DATABASE_URL, migrated and opened the first time any action needs them."""
    global _sessions, _engine
    with _lock:
        if _sessions is None:
            from bot.db import make_engine, make_session_factory, migrate

            url = get_settings().database_url
            try:
                migrate(url)
            except Exception:  # noqa: BLE001 - the web process may be migrating the same database
                log.warning("could not migrate the app database; assuming it is up to date", exc_info=True)
            _engine = make_engine(url)
            _sessions = make_session_factory(_engine)
        return _sessions


def use_sessions(sessions: Optional["sessionmaker[Session]"]) -> None:
    """Use these sessions from now on (None: forget them and open DATABASE_URL again on next use)."""
    global _sessions, _engine
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
        _sessions = sessions
