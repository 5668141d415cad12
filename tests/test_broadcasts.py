"""Broadcasts: targeting, opt-out, scheduling, cancelling, idempotent start and reports, on SQLite and PostgreSQL."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Dict, List

import pytest
from sqlalchemy import event, select, update

from bot.broadcasts import (
    MAX_TEXT_CHARS,
    Broadcasts,
    Target,
    finish_sent_broadcasts,
    source_key,
    start_due_broadcasts,
)
from bot.db import make_session_factory
from bot.delivery_models import DeliveryAttempt, OutboundMessage
from bot.groups import GroupRepository, TeamInputError
from bot.models import Champion, utcnow
from bot.repository import ChatRepository
from bot.team_auth import NotAuthorised, authorise
from bot.team_models import Broadcast

TOKEN = "team-token-for-tests"


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated database."""
    return make_session_factory(engine)


@pytest.fixture
def auth():
    """A pass for the engagement team."""
    return authorise(TOKEN, TOKEN)


@pytest.fixture
def tools(sessions):
    """The broadcast functions on the migrated database."""
    return Broadcasts(sessions)


@pytest.fixture
def people(sessions, auth) -> Dict[str, int]:
    """Champions in groups: one said stop, one blocked the bot, one is in no group."""
    chats = ChatRepository(sessions)
    groups = GroupRepository(sessions)
    ids = {
        name: chats.get_or_create_champion(channel, name).id
        for name, channel in [
            ("ana", "telegram"), ("ben", "web"), ("cat", "telegram"), ("dev", "telegram"),
            ("eve", "web"), ("fay", "telegram"), ("gus", "telegram"),
        ]
    }
    chats.set_opted_out(ids["fay"], True)
    chats.set_reachable(ids["gus"], False, "Forbidden: bot was blocked by the user")
    for kind, name, members in [
        ("organisation", "Leeds Teaching Hospitals", ["ana", "ben", "fay"]),
        ("cohort", "Spring 2026", ["ben", "cat", "gus"]),
        ("project", "Stroke pathway", ["dev"]),
    ]:
        groups.create_group(kind, name, auth=auth)
        groups.add_members(kind, name, [ids[m] for m in members], auth=auth)
    return ids


def recipients(sessions, broadcast_id: int) -> List[int]:
    """Champion ids with an outbound message for the broadcast, sorted."""
    with sessions() as session:
        return sorted(
            session.execute(
                select(OutboundMessage.champion_id).where(OutboundMessage.broadcast_id == broadcast_id)
            ).scalars()
        )


def stored(sessions, broadcast_id: int) -> Broadcast:
    """The broadcast row as stored."""
    with sessions() as session:
        return session.get(Broadcast, broadcast_id)


# --- targeting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "to, expected",
    [
        ("all", ["ana", "ben", "cat", "dev", "eve"]),
        ("group:organisation:leeds teaching hospitals", ["ana", "ben"]),
        ("group:cohort:Spring 2026", ["ben", "cat"]),
        ("group:project:STROKE PATHWAY", ["dev"]),
    ],
)
def test_each_target_reaches_exactly_its_champions(sessions, tools, people, auth, to, expected):
    """Everyone, an organisation, a cohort or a project: those and only those get one message each."""
    info = tools.create_broadcast("Papers are out", Target.parse(to), "Alice", auth=auth)
    assert start_due_broadcasts(sessions) == 1
    assert recipients(sessions, info.id) == sorted(people[n] for n in expected)
    with sessions() as session:
        rows = session.execute(select(OutboundMessage).where(OutboundMessage.broadcast_id == info.id)).scalars().all()
    assert {(r.kind, r.status, r.text) for r in rows} == {("broadcast", "queued", "Papers are out")}
    assert {r.source_key for r in rows} == {source_key(info.id, r.champion_id) for r in rows}


def test_one_champion_target_and_left_out_counts(sessions, tools, people, auth):
    """A broadcast to one champion reaches them; to someone who said stop, nobody, and it says so."""
    one = tools.create_broadcast("Just you", Target.champion(people["eve"]), "Alice", auth=auth)
    stopped = tools.create_broadcast("Not you", Target.champion(people["fay"]), "Alice", auth=auth)
    start_due_broadcasts(sessions)
    assert recipients(sessions, one.id) == [people["eve"]]
    assert recipients(sessions, stopped.id) == []
    row = stored(sessions, stopped.id)
    assert (row.queued_count, row.opted_out_count, row.unreachable_count) == (0, 1, 0)
    assert row.status == "sent"  # nothing left to send


