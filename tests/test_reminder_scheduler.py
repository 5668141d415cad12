"""The reminder scheduler: fires once through the outbox, across restarts and kills, late or missed after downtime, one instance only."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from sqlalchemy import delete, func, select

from bot.db import make_engine, make_session_factory, migrate
from bot.delivery_models import OutboundMessage
from bot.models import Champion
from bot.outbox import OutboxRepository
from bot.plans import PlanRepository
from bot.reminder_models import Reminder
from bot.reminder_scheduler import (
    JOB_ID,
    ReminderDispatcher,
    SchedulerAlreadyRunning,
    start_reminder_scheduler,
    stop_reminder_scheduler,
)
from bot.reminder_times import Offset, load_content
from bot.models import as_utc
from bot.reminders import ReminderRepository
from bot.repository import ChatRepository
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = Path(os.environ.get("SEEDS_DIR") or ROOT.parent / "shared" / "seeds")
UTC = timezone.utc
TICK = 0.1


def utcnow() -> datetime:
    """The real time now, in UTC."""
    return datetime.now(UTC)


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated database."""
    return make_session_factory(engine)


@pytest.fixture
def repo(sessions):
    """A ReminderRepository on the migrated database."""
    return ReminderRepository(sessions)


@pytest.fixture
def settings(tmp_path, database_url):
    """Settings pointing at the test database (DATA_DIR in tmp_path)."""
    return load_settings({"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": database_url})


def new_champion(sessions, name: str = "sched") -> int:
    """A web champion's id."""
    return ChatRepository(sessions).get_or_create_champion("web", name).id


def meeting_due_in(repo, champion: int, seconds: float, description: str = "the PRG meeting", **kwargs):
    """A meeting whose hour-before reminder is due in `seconds` (and nothing else)."""
    starts = utcnow() + timedelta(hours=1, seconds=seconds)
    kwargs.setdefault("now", utcnow() - timedelta(seconds=5))  # so a reminder due "now" is still set
    return repo.create_meeting(champion, description, starts, offsets=[Offset(60)], after_meeting=False, **kwargs)


def outbound_for(sessions, reminder_id: int):
    """Every outbox row of a reminder (all its generations)."""
    with sessions() as session:
        return list(
            session.execute(
                select(OutboundMessage).where(
                    (OutboundMessage.source_key == f"reminder:{reminder_id}")
                    | OutboundMessage.source_key.like(f"reminder:{reminder_id}:%")
                )
            ).scalars()
        )


def reminder_row(sessions, reminder_id: int) -> Reminder:
    """The reminder as stored."""
    with sessions() as session:
        return session.get(Reminder, reminder_id)


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll predicate until it is truthy (returning its value) or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"gave up waiting after {timeout}s")


# --- firing ------------------------------------------------------------------------------------


async def test_a_reminder_fires_once_through_the_outbox(settings, sessions, repo):
    """Set a reminder; at its time it is handed to the delivery layer once, with the meeting in words."""
    champion = new_champion(sessions)
    meeting = meeting_due_in(repo, champion, 0.5)
    reminder = meeting.reminders[0]
    handle = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    try:
        rows = await wait_for(lambda: outbound_for(sessions, reminder.id))
        assert as_utc(rows[0].not_before) >= reminder.due_at  # handed over at its time, not before
        await asyncio.sleep(5 * TICK)
    finally:
        await stop_reminder_scheduler(handle)
    rows = outbound_for(sessions, reminder.id)
    assert len(rows) == 1
    assert rows[0].kind == "reminder" and rows[0].champion_id == champion
    assert rows[0].text.startswith("The PRG meeting starts in an hour, at ")
    assert rows[0].buttons == [{"title": "I can't make it", "payload": f'/cant_attend{{"rm_meeting": "{meeting.id}"}}'}]
    stored = reminder_row(sessions, reminder.id)
    assert (stored.status, stored.outbound_id, stored.late) == ("queued", rows[0].id, False)


