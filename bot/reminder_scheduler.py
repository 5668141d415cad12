"""The reminder scheduler: hands due reminders to the delivery layer, exactly once, never dropping one.

Due times live in the app database (``reminders.due_at``), not in the scheduler:
APScheduler's AsyncIOScheduler only runs one interval job, a *tick*, which
hands every pending reminder due by now to the outbox (bot.outbox) with
``source_key = "reminder:<id>"`` and marks it queued. So a reminder set before
a restart fires after it, and a crash between the two steps is harmless: the
outbox stores each key once, the next tick finds the reminder still pending
and only marks it.

The tick job is set up on purpose:

- ``misfire_grace_time=None``: a tick that runs late (the event loop was busy,
  the machine slept) still runs; APScheduler's default of one second would skip it.
- ``coalesce=True`` and ``max_instances=1``: a backlog of missed ticks runs once,
  and never two at the same time (one tick picks up everything that is due anyway).
- ``next_run_time=now``: the first tick runs at start, catching up on the downtime.

A reminder handed over more than ``late_after_seconds`` after its time (the
service was down) goes with an apology if the meeting hasn't started yet (an
after-meeting prompt: within ``after_meeting_expires``), and is recorded as
``missed`` otherwise, never dropped silently.

Exactly one scheduler runs per database: it holds a PostgreSQL advisory lock
(on its own connection) or, on SQLite, an exclusive file lock next to the
database file (in DATA_DIR by default); a second one is refused with
SchedulerAlreadyRunning. Both locks go when the process dies.

``start_reminder_scheduler(settings, session_factory)`` is what the delivery
process calls; ``python -m bot.reminder_scheduler`` runs it on its own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from bot.checkins import CheckInDispatcher
from bot.plan_models import Project, StepAnswer
from bot.plans import fill, shorten
from bot.reminder_models import KIND_AFTER_MEETING, KIND_CUSTOM, KIND_DAY_BEFORE
from bot.reminder_times import load_content, say_relative_day, say_starts_in, say_time, snooze_until
from bot.reminders import DueReminder, ReminderRepository
from bot.time_zones import champion_zone, time_label

log = logging.getLogger(__name__)

OUTBOX_KIND = "reminder"
DEFAULT_TICK_SECONDS = 1.0
DEFAULT_BATCH_SIZE = 1000
JOB_ID = "reminders-tick"
# pg_try_advisory_lock key: a fixed number for "the reminder scheduler of this database".
ADVISORY_LOCK_KEY = zlib.crc32(b"coproduction-companion:reminder-scheduler")
LOCK_FILE_SUFFIX = ".reminder-scheduler.lock"


class SchedulerAlreadyRunning(RuntimeError):
    """Another reminder scheduler holds this database's lock."""


# --- one scheduler per database ------------------------------------------------------------------