def test_preview_counts_who_is_left_out_and_shows_text_verbatim(tools, people):
    """Preview: who would get it, who said stop, who can't be reached, and the exact text."""
    text = "<b>Meeting</b> & agenda 🙂\n'; DROP TABLE champions; --\n{{name}} שלום 你好 *not bold*"
    preview = tools.preview(Target.everyone(), text)
    assert (preview.recipients, preview.opted_out, preview.unreachable) == (5, 1, 1)
    assert preview.by_channel == {"telegram": 3, "web": 2}
    assert preview.text == text and preview.target == "everyone"
    cohort = tools.preview(Target.group("cohort", "spring 2026"), text)
    assert (cohort.recipients, cohort.opted_out, cohort.unreachable, cohort.target) == (2, 0, 1, "cohort: Spring 2026")
    organisation = tools.preview(Target.group("organisation", "Leeds Teaching Hospitals"), "Hi")
    assert (organisation.recipients, organisation.opted_out) == (2, 1)


def test_markup_and_injection_text_is_stored_and_queued_verbatim(sessions, tools, people, auth):
    """What the team typed is what champions get (only control characters are removed)."""
    text = "<script>alert(1)</script> **x** _y_ [link](javascript:alert(1)) 👨‍👩‍👧 مرحبا\n\tindented"
    info = tools.create_broadcast(text + "\x00\x1b[31m\x07", Target.champion(people["ana"]), "Alice", auth=auth)
    assert info.text == text + "[31m"
    start_due_broadcasts(sessions)
    with sessions() as session:
        assert session.execute(select(OutboundMessage.text)).scalar_one() == text + "[31m"


def test_opting_out_after_scheduling_still_leaves_them_out(sessions, tools, people, auth):
    """Who said stop is decided when the broadcast starts, not when it was written."""
    chats = ChatRepository(sessions)
    info = tools.create_broadcast("Later", Target.everyone(), "Alice", utcnow() + timedelta(hours=1), auth=auth)
    chats.set_opted_out(people["ana"], True)
    chats.set_opted_out(people["fay"], False)  # said /start again
    start_due_broadcasts(sessions, now=utcnow() + timedelta(hours=2))
    assert people["ana"] not in recipients(sessions, info.id)
    assert people["fay"] in recipients(sessions, info.id)
    assert stored(sessions, info.id).opted_out_count == 1


# --- bad input ----------------------------------------------------------------------------------


def test_bad_text_is_refused_with_a_reason(tools, people, auth):
    """Empty, blank, control-only or over-long text is refused; exactly the limit is fine."""
    target = Target.everyone()
    for text in ("", "   \n\t ", "\x00\x07"):
        with pytest.raises(TeamInputError, match="empty"):
            tools.create_broadcast(text, target, "Alice", auth=auth)
        with pytest.raises(TeamInputError, match="empty"):
            tools.preview(target, text)
    with pytest.raises(TeamInputError, match="4,001 characters long; keep it to 4,000"):
        tools.create_broadcast("x" * (MAX_TEXT_CHARS + 1), target, "Alice", auth=auth)
    assert tools.list_broadcasts() == []
    assert len(tools.create_broadcast("🙂" * MAX_TEXT_CHARS, target, "Alice", auth=auth).text) == MAX_TEXT_CHARS


def test_unknown_targets_and_bad_times_are_refused(tools, people, auth):
    """Unknown groups and champions, bad kinds, past or zone-less times: clear errors, nothing stored."""
    with pytest.raises(TeamInputError, match="no cohort group called 'Autumn'"):
        tools.create_broadcast("Hi", Target.group("cohort", "Autumn"), "Alice", auth=auth)
    with pytest.raises(TeamInputError, match="not a kind of group"):
        tools.preview(Target.group("team", "Blue"), "Hi")
    with pytest.raises(TeamInputError, match="no champion with id 999"):
        tools.create_broadcast("Hi", Target.champion(999), "Alice", auth=auth)
    with pytest.raises(TeamInputError, match="already passed"):
        tools.create_broadcast("Hi", Target.everyone(), "Alice", utcnow() - timedelta(minutes=5), auth=auth)
    with pytest.raises(TeamInputError, match="time zone"):
        tools.create_broadcast("Hi", Target.everyone(), "Alice", datetime(2099, 1, 1, 9, 0), auth=auth)
    with pytest.raises(TeamInputError, match="who is sending"):
        tools.create_broadcast("Hi", Target.everyone(), " ", auth=auth)
    assert tools.list_broadcasts() == []
    # A few seconds ago is "now" typed slowly.
    assert tools.create_broadcast("Hi", Target.everyone(), "Alice", utcnow() - timedelta(seconds=20), auth=auth)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("all", Target("all")),
        (" Everyone ", Target("all")),
        ("group:cohort:Spring 2026", Target("group", "cohort", "Spring 2026")),
        ("group:project:Ward 3: discharge", Target("group", "project", "Ward 3: discharge")),
        ("champion:12", Target("champion", champion_id=12)),
    ],
)
def test_targets_are_read_from_text(text, expected):
    """The tool's --to forms."""
    assert Target.parse(text) == expected


