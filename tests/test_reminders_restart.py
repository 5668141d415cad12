"""Reminders across a full restart, on the real assembled system through the web chat API.

Three champions each set a reminder by chatting, then every process stops. While
everything is down, time "passes" for each meeting (see _shift_meeting), then
everything starts again on the same data:

- the PRG meeting's day-before reminder falls due just after the restart: it
  fires once, on time, with the preparation checklist;
- the patient panel's day-before reminder fell due ten minutes before the
  restart and the panel hasn't started: it goes late, with the apology;
- the stroke project meeting began half an hour before the restart: its
  reminders are recorded as missed and nothing is sent about them
  (README "Meeting reminders", bot/reminder_scheduler.py).

One stack lifecycle (two starts) serves all three, to keep the file within a
few minutes on a busy 2-core machine.
"""
from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import select

from bench.stack import MODEL, Stack, running_stack
from bot.db import make_engine, make_session_factory
from bot.delivery_models import OutboundMessage
from bot.models import Champion
from bot.reminder_models import KIND_DAY_BEFORE, Meeting, Reminder, reminder_source_key
from bot.models import as_utc
from conftest import LIVE_STACK_TIMEOUT, ROOT, _log_tails

pytestmark = pytest.mark.model

UTC = timezone.utc
LONDON = ZoneInfo("Europe/London")
CONTENT = yaml.safe_load((ROOT / "knowledge" / "reminders.yml").read_text(encoding="utf-8"))
CHECKLIST = [item["text"] for item in CONTENT["checklist"]["items"]]
APOLOGY = CONTENT["messages"]["late_apology"]
CANT_MAKE_IT = CONTENT["buttons"]["cant_make_it"]["title"]
SET_IT = CONTENT["conversation"]["buttons"]["set_it"]["title"]
DONE = CONTENT["conversation"]["done"].split("{")[0]  # "Reminder set: "
LISTING = CONTENT["conversation"]["listing"]
DAY_BEFORE = CONTENT["messages"]["day_before"].split("{")[0]  # "Reminder: "
TICK_SECONDS = 1.0
# How long after the restart the reminders may take to arrive, and how long we then watch for a duplicate.
ARRIVAL_DEADLINE = 90.0
QUIET_SECONDS = 6 * TICK_SECONDS
# The on-time reminder falls due this long after the database is edited: after the delivery process
# (and with it the scheduler) has started on a normal machine, and well within the 120 s after which
# a reminder counts as late even on a slow one.
ON_TIME_LEAD = timedelta(seconds=15)


# --- talking to the web chat ---------------------------------------------------------------------


