"""Meetings and reminders in the app database, on SQLite and on the local PostgreSQL server."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, inspect, select, text

from bot.db import alembic_config, load_models, make_engine, make_session_factory, migrate
from bot.delivery_models import OutboundMessage
from bot.models import Champion
from bot.outbox import OutboxRepository
from bot.plans import PlanRepository
from bot.reminder_models import Meeting, Reminder
from bot.reminder_times import Offset
from bot.reminders import ReminderRepository
from bot.repository import ChatRepository

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)          # Monday
THURSDAY_2PM = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated database."""
    return make_session_factory(engine)


@pytest.fixture
def repo(sessions):
    """A ReminderRepository on the migrated database."""
    return ReminderRepository(sessions)


@pytest.fixture
def champion(sessions):
    """A web champion's id."""
    return ChatRepository(sessions).get_or_create_champion("web", "rem-1").id


def kinds_and_times(view):
    """[(kind, due_at, status)] of a meeting's reminders."""
    return [(r.kind, r.due_at, r.status) for r in view.reminders]


# --- schema -------------------------------------------------------------------------------------


def test_migration_0004_creates_the_tables_and_matches_the_models(database_url):
    """0004 adds meetings and reminders exactly as bot/reminder_models.py describes; 0003 removes them again."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert {"meetings", "reminders"} <= set(inspect(connection).get_table_names())
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, load_models()) == []
        command.downgrade(alembic_config(database_url), "0003")
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert not {"meetings", "reminders"} & tables and "outbound_messages" in tables
        migrate(database_url)
        with engine.connect() as connection:
            assert {"meetings", "reminders"} <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_the_database_refuses_unknown_kinds_and_statuses(sessions, repo, champion):
    """The check constraints hold in the database itself."""
    from sqlalchemy.exc import IntegrityError

    meeting = repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    for values in ({"kind": "whenever"}, {"status": "lost"}):
        with sessions() as session, pytest.raises(IntegrityError):
            session.execute(
                Reminder.__table__.update().where(Reminder.meeting_id == meeting.id).values(**values)
            )
            session.commit()


# --- setting ------------------------------------------------------------------------------------


def test_default_reminders_a_day_and_an_hour_before_and_after(repo, champion):
    """A new meeting gets a day-before, an hour-before and an after-meeting prompt, stored in UTC."""
    meeting = repo.create_meeting(champion, "  the PRG   meeting ", THURSDAY_2PM, now=NOW)
    assert meeting.description == "the PRG meeting"
    assert meeting.starts_at == THURSDAY_2PM and meeting.starts_at.tzinfo is not None
    assert kinds_and_times(meeting) == [
        ("day_before", THURSDAY_2PM - timedelta(days=1), "pending"),
        ("hour_before", THURSDAY_2PM - timedelta(hours=1), "pending"),
        ("after_meeting", THURSDAY_2PM + timedelta(hours=3), "pending"),
    ]
    assert [r.source_key for r in meeting.reminders] == [f"reminder:{r.id}" for r in meeting.reminders]


def test_chosen_offsets_and_the_clock_change(repo, champion):
    """Chosen offsets replace the defaults; a day before counts on the London calendar across the change."""
    monday_9am_bst = datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    meeting = repo.create_meeting(
        champion, "patient panel", monday_9am_bst, offsets=[Offset(7 * 1440), Offset(1440), Offset(120)],
        after_meeting=False, now=datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert kinds_and_times(meeting) == [
        ("custom", datetime(2026, 3, 23, 9, 0, tzinfo=UTC), "pending"),       # 9am GMT
        ("day_before", datetime(2026, 3, 29, 8, 0, tzinfo=UTC), "pending"),   # 9am BST
        ("custom", monday_9am_bst - timedelta(hours=2), "pending"),
    ]


def test_reminders_already_gone_are_not_set(repo, champion):
    """A meeting in 30 minutes gets no day-before or hour-before reminder, only the prompt afterwards."""
    meeting = repo.create_meeting(champion, "soon", NOW + timedelta(minutes=30), now=NOW)
    assert [r.kind for r in meeting.reminders] == ["after_meeting"]


def test_refuses_what_cannot_be_a_meeting(repo, sessions, champion):
    """A meeting in the past, without a description, in a naive time or in someone else's project is refused."""
    with pytest.raises(ValueError):
        repo.create_meeting(champion, "gone", NOW - timedelta(minutes=1), now=NOW)
    with pytest.raises(ValueError):
        repo.create_meeting(champion, "   ", THURSDAY_2PM, now=NOW)
    with pytest.raises(ValueError):
        repo.create_meeting(champion, "naive", datetime(2026, 11, 26, 14, 0), now=NOW)
    with pytest.raises(ValueError):
        repo.create_meeting(champion, "zone", THURSDAY_2PM, time_zone="Nowhere/Special", now=NOW)
    other = ChatRepository(sessions).get_or_create_champion("web", "someone-else").id
    project = PlanRepository(sessions).create_project(other, "Their project", "parts")
    with pytest.raises(LookupError):
        repo.create_meeting(champion, "not mine", THURSDAY_2PM, project_id=project.id, now=NOW)


