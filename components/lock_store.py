"""Rasa's Redis lock store, made safe for several Rasa servers at once.

Rasa Open Source's ``RedisLockStore`` changes a conversation's ticket lock by reading it,
changing it in Python and writing it back. Two servers doing that at the same moment overwrite
each other: both can be handed ticket 0 and run one conversation's turns side by side, and the
later save then drops the other turn's events (seen in ``tests/test_production.py``). This store
does every such read-change-write while holding a short Redis mutex for the conversation
(redis-py's ``Lock``: ``SET NX PX`` to take it, a Lua script to release only our own), so tickets
are issued, served and cleaned up one server at a time. Chosen in ``endpoints.production.yml``
with ``type: components.lock_store.AtomicRedisLockStore``.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Text

from rasa.core.lock_store import LOCK_LIFETIME, LockError, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

logger = logging.getLogger(__name__)

# Seconds the mutex lives if its holder dies mid-change, and the longest wait to take it. Every
# change under it is two or three Redis round trips.
MUTEX_TIMEOUT = 5.0
MUTEX_WAIT = 10.0


class AtomicRedisLockStore(RedisLockStore):
    """A Redis lock store whose ticket changes are atomic across processes."""

    def __init__(self, endpoint_config: EndpointConfig | None = None, **kwargs: Any) -> None:
        """Connect as Rasa's ``redis`` lock store would, from the endpoint's url and settings."""
        if endpoint_config is not None:
            kwargs = {**endpoint_config.kwargs, **kwargs}
            kwargs.setdefault("host", endpoint_config.url or "localhost")
        super().__init__(**kwargs)

    @contextmanager
    def _mutex(self, conversation_id: Text) -> Iterator[None]:
        """Hold the conversation's Redis mutex while its ticket lock is read, changed and saved."""
        mutex = self.red.lock(
            f"{self.key_prefix}{conversation_id}:mutex", timeout=MUTEX_TIMEOUT, blocking_timeout=MUTEX_WAIT
        )
        if not mutex.acquire():
            raise LockError(f"Could not change the lock for conversation '{conversation_id}' in time.")
        try:
            yield
        finally:
            try:
                mutex.release()
            except Exception:  # it expired and may be someone else's now: theirs to release
                logger.warning("A lock store mutex outlived its timeout.")

    def issue_ticket(self, conversation_id: Text, lock_lifetime: float = LOCK_LIFETIME) -> int:
        """Issue the next ticket for the conversation, one server at a time."""
        try:
            with self._mutex(conversation_id):
                return super().issue_ticket(conversation_id, lock_lifetime)
        except LockError:
            raise
        except Exception as error:
            raise LockError(f"Error while acquiring lock. Error:\n{error}") from error

    def update_lock(self, conversation_id: Text) -> None:
        """Drop expired tickets, one server at a time."""
        with self._mutex(conversation_id):
            super().update_lock(conversation_id)

    def cleanup(self, conversation_id: Text, ticket_number: int) -> None:
        """Finish our ticket and delete the lock if no one waits, with no ticket issued in between."""
        with self._mutex(conversation_id):
            super().cleanup(conversation_id, ticket_number)
