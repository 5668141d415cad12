"""Rasa's SQL tracker store, keeping each recent conversation in memory between its turns.

On every message Rasa 3.6's ``SQLTrackerStore`` reads the whole conversation session back from
the database, decodes every event's JSON and replays the events into a tracker: about a quarter
of the Rasa process's work per message in bench/latency.py (bench/RESULTS.md). This store keeps
the tracker it last saved for each conversation and hands it back on the next turn, when the
database shows nothing has changed since: the newest event id for the sender is the one it saved,
and the tracker holds just the events it saved (a turn that failed before saving, and so left
unsaved events on it, is read again). Anything else (another Rasa server answered, the champion's
data was erased, a new session began) reads the database as Rasa always does.

Chosen in the endpoints files with ``type: components.tracker_store.CachedSQLTrackerStore``; the
rest of the section is Rasa's own SQL settings. Read from the environment when the store is
created: ``TRACKER_CACHE_SIZE`` (conversations kept, 500 by default; 0 turns the cache off) and
``TRACKER_CACHE_SECONDS`` (a conversation not used for this long is dropped, 900 by default), so
an erased champion's conversation does not stay in the server's memory for long either.

Saving a kept tracker also skips Rasa's count of the session's stored events (the store knows how
many it saved) and takes the newest event id from the rows it inserts. On SQLite the store keeps its
connections open between turns (Rasa opens a new one for every query) and uses write-ahead logging
with ``synchronous=NORMAL``, as the app database does (bot/db.py): a commit survives any process
crash or restart, and needs one disk flush at checkpoints instead of several per turn.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Text

import sqlalchemy as sa
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 500
DEFAULT_CACHE_SECONDS = 900.0


@dataclass
class _Kept:
    """A saved tracker, the newest event id stored for its sender, and how many events it held."""

    tracker: DialogueStateTracker
    last_event_id: Optional[int]
    events: int
    used_at: float


class CachedSQLTrackerStore(SQLTrackerStore):
    """An SQL tracker store that reuses a conversation's tracker while the database agrees with it."""

    def __init__(
        self,
        *args: Any,
        cache_size: Optional[int] = None,
        cache_seconds: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        """Rasa's SQL tracker store; up to cache_size conversations kept, each for cache_seconds unused."""
        super().__init__(*args, **kwargs)
        if self.engine.dialect.name == "sqlite":
            self._reuse_sqlite_connections()
        if cache_size is None:
            cache_size = int(os.environ.get("TRACKER_CACHE_SIZE") or DEFAULT_CACHE_SIZE)
        if cache_seconds is None:
            cache_seconds = float(os.environ.get("TRACKER_CACHE_SECONDS") or DEFAULT_CACHE_SECONDS)
        self.cache_size = max(0, int(cache_size))
        self.cache_seconds = max(0.0, float(cache_seconds))
        self._clock = clock
        self._kept: "OrderedDict[str, _Kept]" = OrderedDict()
        self._kept_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _reuse_sqlite_connections(self) -> None:
        """Replace Rasa's SQLite engine (a new connection per query) with the app database's kind
        (bot/db.py): connections kept open, write-ahead logging, synchronous=NORMAL, a lock wait."""
        from bot.db import make_engine

        url = self.engine.url
        self.engine.dispose()
        self.engine = make_engine(url.render_as_string(hide_password=False))
        self.sessionmaker = sa.orm.session.sessionmaker(bind=self.engine)

    def _last_event_id(self, sender_id: Text) -> Optional[int]:
        """The id of the newest event stored for sender_id (None if there are none)."""
        with self.session_scope() as session:
            return session.query(sa.func.max(self.SQLEvent.id)).filter(self.SQLEvent.sender_id == sender_id).scalar()

    async def retrieve(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        """The conversation's latest session: the kept tracker if the database still agrees, else read."""
        if self.cache_size:
            with self._kept_lock:
                self._drop_unused()
                kept = self._kept.get(sender_id)
            if kept is not None:
                if kept.last_event_id == self._last_event_id(sender_id) and len(kept.tracker.events) == kept.events:
                    with self._kept_lock:
                        kept.used_at = self._clock()
                        self._kept.move_to_end(sender_id)
                    self.hits += 1
                    return kept.tracker
                self._forget(sender_id)
            self.misses += 1
        return await super().retrieve(sender_id)

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Store the new events as Rasa does, then keep the tracker for the conversation's next turn."""
        with self._kept_lock:
            kept = self._kept.pop(tracker.sender_id, None)
        # A tracker that starts a new session is read back from the database next time, which holds
        # only the new session.
        keep = self.cache_size and not self._starts_a_session(tracker)
        if kept is None or kept.tracker is not tracker or self.event_broker is not None:
            await super().save(tracker)
            last_event_id = self._last_event_id(tracker.sender_id) if keep else None
        else:
            # The tracker this store handed out: its first kept.events events are the ones stored.
            last_event_id = self._insert_events(tracker, kept.events) or kept.last_event_id
        if not keep or last_event_id is None:
            return  # nothing to keep (or deleted as soon as saved: an erasure)
        kept = _Kept(tracker, last_event_id, len(tracker.events), self._clock())
        with self._kept_lock:
            self._drop_unused()
            self._kept[tracker.sender_id] = kept
            self._kept.move_to_end(tracker.sender_id)
            while len(self._kept) > self.cache_size:
                self._kept.popitem(last=False)

    def _insert_events(self, tracker: DialogueStateTracker, stored: int) -> Optional[int]:
        """Insert the tracker's events after the first `stored` as Rasa's save does; the last one's id."""
        rows = []
        for event in itertools.islice(tracker.events, stored, None):
            data = event.as_dict()
            rows.append(
                self.SQLEvent(
                    sender_id=tracker.sender_id,
                    type_name=event.type_name,
                    timestamp=data.get("timestamp"),
                    intent_name=data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
                    action_name=data.get("name"),
                    data=json.dumps(data),
                )
            )
        if not rows:
            return None
        with self.session_scope() as session:
            session.add_all(rows)
            session.flush()
            last_event_id = max(row.id for row in rows)
            session.commit()
        return last_event_id

    def _drop_unused(self) -> None:
        """Drop the conversations not used for cache_seconds (the least recently used come first)."""
        oldest_kept = self._clock() - self.cache_seconds
        while self._kept:
            sender_id, kept = next(iter(self._kept.items()))
            if kept.used_at >= oldest_kept:
                return
            del self._kept[sender_id]

    def _forget(self, sender_id: Text) -> None:
        """Drop the kept tracker of sender_id, if any."""
        with self._kept_lock:
            self._kept.pop(sender_id, None)

    @staticmethod
    def _starts_a_session(tracker: DialogueStateTracker) -> bool:
        """True if the tracker holds a session start after its first events (the database has fewer)."""
        return any(isinstance(event, SessionStarted) for index, event in enumerate(tracker.events) if index > 1)