@pytest.mark.parametrize("text", ["", "al", "group:cohort", "group::x", "champion:", "champion:twelve", "all:x"])
def test_unreadable_targets_say_what_to_write(text):
    """Anything else gets an error naming the forms."""
    with pytest.raises(TeamInputError, match="group:<kind>:<name>|champion:<id>"):
        Target.parse(text)


# --- credentials --------------------------------------------------------------------------------


def test_creating_and_cancelling_need_the_team_pass(sessions, tools, people, auth):
    """Without a pass nothing is scheduled or cancelled; no token configured means no pass at all."""
    with pytest.raises(NotAuthorised):
        tools.create_broadcast("Hi", Target.everyone(), "Mallory", auth=None)
    with pytest.raises(NotAuthorised):
        tools.create_broadcast("Hi", Target.everyone(), "Mallory", auth=TOKEN)
    with pytest.raises(NotAuthorised, match="TEAM_TOKEN is not set"):
        tools.create_broadcast("Hi", Target.everyone(), "Mallory", auth=authorise(None, TOKEN))
    assert tools.list_broadcasts() == []
    info = tools.create_broadcast("Hi", Target.everyone(), "Alice", utcnow() + timedelta(hours=1), auth=auth)
    with pytest.raises(NotAuthorised):
        tools.cancel_broadcast(info.id, auth="team-token-for-tests")
    assert stored(sessions, info.id).status == "scheduled"


# --- scheduling and cancelling ------------------------------------------------------------------


def test_scheduled_broadcast_waits_for_its_time(sessions, tools, people, auth):
    """A broadcast for later is not started early and starts once its time has come."""
    when = utcnow() + timedelta(days=3)
    info = tools.create_broadcast("Thursday", Target.everyone(), "Alice", when, auth=auth)
    assert info.status == "scheduled" and abs((info.send_at - when).total_seconds()) < 1
    assert start_due_broadcasts(sessions) == 0
    assert start_due_broadcasts(sessions, now=when - timedelta(seconds=1)) == 0
    assert recipients(sessions, info.id) == [] and stored(sessions, info.id).status == "scheduled"
    assert start_due_broadcasts(sessions, now=when) == 1
    row = stored(sessions, info.id)
    assert row.status == "sending" and row.started_at is not None and row.queued_count == 5
    assert len(recipients(sessions, info.id)) == 5


def test_send_time_in_another_zone_is_stored_as_utc(sessions, tools, people, auth):
    """2pm in London in summer is 13:00 UTC; it starts at that instant, not an hour off."""
    from zoneinfo import ZoneInfo

    when = (utcnow() + timedelta(days=400)).astimezone(ZoneInfo("Europe/London")).replace(
        month=7, day=2, hour=14, minute=0, second=0, microsecond=0
    )
    info = tools.create_broadcast("Summer", Target.everyone(), "Alice", when, auth=auth)
    assert stored(sessions, info.id).send_at.replace(tzinfo=timezone.utc) == when.astimezone(timezone.utc)
    assert start_due_broadcasts(sessions, now=when - timedelta(minutes=59)) == 0
    assert start_due_broadcasts(sessions, now=when) == 1


def test_cancelled_scheduled_broadcast_never_goes(sessions, tools, people, auth):
    """Cancelling before the time: nobody gets it, and it cannot be cancelled twice."""
    info = tools.create_broadcast("Oops", Target.everyone(), "Alice", utcnow() + timedelta(hours=1), auth=auth)
    cancelled, stopped = tools.cancel_broadcast(info.id, auth=auth)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None and stopped == 0
    assert start_due_broadcasts(sessions, now=utcnow() + timedelta(days=1)) == 0
    assert recipients(sessions, info.id) == []
    with pytest.raises(TeamInputError, match="already cancelled"):
        tools.cancel_broadcast(info.id, auth=auth)
    with pytest.raises(TeamInputError, match="no broadcast 999"):
        tools.cancel_broadcast(999, auth=auth)