async def test_restart_fires_once_not_twice(settings, sessions, repo):
    """Stop the scheduler and start a new one on the same database: what fired stays fired; what is due fires once."""
    champion = new_champion(sessions)
    before = meeting_due_in(repo, champion, 0.3, "before the restart").reminders[0]
    after = meeting_due_in(repo, champion, 2.0, "after the restart").reminders[0]
    first = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    try:
        await wait_for(lambda: outbound_for(sessions, before.id))
    finally:
        await stop_reminder_scheduler(first)
    assert outbound_for(sessions, after.id) == []
    second = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    try:
        await wait_for(lambda: outbound_for(sessions, after.id))
        await asyncio.sleep(5 * TICK)
    finally:
        await stop_reminder_scheduler(second)
    assert len(outbound_for(sessions, before.id)) == 1
    assert len(outbound_for(sessions, after.id)) == 1


async def test_a_crash_between_handing_over_and_recording_sends_nothing_twice(settings, sessions, repo):
    """If the outbox already has the message (the last run died before marking it), the reminder is only marked."""
    champion = new_champion(sessions)
    reminder = meeting_due_in(repo, champion, 0.0).reminders[0]
    outbound_id = OutboxRepository(sessions).enqueue(champion, "already queued", kind="reminder", source_key=reminder.source_key)
    result = ReminderDispatcher(sessions).run_once(utcnow() + timedelta(seconds=1))
    assert result.queued == 1
    rows = outbound_for(sessions, reminder.id)
    assert [(r.id, r.text) for r in rows] == [(outbound_id, "already queued")]
    assert reminder_row(sessions, reminder.id).outbound_id == outbound_id


async def test_snoozed_reminder_fires_again_once(settings, sessions, repo):
    """A reminder snoozed after it went is handed over again, under its own key, once."""
    champion = new_champion(sessions)
    meeting = repo.create_meeting(champion, "panel", utcnow() + timedelta(hours=5), offsets=[Offset(180)], after_meeting=False)
    reminder = meeting.reminders[0]
    dispatcher = ReminderDispatcher(sessions)
    at = reminder.due_at + timedelta(seconds=1)
    assert dispatcher.run_once(at).queued == 1
    repo.snooze(champion, reminder.id, at + timedelta(hours=1), now=at)
    assert dispatcher.run_once(at + timedelta(minutes=30)).queued == 0
    assert dispatcher.run_once(at + timedelta(hours=1, seconds=1)).queued == 1
    assert dispatcher.run_once(at + timedelta(hours=1, seconds=2)).queued == 0
    keys = sorted(r.source_key for r in outbound_for(sessions, reminder.id))
    assert keys == [f"reminder:{reminder.id}", f"reminder:{reminder.id}:1"]


# --- downtime ----------------------------------------------------------------------------------


async def test_down_over_the_due_time_late_with_apology_or_missed(settings, sessions, repo):
    """After downtime: a meeting still ahead gets its reminder late, with an apology; one already begun is recorded missed."""
    champion = new_champion(sessions)
    now = utcnow()
    long_ago = now - timedelta(days=2)
    ahead = repo.create_meeting(champion, "the PRG meeting", now + timedelta(minutes=30),
                                offsets=[Offset(60)], after_meeting=False, now=long_ago)
    begun = repo.create_meeting(champion, "the patient panel", now - timedelta(minutes=10),
                                offsets=[Offset(1440), Offset(60)], now=long_ago)
    handle = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    try:
        await wait_for(lambda: reminder_row(sessions, ahead.reminders[0].id).status == "queued")
        await wait_for(lambda: {reminder_row(sessions, r.id).status for r in begun.reminders[:2]} == {"missed"})
    finally:
        await stop_reminder_scheduler(handle)
    late = outbound_for(sessions, ahead.reminders[0].id)
    apology = load_content()["messages"]["late_apology"]
    assert len(late) == 1 and late[0].text.startswith(apology)
    assert "The PRG meeting starts in 30 minutes" in late[0].text or "The PRG meeting starts in 29 minutes" in late[0].text
    assert reminder_row(sessions, ahead.reminders[0].id).late is True
    for reminder in begun.reminders[:2]:
        assert outbound_for(sessions, reminder.id) == []
        assert reminder_row(sessions, reminder.id).handled_at is not None
    # The prompt after the panel is still to come: not missed, not sent.
    assert reminder_row(sessions, begun.reminders[2].id).status == "pending"