def test_unusual_descriptions_round_trip(repo, champion):
    """Emoji, other scripts and injection strings are stored as typed (and long ones cut to 200 characters)."""
    for description in ["PRG 😀", "ملتقى المرضى", "'; DROP TABLE meetings; --", "<b>panel</b>"]:
        assert repo.create_meeting(champion, description, THURSDAY_2PM, now=NOW).description == description
    assert len(repo.create_meeting(champion, "x" * 500, THURSDAY_2PM, now=NOW).description) == 200


# --- listing and cancelling ---------------------------------------------------------------------


def test_upcoming_lists_only_the_champions_future_meetings(repo, sessions, champion):
    """Soonest first; cancelled, past and other champions' meetings are left out."""
    later = repo.create_meeting(champion, "later", THURSDAY_2PM + timedelta(days=7), now=NOW)
    sooner = repo.create_meeting(champion, "sooner", THURSDAY_2PM, now=NOW)
    cancelled = repo.create_meeting(champion, "cancelled", THURSDAY_2PM, now=NOW)
    repo.cancel_meeting(champion, cancelled.id, now=NOW)
    other = ChatRepository(sessions).get_or_create_champion("telegram", "99").id
    repo.create_meeting(other, "theirs", THURSDAY_2PM, now=NOW)
    assert [m.id for m in repo.upcoming(champion, now=NOW)] == [sooner.id, later.id]
    assert [m.id for m in repo.upcoming(champion, now=THURSDAY_2PM + timedelta(minutes=1))] == [later.id]


def test_cancel_one_meeting_one_reminder_or_all(repo, sessions, champion):
    """Cancelling stops the pending reminders; nobody can cancel another champion's meeting."""
    first = repo.create_meeting(champion, "first", THURSDAY_2PM, now=NOW)
    second = repo.create_meeting(champion, "second", THURSDAY_2PM + timedelta(days=1), now=NOW)
    third = repo.create_meeting(champion, "third", THURSDAY_2PM + timedelta(days=2), now=NOW)
    other = ChatRepository(sessions).get_or_create_champion("web", "intruder").id
    assert not repo.cancel_meeting(other, first.id, now=NOW)
    assert not repo.cancel_meeting(champion, "not a number", now=NOW)
    assert repo.cancel_reminder(champion, first.reminders[0].id, now=NOW)
    assert not repo.cancel_reminder(champion, first.reminders[0].id, now=NOW)  # already cancelled
    assert [r.status for r in repo.meeting(champion, first.id).reminders] == ["cancelled", "pending", "pending"]
    assert repo.cancel_meeting(champion, first.id, now=NOW)
    assert not repo.cancel_meeting(champion, first.id, now=NOW)
    assert {r.status for r in repo.meeting(champion, first.id).reminders} == {"cancelled"}
    assert repo.cancel_all(champion, now=NOW) == 2
    assert repo.upcoming(champion, now=NOW) == []
    assert {r.status for m in (second, third) for r in repo.meeting(champion, m.id).reminders} == {"cancelled"}
    assert repo.due(now=THURSDAY_2PM + timedelta(days=30)) == []


# --- changing the time and snoozing -------------------------------------------------------------


def test_reschedule_moves_every_reminder(repo, champion):
    """A new time moves each reminder; one that already went goes again under a new key; one now gone is cancelled."""
    meeting = repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    day_before = meeting.reminders[0]
    wednesday = THURSDAY_2PM - timedelta(days=1, minutes=-1)
    assert repo.mark_queued(day_before.id, 0, None, now=wednesday)
    moved = repo.reschedule(champion, meeting.id, THURSDAY_2PM + timedelta(days=7), now=wednesday)
    assert moved.starts_at == THURSDAY_2PM + timedelta(days=7)
    assert kinds_and_times(moved) == [
        ("day_before", THURSDAY_2PM + timedelta(days=6), "pending"),
        ("hour_before", THURSDAY_2PM + timedelta(days=7, hours=-1), "pending"),
        ("after_meeting", THURSDAY_2PM + timedelta(days=7, hours=3), "pending"),
    ]
    assert moved.reminders[0].source_key == f"reminder:{day_before.id}:1"
    sooner = repo.reschedule(champion, meeting.id, wednesday + timedelta(hours=2), now=wednesday)
    assert [(r.kind, r.status) for r in sooner.reminders] == [
        ("day_before", "cancelled"), ("hour_before", "pending"), ("after_meeting", "pending"),
    ]
    with pytest.raises(ValueError):
        repo.reschedule(champion, meeting.id, wednesday - timedelta(hours=1), now=wednesday)
    assert repo.reschedule(champion, 12345, THURSDAY_2PM, now=NOW) is None


