"""'Delete my data': everything stops at once, and the erasure pass leaves nothing behind in any store.

Every check queries the stores directly (plain SQL on the app database and on Rasa's own
`events` table, written by a real rasa SQLTrackerStore), on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db import load_models, make_engine, make_session_factory, migrate
from bot.delivery import Courier, WebSender
from bot.erasure import ERASED_TABLES, Eraser, request_erasure, run_erasure_forever
from bot.models import Champion
from bot.outbox import OutboxRepository
from bot.rasa_tracker import TrackerEvents, db_url, read_config
from bot.repository import ChatRepository
from bot.settings import load_settings
from tests.champion_data import (
    champion_tables,
    conversation_events,
    events_in,
    populate,
    rows_for,
    save_conversation,
    table_counts,
    tracker_store,
)

DELAY = 10.0


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated app database."""
    return make_session_factory(engine)


@pytest.fixture
def tracker(tracker_url):
    """Our reader and pruner of Rasa's events table."""
    events = TrackerEvents(tracker_url)
    yield events
    events.close()


# --- coverage -------------------------------------------------------------------------------------


def test_every_table_with_a_path_to_a_champion_is_erased():
    """A new table linked to champions fails here until the erasure pass (and the export) covers it."""
    from bot.my_data import EXPORTED_TABLES

    linked = champion_tables(load_models())
    assert {table for table, _ in ERASED_TABLES} == linked
    assert set(EXPORTED_TABLES) == linked
    # Children before parents, the champion last.
    assert ERASED_TABLES[-1] == ("champions", "delete")


# --- step 1: at once ------------------------------------------------------------------------------


async def test_request_stops_reminders_check_ins_and_unsent_messages_at_once(engine, sessions):
    """Right after 'yes': pending and queued reminders and check-ins are cancelled, unsent messages gone,
    and nothing queued for them afterwards is sent."""
    me = populate(sessions)
    other = populate(sessions)
    before_other = rows_for(engine, other.champion_id, other.ids)

    result = request_erasure(sessions, me.champion_id)
    assert (result.reminders_cancelled, result.check_ins_cancelled, result.messages_removed) == (2, 2, 2)
    with engine.connect() as c:
        reminders = dict(c.execute(text("SELECT id, status FROM reminders WHERE id IN (%s)" % ",".join(map(str, me.ids["reminders"])))).all())
        check_ins = dict(c.execute(text("SELECT id, status FROM pledge_check_ins WHERE champion_id = :c"), {"c": me.champion_id}).all())
        outbound = c.execute(text("SELECT status FROM outbound_messages WHERE champion_id = :c"), {"c": me.champion_id}).scalars().all()
        requested = c.execute(text("SELECT erasure_requested_at FROM champions WHERE id = :c"), {"c": me.champion_id}).scalar_one()
    assert sorted(reminders.values()) == ["cancelled", "cancelled", "sent"]
    assert sorted(check_ins.values()) == ["answered", "cancelled", "cancelled"]
    assert outbound == ["sent"]  # only history is left until the pass
    assert requested is not None
    assert rows_for(engine, other.champion_id, other.ids) == before_other

    # Asking twice keeps the first time.
    again = request_erasure(sessions, me.champion_id, now=datetime.now(timezone.utc) + timedelta(minutes=5))
    assert again.requested_at == result.requested_at

    # A broadcast queued after the request (it was already starting) is skipped, never delivered.
    outbox = OutboxRepository(sessions)
    late = outbox.enqueue(me.champion_id, "News from the team", kind="broadcast", source_key="late-broadcast")
    other_news = outbox.enqueue(other.champion_id, "News from the team", kind="broadcast", source_key="other-broadcast")
    courier = Courier(sessions, {"web": WebSender(outbox)}, load_settings({}))
    try:
        while await courier.run_once():
            pass
    finally:
        courier.close()
    assert outbox.get(late).status == "skipped" and outbox.get(late).last_error == "erasure requested"
    assert outbox.get(other_news).status == "sent"
    assert [m.text for m in ChatRepository(sessions).history(me.champion_id)] == ["my stroke project", "Tell me more"]


