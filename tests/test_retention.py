"""RETENTION_DAYS: conversation records older than the retention period are deleted by a scheduled clean-up.

Checked by querying the stores directly (the app database and Rasa's own events table, written by a
real rasa SQLTrackerStore), on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from bot.db import make_session_factory
from bot.outbox import OutboxRepository
from bot.rasa_tracker import TrackerEvents
from bot.repository import ChatRepository
from bot.retention import Retention, run_retention_forever
from bot.settings import load_settings
from tests.champion_data import (
    conversation_events,
    events_in,
    save_conversation,
    tracker_store,
)

DAYS = 30


def _count(engine, sql: str) -> int:
    """One count, queried directly."""
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar_one()


def test_records_older_than_the_retention_period_go_and_newer_ones_stay(engine, tracker_url):
    """Old transcript lines, Rasa events and sent messages are deleted; recent ones, plans and queued messages stay."""
    sessions = make_session_factory(engine)
    now = datetime.now(timezone.utc)
    old, recent = now - timedelta(days=DAYS + 5), now - timedelta(days=DAYS - 5)
    chats = ChatRepository(sessions)
    champion = chats.get_or_create_champion("web", "retention-1")
    for moment, words in ((old, "old question"), (recent, "recent question")):
        message = chats.add_message(champion, "in", words)
        with engine.begin() as connection:
            connection.execute(text("UPDATE chat_messages SET created_at = :t WHERE id = :i"), {"t": moment, "i": message.id})
    outbox = OutboxRepository(sessions)
    outbox.enqueue_many([
        {"champion_id": champion.id, "text": "old news", "kind": "broadcast", "source_key": "r:old-sent", "not_before": old},
        {"champion_id": champion.id, "text": "old but queued", "kind": "broadcast", "source_key": "r:old-queued", "not_before": old},
        {"champion_id": champion.id, "text": "recent news", "kind": "broadcast", "source_key": "r:recent", "not_before": recent},
    ])
    with engine.begin() as connection:
        connection.execute(text("UPDATE outbound_messages SET created_at = :t WHERE source_key LIKE 'r:old%'"), {"t": old})
        connection.execute(text("UPDATE outbound_messages SET created_at = :t WHERE source_key = 'r:recent'"), {"t": recent})
        connection.execute(text("UPDATE outbound_messages SET status = 'sent' WHERE source_key IN ('r:old-sent', 'r:recent')"))
        connection.execute(text(
            "INSERT INTO delivery_attempts (outbound_id, outcome, detail, at) "
            "SELECT id, 'sent', NULL, :t FROM outbound_messages WHERE source_key = 'r:old-sent'"), {"t": old})
        connection.execute(text(
            "INSERT INTO projects (champion_id, name, about, created_at, updated_at) VALUES (:c, 'Old plan', '', :t, :t)"),
            {"c": champion.id, "t": old})

    store = tracker_store(tracker_url)
    save_conversation(store, "web-retention-1", conversation_events(["old hello"], old.timestamp()))
    save_conversation(store, "web-retention-2", conversation_events(["recent hello"], recent.timestamp()))
    store.engine.dispose()
    tracker = TrackerEvents(tracker_url)
    try:
        report = Retention(sessions, tracker, DAYS).run_once(now)
    finally:
        tracker.close()

    assert report.chat_messages == 1 and report.outbound_messages == 1 and report.delivery_attempts == 1
    assert _count(engine, "SELECT count(*) FROM chat_messages WHERE text = 'old question'") == 0
    assert _count(engine, "SELECT count(*) FROM chat_messages WHERE text = 'recent question'") == 1
    assert _count(engine, "SELECT count(*) FROM outbound_messages WHERE source_key = 'r:old-sent'") == 0
    assert _count(engine, "SELECT count(*) FROM outbound_messages WHERE source_key = 'r:old-queued'") == 1
    assert _count(engine, "SELECT count(*) FROM outbound_messages WHERE source_key = 'r:recent'") == 1
    assert _count(engine, "SELECT count(*) FROM delivery_attempts") == 0
    assert _count(engine, "SELECT count(*) FROM projects WHERE name = 'Old plan'") == 1
    assert events_in(tracker_url, "web-retention-1") == []
    assert events_in(tracker_url, "web-retention-2") != []
    assert report.tracker_events > 0


async def test_the_delivery_process_clean_up_runs_on_its_own(engine, tmp_path, monkeypatch):
    """run_retention_forever cleans up at start and then on its schedule, and stops when asked."""
    sessions = make_session_factory(engine)
    chats = ChatRepository(sessions)
    champion = chats.get_or_create_champion("web", "retention-3")
    message = chats.add_message(champion, "in", "a very old line")
    with engine.begin() as connection:
        connection.execute(text("UPDATE chat_messages SET created_at = :t WHERE id = :i"),
                           {"t": datetime.now(timezone.utc) - timedelta(days=400), "i": message.id})
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text("action_endpoint:\n  url: http://127.0.0.1:1/webhook\n")  # no tracker store: app data only
    settings = load_settings({"RASA_ENDPOINTS": str(endpoints), "RETENTION_DAYS": "365",
                              "RETENTION_CHECK_SECONDS": "1", "DATA_DIR": str(tmp_path)})
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_retention_forever(settings, sessions, stop))
    deadline = time.monotonic() + 10
    while _count(engine, "SELECT count(*) FROM chat_messages WHERE text = 'a very old line'") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert _count(engine, "SELECT count(*) FROM chat_messages WHERE text = 'a very old line'") == 0


def test_retention_setting_is_checked():
    """RETENTION_DAYS below one day is refused with a clear message."""
    from bot.settings import SettingsError

    with pytest.raises(SettingsError, match="RETENTION_DAYS"):
        load_settings({"RETENTION_DAYS": "0"})
    assert load_settings({}).retention_days == 365
