"""Meetings and their reminders in the app database: set, list, cancel, re-time, snooze, and hand over when due.

One short transaction per call (SQLAlchemy 2.0 style). Times go in and come out
as aware UTC datetimes; each meeting keeps the champion's zone so whole-day
offsets ("a day before") count on their calendar. The scheduler
(bot/reminder_scheduler.py) reads `due()` and records what it did with
`mark_queued_many()` / `mark_missed_many()`; the delivery layer's outcome is
copied back by `sync_sent()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from bot.delivery_models import STATUS_SENT as OUTBOUND_SENT
from bot.delivery_models import OutboundMessage
from bot.models import Champion, as_utc, utcnow
from bot.plan_models import Project
from bot.reminder_models import (
    KIND_AFTER_MEETING,
    MEETING_DESCRIPTION_MAX,
    STATUS_CANCELLED,
    STATUS_MISSED,
    STATUS_PENDING,
    STATUS_QUEUED,
    STATUS_SENT,
    Meeting,
    Reminder,
    reminder_source_key,
)
from bot.reminder_times import (
    DEFAULT_TIME_ZONE,
    Offset,
    after_meeting_at,
    default_offsets,
    due_at,
    load_content,
    zone,
)

# Statuses of a reminder that is still to go.
OPEN_STATUSES = (STATUS_PENDING,)


def _aware(moment: datetime, name: str) -> datetime:
    """moment in UTC, refusing a naive datetime (which zone would it be in?)."""
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class ReminderView:
    """A reminder, detached from the database session."""

    id: int
    meeting_id: int
    kind: str
    offset_minutes: int
    due_at: datetime
    status: str
    snoozed_until: Optional[datetime]
    generation: int
    outbound_id: Optional[int]
    late: bool

    @property
    def source_key(self) -> str:
        """Its key in the delivery layer."""
        return reminder_source_key(self.id, self.generation)


@dataclass(frozen=True)
class MeetingView:
    """A meeting and its reminders, detached from the database session."""

    id: int
    champion_id: int
    project_id: Optional[int]
    description: str
    starts_at: datetime
    time_zone: str
    cancelled_at: Optional[datetime]
    reminders: Tuple[ReminderView, ...] = ()

    @property
    def pending(self) -> Tuple[ReminderView, ...]:
        """The reminders still to go, soonest first."""
        return tuple(r for r in self.reminders if r.status == STATUS_PENDING)


@dataclass(frozen=True)
class DueReminder:
    """A reminder whose time has come, with what the scheduler needs to word and address it."""

    id: int
    generation: int
    kind: str
    offset_minutes: int
    due_at: datetime
    meeting_id: int
    champion_id: int
    project_id: Optional[int]
    description: str
    starts_at: datetime
    time_zone: str
    # The champion's own zone now (champions.time_zone; None: the default), which may differ from
    # the meeting's: the wording names the meeting's zone then, and snoozes use the champion's.
    champion_time_zone: Optional[str] = None

    @property
    def source_key(self) -> str:
        """Its key in the delivery layer."""
        return reminder_source_key(self.id, self.generation)


def _reminder_view(row: Reminder) -> ReminderView:
    """A detached copy of a reminder row."""
    return ReminderView(
        id=row.id,
        meeting_id=row.meeting_id,
        kind=row.kind,
        offset_minutes=row.offset_minutes,
        due_at=as_utc(row.due_at),
        status=row.status,
        snoozed_until=as_utc(row.snoozed_until),
        generation=row.generation,
        outbound_id=row.outbound_id,
        late=bool(row.late),
    )


def _meeting_view(row: Meeting) -> MeetingView:
    """A detached copy of a meeting row with its reminders, soonest first."""
    return MeetingView(
        id=row.id,
        champion_id=row.champion_id,
        project_id=row.project_id,
        description=row.description,
        starts_at=as_utc(row.starts_at),
        time_zone=row.time_zone,
        cancelled_at=as_utc(row.cancelled_at),
        reminders=tuple(sorted((_reminder_view(r) for r in row.reminders), key=lambda r: (r.due_at, r.id))),
    )


class ReminderRepository:
    """Meetings and reminders in the app database, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]", content: Optional[Mapping[str, Any]] = None) -> None:
        """Use session_factory (see bot.db.make_session_factory); content is knowledge/reminders.yml."""
        self._sessions = session_factory
        self._content = content or load_content()

    # --- reminder times ---------------------------------------------------------------------------

    def _schedule(self, starts_at: datetime, time_zone: str, offsets: Sequence[Offset], after_meeting: bool) -> List[Tuple[str, int, datetime]]:
        """(kind, offset minutes, due time) for each reminder of a meeting at starts_at."""
        planned = [(offset.kind, offset.minutes, due_at(starts_at, offset, time_zone)) for offset in offsets]
        if after_meeting:
            after = after_meeting_at(starts_at, self._content)
            planned.append((KIND_AFTER_MEETING, -int((after - starts_at).total_seconds() // 60), after))
        return planned

    # --- setting ----------------------------------------------------------------------------------

    def create_meeting(
        self,
        champion_id: int,
        description: str,
        starts_at: datetime,
        *,
        time_zone: str = DEFAULT_TIME_ZONE,
        offsets: Optional[Sequence[Offset]] = None,
        project_id: Optional[int] = None,
        after_meeting: bool = True,
        now: Optional[datetime] = None,
    ) -> MeetingView:
        """Store a meeting and its reminders (only those still ahead of now); refuses a meeting in the past."""
        now = _aware(now, "now") if now is not None else utcnow()
        starts_at = _aware(starts_at, "starts_at")
        zone(time_zone)  # refuses an unknown zone
        description = " ".join(str(description or "").split())
        if not description:
            raise ValueError("a meeting needs a description")
        description = description[:MEETING_DESCRIPTION_MAX]
        if starts_at <= now:
            raise ValueError("the meeting has already started")
        offsets = list(default_offsets(self._content) if offsets is None else offsets)
        with self._sessions() as session:
            if project_id is not None:
                project = session.get(Project, project_id)
                if project is None or project.champion_id != champion_id:
                    raise LookupError(f"champion {champion_id} has no project {project_id}")
            meeting = Meeting(
                champion_id=champion_id,
                project_id=project_id,
                description=description,
                starts_at=starts_at,
                time_zone=time_zone,
                created_at=now,
                updated_at=now,
            )
            for kind, minutes, when in self._schedule(starts_at, time_zone, offsets, after_meeting):
                if when > now:
                    meeting.reminders.append(
                        Reminder(
                            kind=kind,
                            offset_minutes=minutes,
                            due_at=when,
                            status=STATUS_PENDING,
                            generation=0,
                            late=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
            session.add(meeting)
            session.commit()
            return self._load(session, meeting.id)

    @staticmethod
    def _load(session: Session, meeting_id: int) -> Optional[MeetingView]:
        """The meeting with its reminders, read fresh."""
        row = session.execute(
            select(Meeting)
            .where(Meeting.id == meeting_id)
            .options(selectinload(Meeting.reminders))
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        return _meeting_view(row) if row is not None else None

    # --- reading ----------------------------------------------------------------------------------

    def meeting(self, champion_id: int, meeting_id: Any) -> Optional[MeetingView]:
        """The champion's meeting with this id, or None (also for someone else's)."""
        try:
            meeting_id = int(meeting_id)
        except (TypeError, ValueError):
            return None
        if not 0 < meeting_id < 2**31:  # no such row (a huge number would overflow the database's integer)
            return None
        with self._sessions() as session:
            view = self._load(session, meeting_id)
        return view if view is not None and view.champion_id == champion_id else None

    def upcoming(self, champion_id: int, now: Optional[datetime] = None, limit: int = 20) -> List[MeetingView]:
        """The champion's meetings not yet started and not cancelled, soonest first."""
        now = _aware(now, "now") if now is not None else utcnow()
        with self._sessions() as session:
            rows = session.execute(
                select(Meeting)
                .where(
                    Meeting.champion_id == champion_id,
                    Meeting.cancelled_at.is_(None),
                    Meeting.starts_at > now,
                )
                .order_by(Meeting.starts_at, Meeting.id)
                .limit(max(0, limit))
                .options(selectinload(Meeting.reminders))
            ).scalars().all()
            return [_meeting_view(row) for row in rows]

    def reminder(self, champion_id: int, reminder_id: Any) -> Optional[Tuple[MeetingView, ReminderView]]:
        """(meeting, reminder) for the champion's reminder with this id, or None."""
        try:
            reminder_id = int(reminder_id)
        except (TypeError, ValueError):
            return None
        if not 0 < reminder_id < 2**31:  # no such row (a huge number would overflow the database's integer)
            return None
        with self._sessions() as session:
            row = session.get(Reminder, reminder_id)
            if row is None:
                return None
            meeting = self._load(session, row.meeting_id)
        if meeting is None or meeting.champion_id != champion_id:
            return None
        return meeting, next(r for r in meeting.reminders if r.id == reminder_id)

    def last_handed(self, champion_id: int) -> Optional[Tuple[MeetingView, ReminderView]]:
        """(meeting, reminder) of the champion's reminder handed over most recently, or None."""
        with self._sessions() as session:
            row = session.execute(
                select(Reminder.id)
                .join(Meeting, Meeting.id == Reminder.meeting_id)
                .where(
                    Meeting.champion_id == champion_id,
                    Reminder.status.in_((STATUS_QUEUED, STATUS_SENT)),
                    Reminder.handled_at.is_not(None),
                )
                .order_by(Reminder.handled_at.desc(), Reminder.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return self.reminder(champion_id, row) if row is not None else None

    def pending_count(self) -> int:
        """How many reminders are still to go, for everyone."""
        with self._sessions() as session:
            return int(
                session.execute(
                    select(func.count()).select_from(Reminder).where(Reminder.status == STATUS_PENDING)
                ).scalar_one()
            )

    # --- changing ---------------------------------------------------------------------------------

    def cancel_meeting(self, champion_id: int, meeting_id: Any, now: Optional[datetime] = None) -> bool:
        """Cancel the champion's meeting and its reminders still to go; False if there was none to cancel."""
        now = _aware(now, "now") if now is not None else utcnow()
        view = self.meeting(champion_id, meeting_id)
        if view is None or view.cancelled_at is not None:
            return False
        with self._sessions() as session:
            session.execute(
                update(Meeting)
                .where(Meeting.id == view.id, Meeting.cancelled_at.is_(None))
                .values(cancelled_at=now, updated_at=now)
            )
            session.execute(
                update(Reminder)
                .where(Reminder.meeting_id == view.id, Reminder.status == STATUS_PENDING)
                .values(status=STATUS_CANCELLED, updated_at=now)
            )
            session.commit()
        return True

    def cancel_all(self, champion_id: int, now: Optional[datetime] = None) -> int:
        """Cancel every upcoming meeting of the champion (and their reminders); returns how many."""
        now = _aware(now, "now") if now is not None else utcnow()
        return sum(1 for meeting in self.upcoming(champion_id, now, limit=10_000)
                   if self.cancel_meeting(champion_id, meeting.id, now))

    def cancel_reminder(self, champion_id: int, reminder_id: Any, now: Optional[datetime] = None) -> bool:
        """Cancel one reminder still to go (the meeting stays); False if there was none."""
        now = _aware(now, "now") if now is not None else utcnow()
        found = self.reminder(champion_id, reminder_id)
        if found is None:
            return False
        with self._sessions() as session:
            result = session.execute(
                update(Reminder)
                .where(Reminder.id == found[1].id, Reminder.status == STATUS_PENDING)
                .values(status=STATUS_CANCELLED, updated_at=now)
            )
            session.commit()
        return result.rowcount == 1

    def reschedule(
        self, champion_id: int, meeting_id: Any, starts_at: datetime, now: Optional[datetime] = None
    ) -> Optional[MeetingView]:
        """Move the meeting to starts_at and every reminder with it; None if there is no such meeting.

        A reminder whose new time is still ahead goes (again, under a new key if it
        already went); one whose new time has passed is cancelled, not sent late.
        """
        now = _aware(now, "now") if now is not None else utcnow()
        starts_at = _aware(starts_at, "starts_at")
        if starts_at <= now:
            raise ValueError("the meeting would already have started")
        view = self.meeting(champion_id, meeting_id)
        if view is None or view.cancelled_at is not None:
            return None
        with self._sessions() as session:
            meeting = session.get(Meeting, view.id)
            meeting.starts_at = starts_at
            meeting.updated_at = now
            for row in meeting.reminders:
                if row.status == STATUS_CANCELLED:
                    continue
                if row.kind == KIND_AFTER_MEETING:
                    new_due = after_meeting_at(starts_at, self._content)
                else:
                    new_due = due_at(starts_at, Offset(row.offset_minutes), meeting.time_zone)
                went = row.status in (STATUS_QUEUED, STATUS_SENT)
                if new_due > now:
                    if went:
                        row.generation += 1
                        row.outbound_id = None
                        row.handled_at = None
                    row.status = STATUS_PENDING
                    row.late = False
                elif row.status == STATUS_PENDING:
                    row.status = STATUS_CANCELLED
                row.due_at = new_due
                row.snoozed_until = None
                row.updated_at = now
            session.commit()
            return self._load(session, view.id)

    def snooze(
        self, champion_id: int, reminder_id: Any, until: datetime, now: Optional[datetime] = None
    ) -> Optional[ReminderView]:
        """Send the reminder (again) at until; None if there is no such reminder.

        Refuses (ValueError) a time already gone, or one after the meeting has started
        for a reminder meant to come before it.
        """
        now = _aware(now, "now") if now is not None else utcnow()
        until = _aware(until, "until")
        found = self.reminder(champion_id, reminder_id)
        if found is None:
            return None
        meeting, reminder = found
        if until <= now:
            raise ValueError("that time has already gone")
        if meeting.cancelled_at is not None:
            raise ValueError("the meeting was cancelled")
        if reminder.kind != KIND_AFTER_MEETING and until >= meeting.starts_at:
            raise ValueError("that is after the meeting starts")
        with self._sessions() as session:
            row = session.get(Reminder, reminder.id)
            if row.status in (STATUS_QUEUED, STATUS_SENT, STATUS_MISSED):
                row.generation += 1
                row.outbound_id = None
                row.handled_at = None
            row.status = STATUS_PENDING
            row.late = False
            row.due_at = until
            row.snoozed_until = until
            row.updated_at = now
            session.commit()
            return _reminder_view(row)

    # --- the scheduler's side ---------------------------------------------------------------------

    def due(self, now: Optional[datetime] = None, limit: int = 1000) -> List[DueReminder]:
        """Pending reminders due by now (oldest first) of meetings not cancelled."""
        now = _aware(now, "now") if now is not None else utcnow()
        with self._sessions() as session:
            rows = session.execute(
                select(
                    Reminder.id,
                    Reminder.generation,
                    Reminder.kind,
                    Reminder.offset_minutes,
                    Reminder.due_at,
                    Meeting.id,
                    Meeting.champion_id,
                    Meeting.project_id,
                    Meeting.description,
                    Meeting.starts_at,
                    Meeting.time_zone,
                    Champion.time_zone,
                )
                .join(Meeting, Meeting.id == Reminder.meeting_id)
                .join(Champion, Champion.id == Meeting.champion_id)
                .where(Reminder.status == STATUS_PENDING, Reminder.due_at <= now, Meeting.cancelled_at.is_(None))
                .order_by(Reminder.due_at, Reminder.id)
                .limit(max(0, limit))
            ).all()
        return [
            DueReminder(
                id=row[0],
                generation=row[1],
                kind=row[2],
                offset_minutes=row[3],
                due_at=as_utc(row[4]),
                meeting_id=row[5],
                champion_id=row[6],
                project_id=row[7],
                description=row[8],
                starts_at=as_utc(row[9]),
                time_zone=row[10],
                champion_time_zone=row[11],
            )
            for row in rows
        ]

    def next_due_at(self) -> Optional[datetime]:
        """When the soonest pending reminder is due (UTC), or None."""
        with self._sessions() as session:
            value = session.execute(
                select(func.min(Reminder.due_at)).where(Reminder.status == STATUS_PENDING)
            ).scalar_one()
        return as_utc(value)

    def mark_queued_many(self, handed: Iterable[Tuple[int, int, Optional[int], bool]], now: Optional[datetime] = None) -> int:
        """Record (reminder id, generation, outbound id, late) hand-overs; only pending rows of that generation change."""
        now = _aware(now, "now") if now is not None else utcnow()
        params = [
            {"rid": rid, "gen": generation, "oid": outbound_id, "late": bool(late), "now": now}
            for rid, generation, outbound_id, late in handed
        ]
        return self._update_many(
            update(Reminder.__table__)
            .where(
                Reminder.id == bindparam("rid"),
                Reminder.generation == bindparam("gen"),
                Reminder.status == STATUS_PENDING,
            )
            .values(
                status=STATUS_QUEUED,
                outbound_id=bindparam("oid"),
                late=bindparam("late"),
                handled_at=bindparam("now"),
                updated_at=bindparam("now"),
            ),
            params,
        )

    def mark_queued(self, reminder_id: int, generation: int, outbound_id: Optional[int], late: bool = False, now: Optional[datetime] = None) -> bool:
        """Record that one reminder was handed to the delivery layer."""
        return self.mark_queued_many([(reminder_id, generation, outbound_id, late)], now) == 1

    def mark_missed_many(self, missed: Iterable[Tuple[int, int]], now: Optional[datetime] = None) -> int:
        """Record (reminder id, generation) as missed: its time passed while we were down and the moment is gone."""
        now = _aware(now, "now") if now is not None else utcnow()
        params = [{"rid": rid, "gen": generation, "now": now} for rid, generation in missed]
        return self._update_many(
            update(Reminder.__table__)
            .where(
                Reminder.id == bindparam("rid"),
                Reminder.generation == bindparam("gen"),
                Reminder.status == STATUS_PENDING,
            )
            .values(status=STATUS_MISSED, handled_at=bindparam("now"), updated_at=bindparam("now")),
            params,
        )

    def mark_missed(self, reminder_id: int, generation: int, now: Optional[datetime] = None) -> bool:
        """Record one reminder as missed."""
        return self.mark_missed_many([(reminder_id, generation)], now) == 1

    def _update_many(self, statement, params: List[Dict[str, Any]]) -> int:
        """Run one Core UPDATE for every parameter set (executemany) in one transaction; how many rows changed."""
        if not params:
            return 0
        with self._sessions() as session:
            result = session.connection().execute(statement, params)
            session.commit()
        return int(result.rowcount or 0)

    def sync_sent(self, now: Optional[datetime] = None) -> int:
        """Mark queued reminders as sent once the delivery layer has sent their message; returns how many."""
        now = _aware(now, "now") if now is not None else utcnow()
        delivered = (
            select(OutboundMessage.id)
            .where(OutboundMessage.id == Reminder.outbound_id, OutboundMessage.status == OUTBOUND_SENT)
            .exists()
        )
        with self._sessions() as session:
            result = session.execute(
                update(Reminder)
                .where(Reminder.status == STATUS_QUEUED, delivered)
                .values(status=STATUS_SENT, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return int(result.rowcount or 0)

    # --- who --------------------------------------------------------------------------------------

    def champion_exists(self, champion_id: int) -> bool:
        """True while the champion's row exists (deleting it removes their meetings and reminders)."""
        with self._sessions() as session:
            return session.get(Champion, champion_id) is not None
