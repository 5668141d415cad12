"""The caching SQL tracker store (components/tracker_store.py): what Rasa reads back is always what
Rasa's own SQL tracker store would read from the database, on SQLite and on PostgreSQL."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import List

import pytest
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from components.tracker_store import CachedSQLTrackerStore
from tests.champion_data import create_pg_database, drop_pg_database

DOMAIN = Domain.from_dict({"intents": ["greet"], "slots": {"name": {"type": "text", "mappings": [{"type": "custom"}]}}})


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request, tmp_path):
    """(cached store, Rasa's plain store) on the same new database."""
    if request.param == "sqlite":
        settings = {"dialect": "sqlite", "db": str(tmp_path / "tracker.db")}
        name = None
    else:
        name = create_pg_database("coprod_cache")
        if name is None:
            pytest.skip("no PostgreSQL server")
        settings = {"dialect": "postgresql", "host": "127.0.0.1", "port": 5432, "db": name, "username": "postgres"}
    cached = CachedSQLTrackerStore(domain=DOMAIN, **settings)
    plain = SQLTrackerStore(domain=DOMAIN, **settings)
    yield cached, plain
    for store in (cached, plain):
        store.engine.dispose()
    if name:
        drop_pg_database(name)


def run(coroutine):
    """Run one of the stores' coroutines."""
    return asyncio.run(coroutine)


def turn(text: str, at: float) -> List[Event]:
    """One champion message and the reply, as Rasa records them."""
    return [
        UserUttered(text, {"name": "greet", "confidence": 1.0}, timestamp=at),
        SlotSet("name", text, timestamp=at),
        BotUttered(f"you said {text}", timestamp=at),
        ActionExecuted("action_listen", timestamp=at),
    ]


def session_start(at: float) -> List[Event]:
    """The events that open a conversation session."""
    return [ActionExecuted("action_session_start", timestamp=at), SessionStarted(timestamp=at),
            ActionExecuted("action_listen", timestamp=at)]


def dumped(tracker) -> list:
    """A tracker's events as dictionaries (None for no tracker)."""
    return None if tracker is None else [event.as_dict() for event in tracker.events]


def test_a_conversation_reads_back_the_same_and_the_next_turn_reuses_it(stores):
    """Turn after turn, the cached store gives what the database holds, reusing its tracker when nothing changed."""
    cached, plain = stores
    sender = f"web-{uuid.uuid4().hex[:8]}"
    start = time.time()
    tracker = DialogueStateTracker.from_events(sender, session_start(start), DOMAIN.slots)
    for number in range(3):
        for event in turn(f"message {number}", start + number + 1):
            tracker.update(event)
        run(cached.save(tracker))
        again = run(cached.retrieve(sender))
        assert again is tracker, "the saved tracker is reused"
        assert dumped(again) == dumped(run(plain.retrieve(sender)))
        assert again.get_slot("name") == f"message {number}"
        tracker = again
    assert cached.hits == 3


def test_another_server_answering_is_read_from_the_database(stores):
    """Turns saved by another Rasa server (here the plain store) are read back, not hidden by the cache."""
    cached, plain = stores
    sender = f"web-{uuid.uuid4().hex[:8]}"
    start = time.time()
    tracker = DialogueStateTracker.from_events(sender, session_start(start) + turn("one", start + 1), DOMAIN.slots)
    run(cached.save(tracker))
    elsewhere = run(plain.retrieve(sender))
    for event in turn("two", start + 2):
        elsewhere.update(event)
    run(plain.save(elsewhere))
    back = run(cached.retrieve(sender))
    assert back is not tracker and back.get_slot("name") == "two"
    assert dumped(back) == dumped(run(plain.retrieve(sender)))


def test_a_turn_that_was_not_saved_is_not_remembered(stores):
    """Events added to the tracker by a turn that failed before saving are gone when it is read again."""
    cached, plain = stores
    sender = f"web-{uuid.uuid4().hex[:8]}"
    start = time.time()
    tracker = DialogueStateTracker.from_events(sender, session_start(start) + turn("kept", start + 1), DOMAIN.slots)
    run(cached.save(tracker))
    for event in turn("lost", start + 2):
        tracker.update(event)  # ...and then the turn failed: no save
    back = run(cached.retrieve(sender))
    assert back.get_slot("name") == "kept"
    assert dumped(back) == dumped(run(plain.retrieve(sender)))


def test_erased_events_are_not_served_from_memory(stores):
    """After the champion's events are deleted from the database (erasure), the conversation starts afresh."""
    cached, plain = stores
    sender = f"web-{uuid.uuid4().hex[:8]}"
    start = time.time()
    run(cached.save(DialogueStateTracker.from_events(sender, session_start(start) + turn("private", start + 1), DOMAIN.slots)))
    with plain.session_scope() as session:
        session.query(plain.SQLEvent).filter(plain.SQLEvent.sender_id == sender).delete()
        session.commit()
    assert run(cached.retrieve(sender)) is None


def test_a_new_session_reads_only_that_session(stores):
    """When a new session starts in a kept tracker, the next read holds only the new session, as Rasa's does."""
    cached, plain = stores
    sender = f"web-{uuid.uuid4().hex[:8]}"
    start = time.time() - 7200
    tracker = DialogueStateTracker.from_events(sender, session_start(start) + turn("yesterday", start + 1), DOMAIN.slots)
    run(cached.save(tracker))
    tracker = run(cached.retrieve(sender))
    for event in session_start(start + 3600) + turn("today", start + 3601):
        tracker.update(event)
    run(cached.save(tracker))
    back = run(cached.retrieve(sender))
    assert dumped(back) == dumped(run(plain.retrieve(sender)))
    assert [e["text"] for e in dumped(back) if e["event"] == "user"] == ["today"]


def test_only_the_most_recent_conversations_are_kept(tmp_path, monkeypatch):
    """TRACKER_CACHE_SIZE bounds the memory: older conversations are read from the database; 0 turns it off."""
    monkeypatch.setenv("TRACKER_CACHE_SIZE", "2")
    store = CachedSQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(tmp_path / "t.db"))
    start = time.time()
    senders = [f"web-{n}" for n in range(3)]
    for sender in senders:
        run(store.save(DialogueStateTracker.from_events(sender, session_start(start) + turn(sender, start + 1), DOMAIN.slots)))
    assert list(store._kept) == senders[1:]
    assert run(store.retrieve(senders[0])).get_slot("name") == "web-0"
    assert (store.hits, store.misses) == (0, 1)
    off = CachedSQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(tmp_path / "t.db"), cache_size=0)
    tracker = run(off.retrieve(senders[1]))
    run(off.save(tracker))
    assert run(off.retrieve(senders[1])) is not tracker and not off._kept