def test_after_meeting_prompt_goes_late_within_a_day_then_is_missed(sessions, repo):
    """"How did it go?" can still go a few hours late; a day late it is recorded as missed."""
    champion = new_champion(sessions)
    now = utcnow()
    recent = repo.create_meeting(champion, "recent", now - timedelta(hours=5), offsets=[], now=now - timedelta(days=3))
    old = repo.create_meeting(champion, "old", now - timedelta(days=2), offsets=[], now=now - timedelta(days=3))
    result = ReminderDispatcher(sessions).run_once(now)
    assert (result.queued, result.late, result.missed) == (1, 1, 1)
    assert outbound_for(sessions, recent.reminders[0].id)[0].text.startswith(load_content()["messages"]["late_apology"])
    assert reminder_row(sessions, old.reminders[0].id).status == "missed"


# --- one scheduler only ------------------------------------------------------------------------


async def test_a_second_scheduler_is_refused(settings, sessions, repo):
    """While one scheduler runs on a database, another is refused; once it stops, a new one may start."""
    first = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    other_engine = make_engine(settings.database_url)
    try:
        with pytest.raises(SchedulerAlreadyRunning):
            await start_reminder_scheduler(settings, make_session_factory(other_engine), tick_seconds=TICK)
        await stop_reminder_scheduler(first)
        again = await start_reminder_scheduler(settings, make_session_factory(other_engine), tick_seconds=TICK)
        await stop_reminder_scheduler(again)
    finally:
        await stop_reminder_scheduler(first)
        other_engine.dispose()


async def test_the_tick_job_never_drops_a_late_run(settings, sessions):
    """misfire_grace_time=None (a late tick still runs), coalesce (a backlog runs once), one at a time."""
    handle = await start_reminder_scheduler(settings, sessions, tick_seconds=TICK)
    try:
        job = handle._scheduler.get_job(JOB_ID)
        assert job.misfire_grace_time is None and job.coalesce is True and job.max_instances == 1
        ticks = handle.ticks
        time.sleep(1.0)  # block the event loop: ten ticks are missed
        await wait_for(lambda: handle.ticks > ticks, timeout=3)
    finally:
        await stop_reminder_scheduler(handle)


# --- forgetting --------------------------------------------------------------------------------


async def test_deleting_a_champion_removes_their_pending_reminders(settings, sessions, repo):
    """A deleted champion's reminders never fire, even when deleted between reading and handing over."""
    gone = new_champion(sessions, "gone")
    racing = new_champion(sessions, "racing")
    stays = new_champion(sessions, "stays")
    meeting_due_in(repo, gone, 0.0)
    meeting_due_in(repo, racing, 0.0)
    kept = meeting_due_in(repo, stays, 0.0).reminders[0]
    with sessions() as session:
        session.execute(delete(Champion).where(Champion.id == gone))
        session.commit()
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Reminder)).scalar() == 2

    class RacingDispatcher(ReminderDispatcher):
        """Deletes a champion after their reminder was read as due, before it is handed over."""

        def _recalls(self, project_ids):
            with self._sessions() as session:
                session.execute(delete(Champion).where(Champion.id == racing))
                session.commit()
            return super()._recalls(project_ids)

    result = RacingDispatcher(sessions).run_once(utcnow() + timedelta(seconds=1))
    with sessions() as session:
        owners = list(session.execute(select(OutboundMessage.champion_id)).scalars())
    assert owners == [stays]
    assert result.queued == 1 and reminder_row(sessions, kept.id).status == "queued"


# --- what they say -----------------------------------------------------------------------------