def test_snooze_sends_again_later(repo, champion):
    """A snoozed reminder goes again at the snooze time under a new key; a snooze after the meeting is refused."""
    meeting = repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    day_before = meeting.reminders[0]
    wednesday = day_before.due_at
    assert repo.mark_queued(day_before.id, 0, None, now=wednesday)
    until = wednesday + timedelta(hours=1)
    snoozed = repo.snooze(champion, day_before.id, until, now=wednesday)
    assert (snoozed.status, snoozed.due_at, snoozed.snoozed_until, snoozed.generation) == ("pending", until, until, 1)
    assert [d.source_key for d in repo.due(now=until)] == [f"reminder:{day_before.id}:1"]
    with pytest.raises(ValueError):
        repo.snooze(champion, day_before.id, THURSDAY_2PM + timedelta(minutes=5), now=wednesday)
    with pytest.raises(ValueError):
        repo.snooze(champion, day_before.id, wednesday - timedelta(minutes=5), now=wednesday)
    assert repo.snooze(champion, 999_999, until, now=wednesday) is None


# --- the scheduler's side -----------------------------------------------------------------------


def test_due_hands_over_once(repo, champion):
    """Due reminders come oldest first; marking is conditional, so a second hand-over changes nothing."""
    meeting = repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    assert repo.due(now=NOW) == []
    due = repo.due(now=THURSDAY_2PM - timedelta(minutes=30))
    assert [d.kind for d in due] == ["day_before", "hour_before"]
    assert due[0].description == "PRG" and due[0].starts_at == THURSDAY_2PM and due[0].champion_id == champion
    assert repo.mark_queued_many([(due[0].id, 0, None, False), (due[1].id, 0, None, True)]) == 2
    assert repo.mark_queued_many([(due[0].id, 0, None, False)]) == 0
    assert repo.mark_missed(due[1].id, 0) is False
    assert repo.mark_queued(meeting.reminders[2].id, 5, None) is False  # wrong generation
    assert repo.due(now=THURSDAY_2PM - timedelta(minutes=30)) == []
    assert repo.mark_missed(meeting.reminders[2].id, 0)
    views = repo.meeting(champion, meeting.id).reminders
    assert [(r.status, r.late) for r in views] == [("queued", False), ("queued", True), ("missed", False)]
    assert repo.pending_count() == 0


def test_sync_sent_follows_the_delivery_layer(repo, sessions, champion):
    """A queued reminder becomes sent once its outbound message is sent."""
    meeting = repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    reminder = meeting.reminders[0]
    outbox = OutboxRepository(sessions)
    outbound_id = outbox.enqueue(champion, "Tomorrow: PRG", kind="reminder", source_key=reminder.source_key)
    repo.mark_queued(reminder.id, 0, outbound_id)
    assert repo.sync_sent() == 0
    with sessions() as session:
        session.execute(OutboundMessage.__table__.update().where(OutboundMessage.id == outbound_id).values(status="sent"))
        session.commit()
    assert repo.sync_sent() == 1
    assert repo.meeting(champion, meeting.id).reminders[0].status == "sent"


# --- forgetting ---------------------------------------------------------------------------------


def test_deleting_a_champion_removes_their_meetings_and_reminders(repo, sessions, champion):
    """ON DELETE CASCADE: no reminder of a deleted champion is left to fire."""
    keeper = ChatRepository(sessions).get_or_create_champion("web", "keeper").id
    repo.create_meeting(champion, "PRG", THURSDAY_2PM, now=NOW)
    repo.create_meeting(keeper, "panel", THURSDAY_2PM, now=NOW)
    with sessions() as session:
        session.execute(delete(Champion).where(Champion.id == champion))
        session.commit()
    with sessions() as session:
        owners = set(session.execute(select(Meeting.champion_id)).scalars())
        reminders = session.execute(text("SELECT COUNT(*) FROM reminders")).scalar()
    assert owners == {keeper} and reminders == 3
    assert [d.champion_id for d in repo.due(now=THURSDAY_2PM)] == [keeper, keeper]


def test_deleting_a_project_keeps_the_meeting(repo, sessions, champion):
    """A meeting outlives the project it belonged to (project_id becomes empty)."""
    project = PlanRepository(sessions).create_project(champion, "Stroke clinic", "parts")
    meeting = repo.create_meeting(champion, "stroke project meeting", THURSDAY_2PM, project_id=project.id, now=NOW)
    assert meeting.project_id == project.id
    with sessions() as session:
        session.execute(text("DELETE FROM projects WHERE id = :id"), {"id": project.id})
        session.commit()
    assert repo.meeting(champion, meeting.id).project_id is None