def _request(url: str, body: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """GET url, or POST body to it as JSON; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class WebChampion:
    """One champion typing into the web chat page."""

    url: str
    sender_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    last: List[Dict[str, Any]] = field(default_factory=list)

    def say(self, text: str) -> str:
        """Type a message; the companion's replies joined."""
        self.last = _request(f"{self.url}/api/messages", {"sender_id": self.sender_id, "text": text})["messages"]
        return "\n".join(m["text"] for m in self.last)

    def tap(self, title: str) -> str:
        """Tap the button with this title (its payload is whatever the assistant offered)."""
        buttons = [b for m in self.last for b in m.get("buttons") or [] if b.get("title") == title]
        assert buttons, f"no {title!r} button in {self.last}"
        self.last = _request(
            f"{self.url}/api/messages",
            {"sender_id": self.sender_id, "payload": buttons[0]["payload"], "title": buttons[0]["title"]},
        )["messages"]
        return "\n".join(m["text"] for m in self.last)

    def history(self) -> List[Dict[str, Any]]:
        """The stored transcript, oldest first."""
        query = urllib.parse.urlencode({"sender_id": self.sender_id, "limit": 200})
        return _request(f"{self.url}/api/history?{query}")["messages"]


def _set_reminder(me: WebChampion, description: str, day: date) -> None:
    """Set a reminder for a meeting on day at 2pm by chatting, confirm it, and see it listed."""
    reply = me.say(f"remind me about {description} on {day.day}/{day.month} at 2pm")
    assert description in reply and "2:00pm" in reply, reply
    reply = me.tap(SET_IT)
    assert DONE in reply and description in reply, reply
    listing = me.say("my reminders")
    assert LISTING in listing and description in listing, listing


# --- the app database ----------------------------------------------------------------------------


@contextlib.contextmanager
def _sessions(data_dir: Path) -> Iterator[Any]:
    """A session factory on the stack's app database (data_dir/app.db)."""
    engine = make_engine(f"sqlite:///{data_dir / 'app.db'}")
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _champion_id(sessions: Any, sender_id: str) -> int:
    """The app database id of a web champion."""
    with sessions() as session:
        return session.execute(
            select(Champion.id).where(Champion.channel == "web", Champion.external_id == sender_id)
        ).scalar_one()


def _meeting(sessions: Any, champion_id: int) -> Meeting:
    """The champion's one meeting, with its reminders loaded."""
    with sessions() as session:
        meeting = session.execute(select(Meeting).where(Meeting.champion_id == champion_id)).scalar_one()
        _ = list(meeting.reminders)
        session.expunge_all()
        return meeting


def _reminders(sessions: Any, meeting_id: int) -> Dict[str, Reminder]:
    """The meeting's reminders by kind, read fresh."""
    with sessions() as session:
        rows = session.execute(select(Reminder).where(Reminder.meeting_id == meeting_id)).scalars().all()
        session.expunge_all()
        return {row.kind: row for row in rows}


def _shift_meeting(sessions: Any, meeting_id: int, delta: timedelta) -> None:
    """Move a meeting and every one of its reminders by delta.

    We cannot wait a day for a reminder to fall due, so "time passes" while the
    service is down by bringing the meeting's whole timeline closer instead:
    its start and each reminder's due time move by the same amount, so the
    reminders stay where they were relative to the meeting, exactly as if the
    clock had moved on by -delta. Nothing else changes (status, keys, offsets).
    """
    with sessions() as session:
        meeting = session.get(Meeting, meeting_id)
        meeting.starts_at = as_utc(meeting.starts_at) + delta
        for reminder in meeting.reminders:
            reminder.due_at = as_utc(reminder.due_at) + delta
        session.commit()


def _outbound(sessions: Any, reminder: Reminder) -> List[OutboundMessage]:
    """The delivery layer's messages for a reminder (any generation)."""
    with sessions() as session:
        rows = session.execute(
            select(OutboundMessage).where(OutboundMessage.source_key.like(reminder_source_key(reminder.id) + "%"))
        ).scalars().all()
        session.expunge_all()
        return [row for row in rows if row.source_key.split(":")[1] == str(reminder.id)]


# --- the stack -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stack(data_dir: Path) -> Iterator[Stack]:
    """The whole assistant on data_dir (a fast scheduler tick); fails the test with the logs if it won't start."""
    stack_cm = running_stack(
        data_dir=data_dir, timeout=LIVE_STACK_TIMEOUT, extra_env={"REMINDER_TICK_SECONDS": str(TICK_SECONDS)}
    )
    try:
        stack = stack_cm.__enter__()
    except (TimeoutError, OSError) as exc:
        pytest.fail(f"the live stack did not start: {exc}\n{_log_tails(data_dir)}")
    try:
        yield stack
    except BaseException as exc:
        if not stack_cm.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        stack_cm.__exit__(None, None, None)


def _reminder_messages(me: WebChampion, description: str, after_id: int) -> List[Dict[str, Any]]:
    """Messages the assistant sent on its own about description since message after_id."""
    return [
        m for m in me.history()
        if m["id"] > after_id and m["direction"] == "out" and description in m["text"] and DAY_BEFORE in m["text"]
    ]


def test_reminders_survive_a_full_restart_and_fire_once_late_or_are_recorded_missed(tmp_path: Path):
    """Set by chat before a restart: fires once after it; late with an apology; missed once the meeting began."""
    if not MODEL.exists():
        pytest.fail("models/coproduction.tar.gz is missing: the test command trains it first")
    data_dir = tmp_path / "data"
    in_three_days = (datetime.now(LONDON) + timedelta(days=3)).date()
    cases = {"on_time": "the PRG meeting", "late": "the patient panel", "missed": "the stroke project meeting"}

    with _stack(data_dir) as stack:
        champions = {case: WebChampion(stack.web_url) for case in cases}
        for case, description in cases.items():
            _set_reminder(champions[case], description, in_three_days)
        with _sessions(data_dir) as sessions:
            meetings = {case: _meeting(sessions, _champion_id(sessions, champions[case].sender_id)) for case in cases}
            for meeting in meetings.values():
                assert sorted(r.kind for r in meeting.reminders) == ["after_meeting", "day_before", "hour_before"]
                assert {r.status for r in meeting.reminders} == {"pending"}
        last_id = {case: me.history()[-1]["id"] for case, me in champions.items()}

    # Everything is down. Bring each meeting's timeline forward (see _shift_meeting).
    with _sessions(data_dir) as sessions:
        now = datetime.now(UTC)
        day_before = {case: next(r for r in m.reminders if r.kind == KIND_DAY_BEFORE) for case, m in meetings.items()}
        # Its day-before reminder falls due a few seconds from now, after the scheduler is back.
        _shift_meeting(sessions, meetings["on_time"].id, now + ON_TIME_LEAD - as_utc(day_before["on_time"].due_at))
        # Its day-before reminder fell due ten minutes ago, while we were down; the panel is about a day away.
        _shift_meeting(sessions, meetings["late"].id, now - timedelta(minutes=10) - as_utc(day_before["late"].due_at))
        # It began half an hour ago: the day-before and hour-before reminders both passed while we were down.
        _shift_meeting(sessions, meetings["missed"].id, now - timedelta(minutes=30) - as_utc(meetings["missed"].starts_at))
        on_time_due = now + ON_TIME_LEAD

    with _stack(data_dir) as stack:
        for me in champions.values():
            me.url = stack.web_url
        on_time, late = champions["on_time"], champions["late"]
        deadline = time.monotonic() + ARRIVAL_DEADLINE
        while time.monotonic() < deadline:
            if _reminder_messages(on_time, cases["on_time"], last_id["on_time"]) and _reminder_messages(
                late, cases["late"], last_id["late"]
            ):
                break
            time.sleep(TICK_SECONDS / 2)
        else:
            pytest.fail(
                "the reminders did not arrive after the restart:\n"
                f"{on_time.history()[-3:]}\n{late.history()[-3:]}\n{_log_tails(data_dir)}"
            )
        time.sleep(QUIET_SECONDS)  # a few more ticks: a duplicate would show up now

        # The PRG meeting: once, at its time (not before, not again), on time, with the checklist.
        [message] = _reminder_messages(on_time, cases["on_time"], last_id["on_time"])
        assert datetime.fromisoformat(message["created_at"]) >= on_time_due - timedelta(seconds=1)
        assert APOLOGY not in message["text"]
        for item in CHECKLIST:
            assert item in message["text"], message["text"]
        assert CANT_MAKE_IT in [b["title"] for b in message["buttons"]]

        # The patient panel: once, late, with the apology first, and the checklist.
        [message] = _reminder_messages(late, cases["late"], last_id["late"])
        assert message["text"].startswith(APOLOGY), message["text"]
        for item in CHECKLIST:
            assert item in message["text"], message["text"]

        # The stroke project meeting: nothing at all came to its champion after the restart.
        missed = champions["missed"]
        assert [m for m in missed.history() if m["id"] > last_id["missed"]] == []

        with _sessions(data_dir) as sessions:
            deadline = time.monotonic() + 10 * TICK_SECONDS  # "sent" is copied back on the tick after delivery
            while True:
                rows = {case: _reminders(sessions, meetings[case].id) for case in cases}
                if rows["on_time"]["day_before"].status == rows["late"]["day_before"].status == "sent":
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"reminders not recorded sent: {rows}\n{_log_tails(data_dir)}")
                time.sleep(TICK_SECONDS / 2)

            for case, was_late in (("on_time", False), ("late", True)):
                reminder = rows[case]["day_before"]
                assert reminder.late is was_late and reminder.handled_at is not None
                [outbound] = _outbound(sessions, reminder)
                assert outbound.id == reminder.outbound_id and outbound.status == "sent"
                # The rest of the meeting's reminders are still to come.
                assert rows[case]["hour_before"].status == rows[case]["after_meeting"].status == "pending"

            stroke = rows["missed"]
            for kind in ("day_before", "hour_before"):
                assert stroke[kind].status == "missed" and stroke[kind].handled_at is not None, stroke[kind]
                assert stroke[kind].outbound_id is None and _outbound(sessions, stroke[kind]) == []
            # "How did it go?" is still due three hours after the start (later than this test).
            assert stroke["after_meeting"].status == "pending"

        # The missed meeting has begun, so it is no longer listed; the others still are.
        assert cases["missed"] not in missed.say("my reminders")
        assert cases["on_time"] in on_time.say("my reminders")