def test_cancelling_a_sending_broadcast_stops_what_is_still_queued(sessions, tools, people, auth):
    """Messages still queued are skipped as "cancelled"; sent and in-flight ones are left alone."""
    info = tools.create_broadcast("Going out", Target.everyone(), "Alice", auth=auth)
    start_due_broadcasts(sessions)
    with sessions() as session:
        session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.champion_id == people["ana"])
            .values(status="sent", sent_at=utcnow())
        )
        session.execute(
            update(OutboundMessage).where(OutboundMessage.champion_id == people["ben"]).values(status="sending")
        )
        session.commit()
    cancelled, stopped = tools.cancel_broadcast(info.id, auth=auth)
    assert stopped == 3 and cancelled.status == "cancelled"
    report = tools.report(info.id)
    assert (report.sent, report.sending, report.skipped, report.queued) == (1, 1, 3, 0)
    assert report.skipped_reasons == {"cancelled": 3}
    finish_sent_broadcasts(sessions)
    assert stored(sessions, info.id).status == "cancelled"  # not turned into "sent" later


def test_cancelling_after_everything_went_says_it_was_sent(sessions, tools, people, auth):
    """A broadcast whose messages have all gone is "sent": nothing left to cancel."""
    info = tools.create_broadcast("Done", Target.champion(people["ana"]), "Alice", auth=auth)
    start_due_broadcasts(sessions)
    with sessions() as session:
        session.execute(update(OutboundMessage).values(status="sent", sent_at=utcnow()))
        session.commit()
    with pytest.raises(TeamInputError, match="already sent"):
        tools.cancel_broadcast(info.id, auth=auth)


# --- starting is idempotent and crash-safe ------------------------------------------------------


def test_starting_twice_queues_one_message_per_champion(sessions, tools, people, auth):
    """Running the start again (or with a row already there from an earlier run) adds nothing."""
    info = tools.create_broadcast("Once", Target.everyone(), "Alice", auth=auth)
    with sessions() as session:  # as if a previous attempt had queued one message already
        session.add(
            OutboundMessage(
                champion_id=people["ana"], kind="broadcast", source_key=source_key(info.id, people["ana"]),
                broadcast_id=info.id, text="Once", status="queued", attempts=0, not_before=utcnow(),
            )
        )
        session.commit()
    assert start_due_broadcasts(sessions) == 1
    assert start_due_broadcasts(sessions) == 0
    assert recipients(sessions, info.id) == sorted(people[n] for n in ("ana", "ben", "cat", "dev", "eve"))


def test_dying_half_way_through_leaves_nothing_half_done(engine, sessions, tools, auth):
    """If the start fails after some messages were written, none stay; the next run queues all, once."""
    with sessions() as session:
        session.add_all(Champion(channel="telegram", external_id=str(n)) for n in range(1200))
        session.commit()
    info = tools.create_broadcast("Big one", Target.everyone(), "Alice", auth=auth)
    inserts = []

    def die_on_second_chunk(conn, cursor, statement, parameters, context, executemany):
        """Fail the second batch of outbound rows, as if the process died there."""
        if statement.startswith("INSERT INTO outbound_messages"):
            inserts.append(statement)
            if len(inserts) == 2:
                raise ConnectionError("the process died here")

    event.listen(engine, "after_cursor_execute", die_on_second_chunk)
    try:
        with pytest.raises(ConnectionError):
            start_due_broadcasts(sessions)
    finally:
        event.remove(engine, "after_cursor_execute", die_on_second_chunk)
    assert recipients(sessions, info.id) == [] and stored(sessions, info.id).status == "scheduled"
    assert start_due_broadcasts(sessions) == 1
    got = recipients(sessions, info.id)
    assert len(got) == 1200 and len(set(got)) == 1200
    assert stored(sessions, info.id).queued_count == 1200


def test_two_delivery_processes_starting_at_once_queue_each_message_once(sessions, tools, people, auth):
    """Several starters racing on the same due broadcast: exactly one starts it, one row per champion."""
    info = tools.create_broadcast("Race", Target.everyone(), "Alice", auth=auth)
    barrier = threading.Barrier(4)
    started: List[int] = []
    errors: List[BaseException] = []

    def run() -> None:
        """One delivery process's pass, started with the others."""
        try:
            barrier.wait()
            started.append(start_due_broadcasts(sessions))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and sorted(started) == [0, 0, 0, 1]
    assert len(recipients(sessions, info.id)) == 5