def test_scheduler_passes_hand_over_nothing_after_the_request(engine, sessions):
    """The reminder and check-in passes find nothing due for a champion who asked to be deleted."""
    from bot.reminder_scheduler import ReminderDispatcher

    me = populate(sessions)
    request_erasure(sessions, me.champion_id)
    result = ReminderDispatcher(sessions).run_once(datetime.now(timezone.utc) + timedelta(days=5))
    assert result.queued == 0
    try:
        from bot.checkins import CheckInDispatcher
    except ImportError:  # pragma: no cover - check-ins not there yet
        return
    CheckInDispatcher(sessions).run_once(datetime.now(timezone.utc) + timedelta(days=30))
    with engine.connect() as c:
        queued = c.execute(text("SELECT count(*) FROM outbound_messages WHERE champion_id = :c AND status = 'queued'"),
                           {"c": me.champion_id}).scalar_one()
    assert queued == 0


# --- step 2: the pass -----------------------------------------------------------------------------


def test_the_pass_leaves_nothing_behind_in_any_store(engine, sessions, tracker, tracker_url):
    """After the pass, no table and no Rasa event holds anything of the champion; others are untouched."""
    me = populate(sessions)
    other = populate(sessions, channel="telegram")
    store = tracker_store(tracker_url)
    start = time.time() - 600
    save_conversation(store, me.sender_id, conversation_events(["hello", "delete my data"], start))
    save_conversation(store, other.sender_id, conversation_events(["hi"], start))
    store.engine.dispose()

    requested = datetime.now(timezone.utc)
    request_erasure(sessions, me.champion_id, now=requested)
    # The same turn, after the action: Rasa saves the reply's events and the web chat stores the reply.
    store = tracker_store(tracker_url)
    save_conversation(store, me.sender_id, conversation_events(["hello", "delete my data", "yes"], start))
    store.engine.dispose()
    ChatRepository(sessions).add_message(me.champion_id, "out", "Done: I'm deleting everything.")

    others_before = rows_for(engine, other.champion_id, other.ids)
    other_events = events_in(tracker_url, other.sender_id)
    eraser = Eraser(sessions, tracker, DELAY)
    assert eraser.run_once(requested + timedelta(seconds=2)) == []  # too soon: their turn may not be over
    assert rows_for(engine, me.champion_id)["champions"] == 1

    totals_before = table_counts(engine)
    [report] = eraser.run_once(datetime.now(timezone.utc) + timedelta(seconds=DELAY + 1))
    assert report.champion_id == me.champion_id and report.events == 3 + 4 * 3

    assert set(rows_for(engine, me.champion_id, me.ids).values()) == {0}
    assert events_in(tracker_url, me.sender_id) == []
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM chat_messages WHERE text LIKE 'Done:%'")).scalar_one() == 0
        # The team's broadcast stays, without its link to the champion; the group stays.
        assert c.execute(text("SELECT target_champion_id FROM broadcasts WHERE id = :b"),
                         {"b": me.ids["broadcast"][0]}).scalar_one() is None
        assert c.execute(text("SELECT count(*) FROM groups WHERE id = :g"), {"g": me.ids["group"][0]}).scalar_one() == 1
        assert c.execute(text("SELECT count(*) FROM telegram_callbacks")).scalar_one() == 2
    assert rows_for(engine, other.champion_id, other.ids) == others_before
    assert events_in(tracker_url, other.sender_id) == other_events
    totals_after = table_counts(engine)
    removed = {t: totals_before[t] - totals_after[t] for t in totals_before if totals_before[t] != totals_after[t]}
    assert removed == {t: n for t, n in report.rows.items() if n and t != "broadcasts"}


def test_what_they_send_after_the_pass_starts_a_fresh_record(engine, sessions, tracker, tracker_url):
    """A message after the erasure: a new champion with no history, and a new Rasa conversation that stays."""
    me = populate(sessions)
    store = tracker_store(tracker_url)
    save_conversation(store, me.sender_id, conversation_events(["hello"], time.time() - 300))
    request_erasure(sessions, me.champion_id)
    erased_at = datetime.now(timezone.utc) + timedelta(seconds=DELAY + 1)
    eraser = Eraser(sessions, tracker, DELAY)
    assert len(eraser.run_once(erased_at)) == 1

    chats = ChatRepository(sessions)
    fresh = chats.get_or_create_champion(me.channel, me.external_id)
    # A new row (SQLite may hand out the same id again): nothing of the old one.
    assert fresh.erasure_requested_at is None and fresh.organisation is None and fresh.display_name is None
    assert chats.history(fresh) == []
    save_conversation(store, me.sender_id, conversation_events(["hi again"], erased_at.timestamp() + 5))
    store.engine.dispose()
    assert eraser.run_once(erased_at + timedelta(seconds=30)) == []  # nothing to erase; the fresh record stays
    assert len(events_in(tracker_url, me.sender_id)) == 3 + 4
    assert rows_for(engine, fresh.id)["champions"] == 1