def test_day_before_reminder_has_the_checklist_and_the_plan(sessions, repo):
    """The day before: the seeds' checklist, "can't make it", snoozes, and the role and aim from their plan."""
    champion = new_champion(sessions)
    plans = PlanRepository(sessions)
    project = plans.create_project(champion, "Stroke clinic", "parts")
    plans.save_answer(project.id, "expectations", "Attend the monthly project group and read the papers")
    plans.save_answer(project.id, "aim", "Fewer second strokes in Copeland")
    starts = utcnow().replace(microsecond=0) + timedelta(days=3)
    meeting = repo.create_meeting(champion, "the stroke project meeting", starts, project_id=project.id)
    day_before = meeting.reminders[0]
    ReminderDispatcher(sessions).run_once(day_before.due_at + timedelta(seconds=1))
    message = outbound_for(sessions, day_before.id)[0]
    content = load_content()
    assert message.text.startswith("Reminder: the stroke project meeting is tomorrow, ")
    for item in content["checklist"]["items"]:
        assert item["text"] in message.text
    assert 'your project "Stroke clinic"' in message.text
    assert "Your role: Attend the monthly project group and read the papers" in message.text
    assert "The aim: Fewer second strokes in Copeland" in message.text
    titles = [b["title"] for b in message.buttons]
    assert titles[:2] == ["I can't make it", "Remind me in 1 hour"]
    assert message.buttons[0]["payload"] == f'/cant_attend{{"rm_meeting": "{meeting.id}"}}'


def test_after_meeting_prompt(sessions, repo):
    """After the meeting, "how did it go?" with a button to reflect on that meeting."""
    champion = new_champion(sessions)
    meeting = repo.create_meeting(champion, "the PRG meeting", utcnow() + timedelta(hours=1), offsets=[])
    prompt = meeting.reminders[0]
    assert prompt.kind == "after_meeting"
    ReminderDispatcher(sessions).run_once(prompt.due_at + timedelta(seconds=1))
    message = outbound_for(sessions, prompt.id)[0]
    assert message.text.startswith("How did the PRG meeting go?")
    assert message.buttons == [{"title": "Reflect now", "payload": f'/reflect{{"rf_meeting": "{meeting.id}"}}'}]


def test_checklist_is_quoted_from_the_seeds():
    """Every checklist line cites a seed file that holds its quoted line."""
    content = yaml.safe_load((ROOT / "knowledge" / "reminders.yml").read_text(encoding="utf-8"))
    for item in content["checklist"]["items"]:
        seed = " ".join((SEEDS / item["source"]).read_text(encoding="utf-8").split())
        assert " ".join(item["quote"].split()) in seed, item["text"]


# --- whole processes ---------------------------------------------------------------------------


def _start_process(database_url: str, data_dir: Path, log: Path) -> subprocess.Popen:
    """`python -m bot.reminder_scheduler` on the database, logging to log."""
    env = dict(os.environ, DATABASE_URL=database_url, DATA_DIR=str(data_dir), SQLALCHEMY_SILENCE_UBER_WARNING="1")
    handle = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "bot.reminder_scheduler"], cwd=ROOT, env=env,
                            stdout=handle, stderr=subprocess.STDOUT)


async def test_killed_and_restarted_process_fires_each_reminder_once(database_url, tmp_path):
    """Set reminders, kill -9 the scheduler process, start it again: each fires exactly once; a second process is refused."""
    migrate(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    repo = ReminderRepository(sessions)
    log = tmp_path / "scheduler.log"
    processes = []
    try:
        champion = new_champion(sessions)
        first = meeting_due_in(repo, champion, 1.0, "before the kill").reminders[0]
        process = _start_process(database_url, tmp_path / "data", log)
        processes.append(process)
        await wait_for(lambda: outbound_for(sessions, first.id), timeout=30)
        refused = _start_process(database_url, tmp_path / "data", log)
        processes.append(refused)
        assert refused.wait(timeout=30) == 3, log.read_text()
        second = meeting_due_in(repo, champion, 3.0, "after the kill").reminders[0]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        restarted = _start_process(database_url, tmp_path / "data", log)
        processes.append(restarted)
        await wait_for(lambda: outbound_for(sessions, second.id), timeout=30)
        await asyncio.sleep(2.5)  # a couple more ticks
        assert len(outbound_for(sessions, first.id)) == 1
        assert len(outbound_for(sessions, second.id)) == 1
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=15) == 0, log.read_text()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        engine.dispose()