# --- reports ------------------------------------------------------------------------------------


def test_report_counts_sent_failed_with_reasons_and_left_out(sessions, tools, people, auth):
    """After delivery: sent, failed with reasons, retries, opted out and unreachable; then "sent"."""
    info = tools.create_broadcast("Report me", Target.everyone(), "Alice", auth=auth)
    start_due_broadcasts(sessions)
    outcomes = {
        "ana": ("sent", None, ["retry", "sent"]),
        "ben": ("sent", None, ["sent"]),
        "cat": ("failed", "Forbidden: bot was blocked by the user", ["failed"]),
        "dev": ("failed", None, ["retry", "failed"]),
        "eve": ("queued", None, ["retry"]),
    }
    with sessions() as session:
        rows = {
            r.champion_id: r
            for r in session.execute(select(OutboundMessage).where(OutboundMessage.broadcast_id == info.id)).scalars()
        }
        for name, (status, error, attempts) in outcomes.items():
            row = rows[people[name]]
            row.status, row.last_error, row.attempts = status, error, len(attempts)
            for outcome in attempts:
                detail = "Timed out" if name == "dev" and outcome == "failed" else None
                session.add(DeliveryAttempt(outbound_id=row.id, outcome=outcome, detail=detail))
        session.commit()
    finish_sent_broadcasts(sessions)
    assert stored(sessions, info.id).status == "sending"  # eve's message is still queued
    report = tools.report(info.id)
    assert (report.sent, report.failed, report.queued, report.sending, report.skipped) == (2, 2, 1, 0, 0)
    assert report.failed_reasons == {"Forbidden: bot was blocked by the user": 1, "Timed out": 1}
    assert (report.opted_out, report.unreachable, report.retries, report.total) == (1, 1, 3, 5)
    with sessions() as session:
        session.execute(update(OutboundMessage).where(OutboundMessage.status == "queued").values(status="sent"))
        session.commit()
    assert start_due_broadcasts(sessions) == 0  # the delivery process's pass also finishes broadcasts
    assert stored(sessions, info.id).status == "sent"
    assert tools.report(info.id).sent == 3


def test_list_shows_newest_first_with_targets(tools, people, auth):
    """The list names each broadcast's target in words, newest first."""
    tools.create_broadcast("One", Target.everyone(), "Alice", auth=auth)
    tools.create_broadcast("Two", Target.group("project", "stroke pathway"), "Bob", auth=auth)
    tools.create_broadcast("Three", Target.champion(people["eve"]), "Cy", auth=auth)
    assert [(b.text, b.target, b.created_by, b.status) for b in tools.list_broadcasts()] == [
        ("Three", f"champion {people['eve']}", "Cy", "scheduled"),
        ("Two", "project: Stroke pathway", "Bob", "scheduled"),
        ("One", "everyone", "Alice", "scheduled"),
    ]
    with pytest.raises(TeamInputError, match="no broadcast 999"):
        tools.report(999)


async def test_broadcast_reaches_web_chats_through_the_courier(sessions, tools, auth):
    """End to end: the team's broadcast, started and delivered by the courier into web transcripts;
    someone who says stop after it was queued still gets nothing; then the report and "sent"."""
    from bot.delivery import Courier, WebSender
    from bot.outbox import OutboxRepository

    chats = ChatRepository(sessions)
    ids = [chats.get_or_create_champion("web", f"page-{n}").id for n in range(3)]
    text = "PRG meets Thursday 2pm <b>papers</b> p4-9 🙂"
    info = tools.create_broadcast(text, Target.everyone(), "Alice", auth=auth)
    assert start_due_broadcasts(sessions) == 1
    chats.set_opted_out(ids[2], True)
    courier = Courier(sessions, {"web": WebSender(OutboxRepository(sessions))})
    try:
        assert await courier.run_once() == 3
    finally:
        courier.close()
    start_due_broadcasts(sessions)
    assert [m.text for m in chats.history(ids[0])] == [text]
    assert [m.text for m in chats.history(ids[1])] == [text]
    assert chats.history(ids[2]) == []
    report = tools.report(info.id)
    assert (report.broadcast.status, report.sent, report.skipped, report.skipped_reasons) == (
        "sent", 2, 1, {"opted out": 1}
    )