def test_the_pass_waits_for_a_pause_but_not_forever(sessions):
    """A champion still chatting is erased once they pause for the delay, or 60 delays after asking."""
    me = populate(sessions)
    asked = datetime.now(timezone.utc)
    request_erasure(sessions, me.champion_id, now=asked)
    eraser = Eraser(sessions, None, DELAY)

    def chat_at(moment):
        """The champion's last message was at moment."""
        with sessions() as s:
            s.get(Champion, me.champion_id).last_active_at = moment
            s.commit()

    chat_at(asked + timedelta(seconds=8))
    assert eraser.due(asked + timedelta(seconds=12)) == []
    assert eraser.due(asked + timedelta(seconds=18.5)) == [me.champion_id]
    chat_at(asked + timedelta(seconds=599))
    assert eraser.due(asked + timedelta(seconds=599.5)) == []
    assert eraser.due(asked + timedelta(seconds=600)) == [me.champion_id]


def test_a_late_save_that_puts_the_conversation_back_is_deleted_again(sessions, tracker, tracker_url):
    """A Rasa turn that loaded the conversation before the pass and saved after it: the recheck deletes it."""
    me = populate(sessions)
    store = tracker_store(tracker_url)
    old = conversation_events(["hello", "delete my data"], time.time() - 300)
    save_conversation(store, me.sender_id, old)
    request_erasure(sessions, me.champion_id)
    erased_at = datetime.now(timezone.utc) + timedelta(seconds=DELAY + 1)
    eraser = Eraser(sessions, tracker, DELAY)
    eraser.run_once(erased_at)
    assert events_in(tracker_url, me.sender_id) == []

    # The stale turn saves: Rasa counts 0 stored events and inserts the whole session again, plus its reply.
    save_conversation(store, me.sender_id, old + conversation_events(["one more"], erased_at.timestamp() + 1)[3:])
    store.engine.dispose()
    assert len(events_in(tracker_url, me.sender_id)) > 0
    eraser.run_once(erased_at + timedelta(seconds=1))
    assert events_in(tracker_url, me.sender_id) == []
    # The watch ends after a while.
    eraser.run_once(erased_at + eraser.recheck_for + timedelta(seconds=1))
    assert eraser.watching == ()


def test_conversation_store_down_keeps_everything_for_the_next_pass(tmp_path, sessions, tracker_url):
    """If Rasa's store can't be reached, the app rows stay too (they hold the sender ids); the next pass erases."""
    me = populate(sessions)
    store = tracker_store(tracker_url)
    save_conversation(store, me.sender_id, conversation_events(["hello"], time.time() - 300))
    store.engine.dispose()
    request_erasure(sessions, me.champion_id)
    broken = TrackerEvents(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'rasa.db'}")
    later = datetime.now(timezone.utc) + timedelta(seconds=DELAY + 1)
    assert Eraser(sessions, broken, DELAY).run_once(later) == []
    with sessions() as s:
        assert s.get(Champion, me.champion_id) is not None
    working = TrackerEvents(tracker_url)
    try:
        assert len(Eraser(sessions, working, DELAY).run_once(later)) == 1
    finally:
        working.close()
    assert events_in(tracker_url, me.sender_id) == []


# --- the tracker store's address, from Rasa's endpoints file --------------------------------------