class SchedulerLock:
    """The "only one reminder scheduler" lock: PostgreSQL advisory lock, or a file lock for SQLite."""

    def __init__(self, engine: Engine, data_dir: Optional[Path] = None) -> None:
        """Lock for the database behind engine (SQLite lock files go next to it, or in data_dir)."""
        self._engine = engine
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._connection: Optional[Connection] = None
        self._fd: Optional[int] = None

    @property
    def path(self) -> Optional[Path]:
        """The lock file (SQLite only)."""
        if self._engine.dialect.name != "sqlite":
            return None
        database = make_url(str(self._engine.url)).database
        if database and database != ":memory:" and not database.startswith("file:"):
            return Path(database + LOCK_FILE_SUFFIX)
        return (self._data_dir or Path("data")) / ("app" + LOCK_FILE_SUFFIX)

    def acquire(self) -> None:
        """Take the lock, or raise SchedulerAlreadyRunning at once (never waits)."""
        if self._engine.dialect.name == "postgresql":
            connection = self._engine.connect()
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
            connection.commit()
            if not got:
                connection.close()
                raise SchedulerAlreadyRunning("another reminder scheduler holds the PostgreSQL advisory lock")
            self._connection = connection
            return
        import fcntl

        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SchedulerAlreadyRunning(f"another reminder scheduler holds {path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (safe to call twice)."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                self._connection.commit()
            except Exception:  # noqa: BLE001 - closing the connection releases it anyway
                log.warning("could not unlock the advisory lock cleanly", exc_info=True)
            finally:
                self._connection.close()
                self._connection = None
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# --- what a reminder says ------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRecall:
    """A project's name, and the champion's role and aim from their five-steps plan (if answered)."""

    project: str
    role: Optional[str] = None
    aim: Optional[str] = None


class ReminderWording:
    """Builds each reminder's text and buttons from knowledge/reminders.yml."""

    def __init__(self, content: Optional[Mapping[str, Any]] = None) -> None:
        """Use content (default: knowledge/reminders.yml)."""
        self.content = content or load_content()

    def checklist(self) -> str:
        """The preparation checklist, one bullet a line."""
        checklist = self.content["checklist"]
        return "\n".join(checklist["bullet"] + item["text"] for item in checklist["items"])

    def plan_lines(self, recall: Optional[PlanRecall]) -> List[str]:
        """The lines recalling the champion's project, role and aim."""
        if recall is None or not (recall.role or recall.aim):
            return []
        messages = self.content["messages"]
        limit = int(messages["plan_answer_chars"])
        lines = [fill(messages["plan_intro"], project=recall.project)]
        if recall.role:
            lines.append(fill(messages["plan_role"], role=shorten(recall.role, limit)))
        if recall.aim:
            lines.append(fill(messages["plan_aim"], aim=shorten(recall.aim, limit)))
        return lines

    def text(self, due: DueReminder, *, late: bool, recall: Optional[PlanRecall] = None, now: Optional[datetime] = None) -> str:
        """The message for a due reminder (with the apology when late, the plan recall the day before)."""
        messages = self.content["messages"]
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        description = due.description
        # In the meeting's own zone, named unless it is UK time said to a champion in the UK.
        label = time_label(due.time_zone, champion_zone(due.champion_time_zone))
        values = {
            "description": description,
            "Description": description[:1].upper() + description[1:],
            "day": say_relative_day(due.starts_at, now, due.time_zone, self.content, label=label),
            "time": say_time(due.starts_at, due.time_zone, self.content, label=label),
            "starts_in": say_starts_in(due.starts_at - now, self.content),
            "checklist": self.checklist(),
        }
        body = fill(messages[due.kind], **values).strip()
        parts = [messages["late_apology"]] if late else []
        parts.append(body)
        if due.kind in (KIND_DAY_BEFORE, KIND_CUSTOM):
            plan = self.plan_lines(recall)
            if plan:
                parts.append("\n".join(plan))
        return "\n\n".join(parts)

    def buttons(self, due: DueReminder, now: datetime) -> List[Dict[str, str]]:
        """The buttons for a due reminder; snoozes only when they would still come before the meeting."""
        buttons = []
        home = champion_zone(due.champion_time_zone)  # "tomorrow morning" is morning where the champion is
        for key in self.content["kind_buttons"].get(due.kind) or ():
            spec = self.content["buttons"][key]
            if spec.get("snooze"):
                until = snooze_until(spec["snooze"], now, home, self.content)
                if until is None or until >= due.starts_at:
                    continue
            buttons.append(
                {
                    "title": fill(spec["title"]),
                    "payload": fill(spec["payload"], meeting_id=due.meeting_id, reminder_id=due.id),
                }
            )
        return buttons


# --- one tick ------------------------------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick did."""

    queued: int = 0
    late: int = 0
    missed: int = 0
    synced: int = 0
    lateness: List[float] = field(default_factory=list)  # seconds past due, per reminder handed over


class ReminderDispatcher:
    """Hands due reminders to the outbox and records what happened (synchronous; the scheduler runs it in a thread)."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        *,
        content: Optional[Mapping[str, Any]] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """Work on the database behind session_factory, batch_size reminders at a time."""
        from bot.outbox import OutboxRepository

        self.content = content or load_content()
        self._sessions = session_factory
        self.repository = ReminderRepository(session_factory, self.content)
        self.outbox = OutboxRepository(session_factory)
        self.wording = ReminderWording(self.content)
        self.batch_size = max(1, int(batch_size))
        timing = self.content["timing"]
        self.late_after = timedelta(seconds=float(timing["late_after_seconds"]))
        self.after_meeting_expires = timedelta(**{k: float(v) for k, v in timing["after_meeting_expires"].items()})

    def _verdict(self, due: DueReminder, now: datetime) -> str:
        """"on_time", "late" (send with an apology) or "missed" (record only)."""
        if now - due.due_at <= self.late_after:
            return "on_time"
        if due.kind == KIND_AFTER_MEETING:
            return "late" if now < due.starts_at + self.after_meeting_expires else "missed"
        return "late" if now < due.starts_at else "missed"

    def _recalls(self, project_ids: Sequence[int]) -> Dict[int, PlanRecall]:
        """Name, role and aim of each project, from the five-steps answers."""
        ids = sorted({pid for pid in project_ids if pid is not None})
        if not ids:
            return {}
        keys = self.content["plan_recall"]
        wanted = {keys["role"]: "role", keys["aim"]: "aim"}
        recalls: Dict[int, Dict[str, Any]] = {}
        with self._sessions() as session:
            for pid, name in session.execute(select(Project.id, Project.name).where(Project.id.in_(ids))):
                recalls[pid] = {"project": name}
            for pid, key, value, skipped in session.execute(
                select(StepAnswer.project_id, StepAnswer.question_key, StepAnswer.value, StepAnswer.skipped).where(
                    StepAnswer.project_id.in_(ids), StepAnswer.question_key.in_(list(wanted))
                )
            ):
                if pid in recalls and value and not skipped:
                    recalls[pid][wanted[key]] = value
        return {pid: PlanRecall(**values) for pid, values in recalls.items()}

    def run_once(self, now: Optional[datetime] = None) -> TickResult:
        """Hand every reminder due by now to the outbox (or record it as missed); returns what was done."""
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        result = TickResult(synced=self.repository.sync_sent(now))
        while True:
            batch = self.repository.due(now, limit=self.batch_size)
            if not batch:
                break
            recalls = self._recalls([d.project_id for d in batch if d.kind in (KIND_DAY_BEFORE, KIND_CUSTOM)])
            rows, handed, missed = [], [], []
            for due in batch:
                verdict = self._verdict(due, now)
                if verdict == "missed":
                    missed.append((due.id, due.generation))
                    continue
                late = verdict == "late"
                rows.append(
                    {
                        "champion_id": due.champion_id,
                        "text": self.wording.text(due, late=late, recall=recalls.get(due.project_id), now=now),
                        "kind": OUTBOX_KIND,
                        "source_key": due.source_key,
                        "buttons": self.wording.buttons(due, now) or None,
                        "not_before": now,
                    }
                )
                handed.append((due, late))
            if rows:
                self.outbox.enqueue_each(rows)
                ids = self.outbox.ids_by_source_key([row["source_key"] for row in rows])
                result.queued += self.repository.mark_queued_many(
                    [(due.id, due.generation, ids.get(due.source_key), late) for due, late in handed], now
                )
                result.late += sum(1 for _, late in handed if late)
                result.lateness += [(now - due.due_at).total_seconds() for due, _ in handed]
            if missed:
                result.missed += self.repository.mark_missed_many(missed, now)
                log.warning("%d reminder(s) recorded as missed: their meeting began while we were down", len(missed))
            if len(batch) < self.batch_size:
                break
        return result


# --- the scheduler -------------------------------------------------------------------------------


class ReminderScheduler:
    """A running reminder scheduler: the lock, APScheduler's AsyncIOScheduler and its tick job."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        *,
        data_dir: Optional[Path] = None,
        tick_seconds: float = DEFAULT_TICK_SECONDS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        content: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Prepare (nothing runs until start())."""
        self.dispatcher = ReminderDispatcher(session_factory, content=content, batch_size=batch_size)
        # Pledge check-ins (bot/checkins.py) are handed over on the same tick.
        self.check_in_dispatcher = CheckInDispatcher(session_factory, batch_size=batch_size)
        self.check_ins_queued = 0
        self.tick_seconds = float(tick_seconds)
        engine = session_factory.kw["bind"]
        self.lock = SchedulerLock(engine, data_dir)
        self._scheduler = None
        self._busy = asyncio.Lock()
        self.ticks = 0
        self.totals = TickResult()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._scheduler is not None

    def start(self) -> None:
        """Take the lock (SchedulerAlreadyRunning if another holds it) and start ticking in the running loop."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        if self._scheduler is not None:
            return
        self.lock.acquire()
        try:
            scheduler = AsyncIOScheduler(timezone=timezone.utc, event_loop=asyncio.get_running_loop())
            scheduler.add_job(
                self.tick,
                "interval",
                seconds=self.tick_seconds,
                id=JOB_ID,
                next_run_time=datetime.now(timezone.utc),
                misfire_grace_time=None,
                coalesce=True,
                max_instances=1,
            )
            scheduler.start()
        except Exception:
            self.lock.release()
            raise
        self._scheduler = scheduler
        log.info("reminder scheduler started (tick every %.2fs)", self.tick_seconds)

    async def tick(self, now: Optional[datetime] = None) -> TickResult:
        """One pass: hand over everything due by now (default: the real time) in a worker thread, so the event loop stays free."""
        async with self._busy:
            await self._check_in_pass(now)
            try:
                result = await asyncio.to_thread(self.dispatcher.run_once, now)
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the scheduler
                log.exception("reminder tick failed; the next one will try again")
                return TickResult()
            self.ticks += 1
            self.totals.queued += result.queued
            self.totals.late += result.late
            self.totals.missed += result.missed
            self.totals.synced += result.synced
            return result

    async def _check_in_pass(self, now: Optional[datetime]) -> None:
        """Hand due pledge check-ins over; a failure is logged on its own and the next tick tries again."""
        try:
            result = await asyncio.to_thread(self.check_in_dispatcher.run_once, now)
        except Exception:  # noqa: BLE001 - must not stop the reminders or the scheduler
            log.exception("check-in pass failed; the next tick will try again")
            return
        self.check_ins_queued += result.queued

    async def stop(self) -> None:
        """Stop ticking, let a tick in progress finish, then let the lock go."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.shutdown(wait=False)
        async with self._busy:
            pass
        self.lock.release()
        log.info("reminder scheduler stopped")


async def start_reminder_scheduler(
    settings: Any,
    session_factory: "sessionmaker[Session]",
    *,
    tick_seconds: Optional[float] = None,
    batch_size: Optional[int] = None,
) -> ReminderScheduler:
    """Start the one reminder scheduler for this database inside the running event loop; returns its handle.

    Raises SchedulerAlreadyRunning when another process (or handle) has it.
    Uses settings.reminder_tick_seconds / settings.reminder_batch_size unless given here.
    """
    handle = ReminderScheduler(
        session_factory,
        data_dir=settings.data_dir,
        tick_seconds=tick_seconds or settings.reminder_tick_seconds,
        batch_size=batch_size or settings.reminder_batch_size,
    )
    handle.start()
    return handle


async def stop_reminder_scheduler(handle: Optional[ReminderScheduler]) -> None:
    """Stop a scheduler started by start_reminder_scheduler (None is fine)."""
    if handle is not None:
        await handle.stop()


async def _serve(settings: Any) -> None:
    """Run the scheduler on its own until SIGINT or SIGTERM."""
    from bot.db import make_engine, make_session_factory, migrate

    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    handle = await start_reminder_scheduler(settings, make_session_factory(engine))
    try:
        await stop.wait()
    finally:
        await stop_reminder_scheduler(handle)
        engine.dispose()


def main() -> int:
    """`python -m bot.reminder_scheduler`: the reminder scheduler as a process of its own."""
    from bot.settings import load_settings

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(load_settings()))
    except SchedulerAlreadyRunning as exc:
        log.error("%s", exc)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