def test_a_conversation_not_used_for_a_while_is_dropped_from_memory(tmp_path):
    """After TRACKER_CACHE_SECONDS without use, a conversation is no longer held in memory."""
    now = [1000.0]
    store = CachedSQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(tmp_path / "t.db"), cache_seconds=900,
                                  clock=lambda: now[0])
    start = time.time()
    run(store.save(DialogueStateTracker.from_events("web-old", session_start(start) + turn("a", start + 1), DOMAIN.slots)))
    now[0] += 600
    run(store.save(DialogueStateTracker.from_events("web-new", session_start(start) + turn("b", start + 1), DOMAIN.slots)))
    now[0] += 301  # web-old unused for 901 s, web-new for 301 s
    assert run(store.retrieve("web-new")).get_slot("name") == "b"
    assert list(store._kept) == ["web-new"]
    assert run(store.retrieve("web-old")).get_slot("name") == "a"  # read from the database
    assert (store.hits, store.misses) == (1, 1)


def test_a_conversation_erased_as_it_was_saved_is_not_kept(tmp_path, monkeypatch):
    """If the events are gone by the time the save is checked, nothing is kept to be served later."""
    store = CachedSQLTrackerStore(domain=DOMAIN, dialect="sqlite", db=str(tmp_path / "t.db"))
    monkeypatch.setattr(store, "_last_event_id", lambda sender_id: None)
    start = time.time()
    run(store.save(DialogueStateTracker.from_events("web-gone", session_start(start) + turn("a", start + 1), DOMAIN.slots)))
    assert not store._kept