def _endpoints(tmp_path: Path, body: str) -> Path:
    """An endpoints file with body in tmp_path."""
    path = tmp_path / "endpoints.yml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("section", [
    {"dialect": "sqlite", "db": "data/rasa_tracker.db"},
    {"dialect": "postgresql", "url": "db.example", "port": 5433, "db": "rasa", "username": "rasa", "password": "s3cret"},
    {"dialect": "postgresql", "url": "db.example:6543", "db": "rasa", "username": "u", "login_db": "postgres"},
    {"dialect": "postgresql", "url": "postgresql://u:p@h:1/x"},
    {"dialect": "postgresql", "host": "h", "db": "d", "query": {"sslmode": "require"}},
])
def test_tracker_address_matches_rasas_own(section):
    """Our address for the events table is the one Rasa's SQLTrackerStore works in."""
    from rasa.core.tracker_store import SQLTrackerStore

    ours = db_url(
        dialect=section.get("dialect"), host=section.get("url") or section.get("host"), port=section.get("port"),
        db=section.get("db") or "rasa.db", username=section.get("username"), password=section.get("password"),
        login_db=section.get("login_db"), query=section.get("query"),
    )
    theirs = SQLTrackerStore.get_db_url(
        section.get("dialect"), section.get("url") or section.get("host"), section.get("port"),
        section.get("db") or "rasa.db", section.get("username"), section.get("password"), None, section.get("query"),
    )
    expected = theirs if isinstance(theirs, str) else theirs.render_as_string(hide_password=False)
    assert ours.render_as_string(hide_password=False) == expected


def test_endpoints_file_is_read_as_rasa_reads_it(tmp_path, monkeypatch):
    """${VAR} comes from the environment; url is the host; no tracker store means none to prune."""
    monkeypatch.setenv("TRACKER_PASSWORD", "pa55")
    config = read_config(_endpoints(tmp_path, (
        "tracker_store:\n  type: SQL\n  dialect: postgresql\n  url: ${TRACKER_HOST_X}\n"
    )), environ={"TRACKER_HOST_X": "pg.internal"})
    assert config.kind == "sql" and config.url.host == "pg.internal" and config.url.database == "rasa.db"
    config = read_config(_endpoints(tmp_path, (
        "tracker_store:\n  type: sql\n  dialect: postgresql\n  url: pg\n  db: tracker\n"
        "  username: rasa\n  password: ${TRACKER_PASSWORD}\n"
    )))
    assert config.url.password == "pa55" and config.url.database == "tracker"
    assert read_config(_endpoints(tmp_path, "action_endpoint:\n  url: http://x\n")).kind is None
    assert read_config(_endpoints(tmp_path, "tracker_store:\n  type: redis\n  url: r\n")).kind == "redis"
    settings = load_settings({"RASA_ENDPOINTS": str(tmp_path / "endpoints.yml")})
    assert TrackerEvents.from_settings(settings) is None  # redis: reported, left alone
    # The repository's own endpoints file: SQLite under data/.
    repo = read_config(Path(__file__).resolve().parent.parent / "endpoints.yml")
    assert repo.kind == "sql" and repo.url.render_as_string() == "sqlite:///data/rasa_tracker.db"


# --- the delivery process runs the pass ---------------------------------------------------------


async def test_the_delivery_process_erases_a_champion_who_asked(tmp_path):
    """bot.delivery.serve runs the erasure pass: the champion and their conversation go a delay after asking."""
    from bot.delivery import serve

    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    rasa_url = f"sqlite:///{tmp_path / 'rasa_tracker.db'}"
    endpoints = _endpoints(tmp_path, f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp_path / 'rasa_tracker.db'}\n")
    await asyncio.to_thread(migrate, app_url)
    engine = make_engine(app_url)
    sessions = make_session_factory(engine)
    me = populate(sessions, now=datetime.now(timezone.utc) - timedelta(seconds=5))
    from rasa.shared.core.trackers import DialogueStateTracker

    store = tracker_store(rasa_url)
    await store.save(DialogueStateTracker.from_events(me.sender_id, conversation_events(["hello"], time.time() - 60)))
    store.engine.dispose()
    request_erasure(sessions, me.champion_id)
    settings = load_settings({"DATA_DIR": str(tmp_path), "DATABASE_URL": app_url, "RASA_ENDPOINTS": str(endpoints),
                              "ERASURE_DELAY_SECONDS": "0.2", "DELIVERY_POLL_SECONDS": "0.05"})
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(settings, stop))
    try:
        deadline = time.monotonic() + 20
        while rows_for(engine, me.champion_id)["champions"]:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        engine.dispose()
    assert events_in(rasa_url, me.sender_id) == []


async def test_run_erasure_forever_stops_when_asked(tmp_path, sessions):
    """The pass loop ends promptly when the delivery process stops (Rasa keeping conversations in memory)."""
    settings = load_settings({"RASA_ENDPOINTS": str(_endpoints(tmp_path, "action_endpoint:\n  url: http://x\n"))})
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_erasure_forever(settings, sessions, stop, every=0.05))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
