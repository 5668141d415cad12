"""Following pledges up: check-ins in the app database, and handing due ones to the delivery layer exactly once.

A pledge and its first check-in are made by the reflection form; from then on
everything is here. `CheckInRepository` reads a champion's pledges, records
the answer given at a check-in (or at any time: "I've done my pledge") and
adds the next check-in after "in progress". `CheckInDispatcher.run_once()` is
the scheduler's pass (bot/reminder_scheduler.py runs it on every tick): each
pending check-in due by now becomes one outbox row with
``source_key = "checkin:<id>"`` and is then marked queued. As with reminders, a
crash between the two steps is harmless: the outbox stores each key once and
the next pass only marks it. A check-in whose time passed while the service was
down simply goes late. Champions who asked for their data to be deleted get
nothing more.

One short transaction per call (SQLAlchemy 2.0 style); times go in and come
out as aware UTC datetimes. Wording is in knowledge/checkins.yml.
"""
from __future__ import annotations

import calendar
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.content import load_yaml
from bot.models import Champion, as_utc, utcnow
from bot.plans import fill, shorten
from bot.reflection_models import (
    CHECK_IN_ANSWERED,
    CHECK_IN_ANSWERS,
    CHECK_IN_CANCELLED,
    CHECK_IN_PENDING,
    CHECK_IN_QUEUED,
    PLEDGE_DONE,
    PLEDGE_IN_PROGRESS,
    PLEDGE_LET_GO,
    Pledge,
    PledgeCheckIn,
    check_in_source_key,
)
from bot.reminder_times import say_day, zone

log = logging.getLogger(__name__)

CONTENT_FILE = Path(__file__).resolve().parent.parent / "knowledge" / "checkins.yml"
OUTBOX_KIND = "checkin"
DEFAULT_BATCH_SIZE = 1000
# A pledge with one of these statuses is finished: no more check-ins.
CLOSED_STATUSES = (PLEDGE_DONE, PLEDGE_LET_GO)
# Check-ins still waiting for an answer: not yet sent, or sent and not answered.
OPEN_CHECK_INS = (CHECK_IN_PENDING, CHECK_IN_QUEUED)
# What happened to an answer (AnswerResult.outcome).
RECORDED = "recorded"
NOT_FOUND = "not_found"
ALREADY_ANSWERED = "already_answered"
CANCELLED = "cancelled"
CLOSED = "closed"


# --- content and dates ---------------------------------------------------------------------------


def load_content(path: Path = CONTENT_FILE) -> Dict[str, Any]:
    """knowledge/checkins.yml as a dict, read once and then cached."""
    return load_yaml(path)


def champion_zone(time_zone: Optional[str], content: Optional[Mapping[str, Any]] = None) -> str:
    """The champion's IANA zone, or the default one when unset or unknown (bot.time_zones decides)."""
    from bot.time_zones import champion_zone as zone_of

    return zone_of(time_zone)


def _time_of_day(content: Mapping[str, Any]) -> time:
    """The local time a check-in goes on its day."""
    hour, minute = str(content["timing"]["time_of_day"]).split(":")
    return time(int(hour), int(minute))


def check_in_on(day: date, time_zone: Optional[str] = None, content: Optional[Mapping[str, Any]] = None) -> datetime:
    """When a check-in on day goes (the configured local time), in UTC."""
    content = content or load_content()
    tz = zone(champion_zone(time_zone, content))
    return datetime.combine(day, _time_of_day(content)).replace(tzinfo=tz).astimezone(timezone.utc)


def _add_months(day: date, months: int) -> date:
    """The same day months later (the month's last day when it is shorter)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def check_in_day(choice: str, today: date, content: Optional[Mapping[str, Any]] = None) -> date:
    """The day a choice ("two_weeks", "month") means, counted from today on the champion's calendar."""
    spec = (content or load_content())["timing"]["choices"].get(choice)
    if spec is None:
        raise ValueError(f"unknown check-in choice {choice!r}")
    return _add_months(today, int(spec["months"])) if "months" in spec else today + timedelta(days=int(spec["days"]))


def check_in_due(
    choice: str, now: datetime, time_zone: Optional[str] = None, content: Optional[Mapping[str, Any]] = None
) -> datetime:
    """When a check-in chosen as choice ("two_weeks", "month") from now goes, in UTC."""
    content = content or load_content()
    name = champion_zone(time_zone, content)
    return check_in_on(check_in_day(choice, now.astimezone(zone(name)).date(), content), name, content)


def say_check_in_day(moment: datetime, now: datetime, time_zone: Optional[str] = None) -> str:
    """"Monday 7 December" (with the year when not this year) in the champion's zone."""
    name = champion_zone(time_zone)
    return say_day(moment.astimezone(zone(name)).date(), now.astimezone(zone(name)))


# --- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckInView:
    """A check-in, detached from the database session."""

    id: int
    pledge_id: int
    champion_id: int
    due_at: datetime
    status: str
    answer: Optional[str]
    answered_at: Optional[datetime]
    handled_at: Optional[datetime]
    outbound_id: Optional[int]

    @property
    def source_key(self) -> str:
        """Its key in the delivery layer."""
        return check_in_source_key(self.id)


@dataclass(frozen=True)
class PledgeView:
    """A pledge with where it stands and its next check-in, detached from the database session."""

    id: int
    champion_id: int
    text: str
    status: str
    created_at: datetime
    done_at: Optional[datetime]
    next_check_in: Optional[CheckInView] = None

    @property
    def closed(self) -> bool:
        """True when it is done or let go."""
        return self.status in CLOSED_STATUSES


@dataclass(frozen=True)
class DueCheckIn:
    """A check-in whose time has come, with what the dispatcher needs to word and address it."""

    id: int
    pledge_id: int
    champion_id: int
    due_at: datetime
    pledge: str
    pledge_made_at: datetime
    time_zone: Optional[str]

    @property
    def source_key(self) -> str:
        """Its key in the delivery layer."""
        return check_in_source_key(self.id)


@dataclass(frozen=True)
class AnswerResult:
    """What recording an answer did: the outcome, the pledge as it now stands, and the next check-in if one was added."""

    outcome: str
    pledge: Optional[PledgeView] = None
    check_in: Optional[CheckInView] = None
    next_check_in: Optional[CheckInView] = None

    @property
    def recorded(self) -> bool:
        """True when the answer was saved."""
        return self.outcome == RECORDED


def _check_in_view(row: PledgeCheckIn) -> CheckInView:
    """A detached copy of a check-in row."""
    return CheckInView(
        id=row.id,
        pledge_id=row.pledge_id,
        champion_id=row.champion_id,
        due_at=as_utc(row.due_at),
        status=row.status,
        answer=row.answer,
        answered_at=as_utc(row.answered_at),
        handled_at=as_utc(row.handled_at),
        outbound_id=row.outbound_id,
    )


def _pledge_view(row: Pledge, check_ins: Sequence[PledgeCheckIn]) -> PledgeView:
    """A detached copy of a pledge row with its soonest pending check-in."""
    pending = sorted((c for c in check_ins if c.status == CHECK_IN_PENDING), key=lambda c: (as_utc(c.due_at), c.id))
    return PledgeView(
        id=row.id,
        champion_id=row.champion_id,
        text=row.text,
        status=row.status,
        created_at=as_utc(row.created_at),
        done_at=as_utc(row.done_at),
        next_check_in=_check_in_view(pending[0]) if pending else None,
    )


def _aware(moment: Optional[datetime], name: str) -> datetime:
    """moment in UTC (now when None), refusing a naive datetime."""
    if moment is None:
        return utcnow()
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(timezone.utc)


def _as_id(value: Any) -> Optional[int]:
    """value as a positive row id, or None (for "abc", "", -1, huge numbers)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**31 else None


# --- the repository ------------------------------------------------------------------------------


class CheckInRepository:
    """Pledges and their check-ins in the app database, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]", content: Optional[Mapping[str, Any]] = None) -> None:
        """Use session_factory (see bot.db.make_session_factory); content is knowledge/checkins.yml."""
        self._sessions = session_factory
        self._content = content or load_content()

    # --- reading ----------------------------------------------------------------------------------

    def time_zone(self, champion_id: int) -> str:
        """The champion's time zone (the default when unset)."""
        with self._sessions() as session:
            value = session.execute(select(Champion.time_zone).where(Champion.id == champion_id)).scalar_one_or_none()
        return champion_zone(value, self._content)

    def _pledge_rows(self, session: Session, champion_id: int, pledge_ids: Optional[Sequence[int]] = None) -> List[PledgeView]:
        """The champion's pledges (all, or those with these ids) with their check-ins, oldest first."""
        query = select(Pledge).where(Pledge.champion_id == champion_id)
        if pledge_ids is not None:
            query = query.where(Pledge.id.in_(list(pledge_ids)))
        pledges = session.execute(query.order_by(Pledge.created_at, Pledge.id)).scalars().all()
        if not pledges:
            return []
        check_ins: Dict[int, List[PledgeCheckIn]] = {}
        for row in session.execute(
            select(PledgeCheckIn).where(PledgeCheckIn.pledge_id.in_([p.id for p in pledges]))
        ).scalars():
            check_ins.setdefault(row.pledge_id, []).append(row)
        return [_pledge_view(p, check_ins.get(p.id, [])) for p in pledges]

    def pledges(self, champion_id: int) -> List[PledgeView]:
        """Every pledge of the champion, oldest first, each with its next check-in."""
        with self._sessions() as session:
            return self._pledge_rows(session, champion_id)

    def open_pledges(self, champion_id: int) -> List[PledgeView]:
        """The champion's pledges not yet done or let go, oldest first."""
        return [p for p in self.pledges(champion_id) if not p.closed]

    def pledge(self, champion_id: int, pledge_id: Any) -> Optional[PledgeView]:
        """The champion's pledge with this id, or None (also for someone else's or a malformed id)."""
        number = _as_id(pledge_id)
        if number is None:
            return None
        with self._sessions() as session:
            found = self._pledge_rows(session, champion_id, [number])
        return found[0] if found else None

    def check_in(self, champion_id: int, check_in_id: Any) -> Optional[CheckInView]:
        """The champion's check-in with this id, or None (also for someone else's or a malformed id)."""
        number = _as_id(check_in_id)
        if number is None:
            return None
        with self._sessions() as session:
            row = session.get(PledgeCheckIn, number)
            return _check_in_view(row) if row is not None and row.champion_id == champion_id else None

    def _latest(self, champion_id: int, status: str, newest_by: Any) -> Optional[CheckInView]:
        """The champion's check-in in status with the highest newest_by (of a pledge still open), or None."""
        with self._sessions() as session:
            row = session.execute(
                select(PledgeCheckIn)
                .join(Pledge, Pledge.id == PledgeCheckIn.pledge_id)
                .where(
                    PledgeCheckIn.champion_id == champion_id,
                    PledgeCheckIn.status == status,
                    Pledge.status.not_in(CLOSED_STATUSES),
                )
                .order_by(newest_by.desc(), PledgeCheckIn.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            return _check_in_view(row) if row is not None else None

    def latest_outstanding(self, champion_id: int) -> Optional[CheckInView]:
        """The champion's check-in sent most recently and not yet answered (of a pledge still open), or None."""
        return self._latest(champion_id, CHECK_IN_QUEUED, PledgeCheckIn.handled_at)

    def latest_pending(self, champion_id: int) -> Optional[CheckInView]:
        """The champion's check-in still to go that was added most recently (of a pledge still open), or None."""
        return self._latest(champion_id, CHECK_IN_PENDING, PledgeCheckIn.created_at)

    # --- changing ---------------------------------------------------------------------------------

    def add_check_in(self, champion_id: int, pledge_id: int, due_at: datetime, now: Optional[datetime] = None) -> CheckInView:
        """Add a check-in for the champion's pledge at due_at (LookupError if the pledge is not theirs)."""
        now = _aware(now, "now")
        due_at = _aware(due_at, "due_at")
        with self._sessions() as session:
            pledge = session.get(Pledge, _as_id(pledge_id) or 0)
            if pledge is None or pledge.champion_id != champion_id:
                raise LookupError(f"champion {champion_id} has no pledge {pledge_id}")
            row = PledgeCheckIn(
                pledge_id=pledge.id, champion_id=champion_id, due_at=due_at, status=CHECK_IN_PENDING,
                created_at=now, updated_at=now,
            )
            session.add(row)
            session.commit()
            return _check_in_view(row)

    def reschedule(self, champion_id: int, check_in_id: Any, due_at: datetime, now: Optional[datetime] = None) -> Optional[CheckInView]:
        """Move the champion's check-in still to go to due_at; None if there is no such pending check-in."""
        now = _aware(now, "now")
        due_at = _aware(due_at, "due_at")
        found = self.check_in(champion_id, check_in_id)
        if found is None:
            return None
        with self._sessions() as session:
            result = session.execute(
                update(PledgeCheckIn)
                .where(PledgeCheckIn.id == found.id, PledgeCheckIn.status == CHECK_IN_PENDING)
                .values(due_at=due_at, updated_at=now)
            )
            session.commit()
        return self.check_in(champion_id, found.id) if result.rowcount == 1 else None

    def answer(self, champion_id: int, check_in_id: Any, answer: str, now: Optional[datetime] = None) -> AnswerResult:
        """Record the answer tapped at a check-in: on the check-in, and on its pledge (see _apply)."""
        if answer not in CHECK_IN_ANSWERS:
            raise ValueError(f"unknown answer {answer!r}")
        now = _aware(now, "now")
        number = _as_id(check_in_id)
        if number is None:
            return AnswerResult(NOT_FOUND)
        with self._sessions() as session:
            row = session.get(PledgeCheckIn, number)
            if row is None or row.champion_id != champion_id:
                return AnswerResult(NOT_FOUND)
            pledge = session.execute(select(Pledge).where(Pledge.id == row.pledge_id).with_for_update()).scalar_one()
            refusal = self._refusal(session, row, pledge)
            if refusal is not None:
                return refusal
            result = session.execute(
                update(PledgeCheckIn)
                .where(PledgeCheckIn.id == row.id, PledgeCheckIn.status.in_(OPEN_CHECK_INS))
                .values(status=CHECK_IN_ANSWERED, answer=answer, answered_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # answered a moment ago (a double tap)
                session.rollback()
                return AnswerResult(ALREADY_ANSWERED, self.pledge(champion_id, row.pledge_id), self.check_in(champion_id, number))
            next_row = self._apply(session, pledge, answer, now)
            session.commit()
            next_view = _check_in_view(next_row) if next_row is not None else None
        return AnswerResult(RECORDED, self.pledge(champion_id, pledge.id), self.check_in(champion_id, number), next_view)

    def _refusal(self, session: Session, row: PledgeCheckIn, pledge: Pledge) -> Optional[AnswerResult]:
        """Why an answer to this check-in can't be recorded (None when it can)."""
        views = _pledge_rows_for(session, pledge)
        check_in = _check_in_view(row)
        if row.status == CHECK_IN_ANSWERED:
            return AnswerResult(ALREADY_ANSWERED, views, check_in)
        if row.status == CHECK_IN_CANCELLED:
            return AnswerResult(CANCELLED, views, check_in)
        if pledge.status in CLOSED_STATUSES:
            return AnswerResult(CLOSED, views, check_in)
        return None

    def answer_pledge(self, champion_id: int, pledge_id: Any, answer: str, now: Optional[datetime] = None) -> AnswerResult:
        """Record an answer about a pledge at any time ("I've done my pledge"); a check-in waiting for it is answered too."""
        if answer not in CHECK_IN_ANSWERS:
            raise ValueError(f"unknown answer {answer!r}")
        now = _aware(now, "now")
        number = _as_id(pledge_id)
        if number is None:
            return AnswerResult(NOT_FOUND)
        with self._sessions() as session:
            pledge = session.execute(select(Pledge).where(Pledge.id == number).with_for_update()).scalar_one_or_none()
            if pledge is None or pledge.champion_id != champion_id:
                return AnswerResult(NOT_FOUND)
            if pledge.status in CLOSED_STATUSES:
                return AnswerResult(CLOSED, _pledge_rows_for(session, pledge))
            session.execute(
                update(PledgeCheckIn)
                .where(PledgeCheckIn.pledge_id == pledge.id, PledgeCheckIn.status == CHECK_IN_QUEUED)
                .values(status=CHECK_IN_ANSWERED, answer=answer, answered_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            next_row = self._apply(session, pledge, answer, now)
            session.commit()
            next_view = _check_in_view(next_row) if next_row is not None else None
        return AnswerResult(RECORDED, self.pledge(champion_id, number), None, next_view)

    def mark_done(self, champion_id: int, pledge_id: Any, now: Optional[datetime] = None) -> AnswerResult:
        """Mark the champion's pledge done at any time (its check-ins still to go are cancelled)."""
        return self.answer_pledge(champion_id, pledge_id, PLEDGE_DONE, now)

    def _apply(self, session: Session, pledge: Pledge, answer: str, now: datetime) -> Optional[PledgeCheckIn]:
        """Set the pledge's status from answer; done or let go cancel its check-ins still to go, in progress adds the next.

        Returns the check-in added, if any.
        """
        pledge.status = answer
        pledge.updated_at = now
        if answer == PLEDGE_DONE:
            pledge.done_at = now
        if answer in CLOSED_STATUSES:
            session.execute(
                update(PledgeCheckIn)
                .where(PledgeCheckIn.pledge_id == pledge.id, PledgeCheckIn.status == CHECK_IN_PENDING)
                .values(status=CHECK_IN_CANCELLED, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            return None
        if answer != PLEDGE_IN_PROGRESS:
            return None
        waiting = session.execute(
            select(PledgeCheckIn.id).where(
                PledgeCheckIn.pledge_id == pledge.id, PledgeCheckIn.status == CHECK_IN_PENDING
            ).limit(1)
        ).scalar_one_or_none()
        if waiting is not None:  # a check-in is already coming: that one is the next
            return session.get(PledgeCheckIn, waiting)
        time_zone = session.execute(select(Champion.time_zone).where(Champion.id == pledge.champion_id)).scalar_one_or_none()
        row = PledgeCheckIn(
            pledge_id=pledge.id,
            champion_id=pledge.champion_id,
            due_at=check_in_due(str(self._content["timing"]["default_next"]), now, time_zone, self._content),
            status=CHECK_IN_PENDING,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        return row

    # --- the scheduler's side ---------------------------------------------------------------------

    def due(self, now: Optional[datetime] = None, limit: int = DEFAULT_BATCH_SIZE) -> List[DueCheckIn]:
        """Pending check-ins due by now (oldest first) of open pledges, skipping champions whose data is being deleted."""
        now = _aware(now, "now")
        with self._sessions() as session:
            rows = session.execute(
                select(
                    PledgeCheckIn.id,
                    PledgeCheckIn.pledge_id,
                    PledgeCheckIn.champion_id,
                    PledgeCheckIn.due_at,
                    Pledge.text,
                    Pledge.created_at,
                    Champion.time_zone,
                )
                .join(Pledge, Pledge.id == PledgeCheckIn.pledge_id)
                .join(Champion, Champion.id == PledgeCheckIn.champion_id)
                .where(
                    PledgeCheckIn.status == CHECK_IN_PENDING,
                    PledgeCheckIn.due_at <= now,
                    Pledge.status.not_in(CLOSED_STATUSES),
                    Champion.erasure_requested_at.is_(None),
                )
                .order_by(PledgeCheckIn.due_at, PledgeCheckIn.id)
                .limit(max(0, limit))
            ).all()
        return [
            DueCheckIn(
                id=row[0], pledge_id=row[1], champion_id=row[2], due_at=as_utc(row[3]),
                pledge=row[4], pledge_made_at=as_utc(row[5]), time_zone=row[6],
            )
            for row in rows
        ]

    def mark_queued_many(self, handed: Iterable[Tuple[int, Optional[int]]], now: Optional[datetime] = None) -> int:
        """Record (check-in id, outbound id) hand-overs; only pending rows change. Returns how many did."""
        now = _aware(now, "now")
        params = [{"cid": cid, "oid": oid, "now": now} for cid, oid in handed]
        if not params:
            return 0
        statement = (
            update(PledgeCheckIn.__table__)
            .where(PledgeCheckIn.id == bindparam("cid"), PledgeCheckIn.status == CHECK_IN_PENDING)
            .values(status=CHECK_IN_QUEUED, outbound_id=bindparam("oid"), handled_at=bindparam("now"), updated_at=bindparam("now"))
        )
        with self._sessions() as session:
            result = session.connection().execute(statement, params)
            session.commit()
        return int(result.rowcount or 0)

    def mark_queued(self, check_in_id: int, outbound_id: Optional[int], now: Optional[datetime] = None) -> bool:
        """Record that one check-in was handed to the delivery layer."""
        return self.mark_queued_many([(check_in_id, outbound_id)], now) == 1


def _pledge_rows_for(session: Session, pledge: Pledge) -> PledgeView:
    """The pledge as a view, with its check-ins read in the same session."""
    check_ins = session.execute(select(PledgeCheckIn).where(PledgeCheckIn.pledge_id == pledge.id)).scalars().all()
    return _pledge_view(pledge, check_ins)


# --- what a check-in says ------------------------------------------------------------------------


class CheckInWording:
    """Builds each check-in message's text and buttons from knowledge/checkins.yml."""

    def __init__(self, content: Optional[Mapping[str, Any]] = None) -> None:
        """Use content (default: knowledge/checkins.yml)."""
        self.content = content or load_content()

    def text(self, due: DueCheckIn, now: datetime) -> str:
        """"Time for a check-in on your pledge: ... How is it going?"."""
        spec = self.content["check_in"]
        return fill(
            str(spec["text"]).strip(),
            pledge=shorten(due.pledge, int(spec["pledge_chars"])),
            made=say_check_in_day(due.pledge_made_at, now, due.time_zone),
        )

    def buttons(self, check_in_id: int) -> List[Dict[str, str]]:
        """Done / In progress / Need help / Let it go, each carrying the check-in's id."""
        payload = self.content["payloads"]["answer"]
        return [
            {"title": str(b["title"]), "payload": fill(payload, check_in_id=check_in_id, answer=b["answer"])}
            for b in self.content["check_in"]["buttons"]
        ]


# --- one pass ------------------------------------------------------------------------------------


@dataclass
class CheckInTickResult:
    """What one pass did."""

    queued: int = 0
    late: int = 0
    lateness: List[float] = field(default_factory=list)  # seconds past due, per check-in handed over


class CheckInDispatcher:
    """Hands due check-ins to the outbox and marks them queued (synchronous; the scheduler runs it in a thread)."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        *,
        content: Optional[Mapping[str, Any]] = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        late_after_seconds: float = 120.0,
    ) -> None:
        """Work on the database behind session_factory, batch_size check-ins at a time."""
        from bot.outbox import OutboxRepository

        self.content = content or load_content()
        self._sessions = session_factory
        self.repository = CheckInRepository(session_factory, self.content)
        self.outbox = OutboxRepository(session_factory)
        self.wording = CheckInWording(self.content)
        self.batch_size = max(1, int(batch_size))
        self.late_after = timedelta(seconds=float(late_after_seconds))

    def run_once(self, now: Optional[datetime] = None) -> CheckInTickResult:
        """Hand every check-in due by now to the outbox (late ones too) and mark them queued; returns what was done."""
        now = _aware(now, "now")
        result = CheckInTickResult()
        while True:
            batch = self.repository.due(now, limit=self.batch_size)
            if not batch:
                break
            rows = [
                {
                    "champion_id": due.champion_id,
                    "text": self.wording.text(due, now),
                    "kind": OUTBOX_KIND,
                    "source_key": due.source_key,
                    "buttons": self.wording.buttons(due.id),
                    "not_before": now,
                }
                for due in batch
            ]
            self.outbox.enqueue_each(rows)
            ids = self.outbox.ids_by_source_key([due.source_key for due in batch])
            marked = self.repository.mark_queued_many([(due.id, ids.get(due.source_key)) for due in batch], now)
            result.queued += marked
            lateness = [(now - due.due_at).total_seconds() for due in batch]
            result.lateness += lateness
            result.late += sum(1 for seconds in lateness if seconds > self.late_after.total_seconds())
            if len(batch) < self.batch_size or marked == 0:
                break
        if result.late:
            log.info("%d check-in(s) sent late: their time passed while we were down", result.late)
        return result


# --- reading typed answers -----------------------------------------------------------------------


def _phrase_pattern(phrase: str) -> "re.Pattern[str]":
    """A whole-words, any-case pattern for phrase."""
    words = [re.escape(w) for w in phrase.casefold().split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)")


def _normalise(text: Any) -> str:
    """Lower case with straight apostrophes and single spaces."""
    return " ".join(str(text or "").casefold().replace("’", "'").split())


def read_answer(text: Any, content: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The check-in answer a typed message gives ("still working on it" -> in_progress), or None."""
    content = content or load_content()
    plain = _normalise(text)
    if not plain or plain.startswith("/"):
        return None
    best: Optional[Tuple[int, int, str]] = None
    for order, (answer, phrases) in enumerate(content["answer_words"].items()):
        for phrase in phrases:
            match = _phrase_pattern(str(phrase)).search(plain)
            if match and (best is None or (match.start(), order) < best[:2]):
                best = (match.start(), order, answer)
    return best[2] if best else None


def read_when_choice(text: Any, content: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The next-check-in choice a typed message names ("in a month" -> "month"), or None."""
    content = content or load_content()
    plain = _normalise(text)
    for choice, phrases in content["when_words"].items():
        if any(_phrase_pattern(str(p)).search(plain) for p in phrases):
            return choice
    return None


__all__ = [
    "ALREADY_ANSWERED",
    "AnswerResult",
    "CANCELLED",
    "CLOSED",
    "CheckInDispatcher",
    "CheckInRepository",
    "CheckInTickResult",
    "CheckInView",
    "CheckInWording",
    "DueCheckIn",
    "NOT_FOUND",
    "OUTBOX_KIND",
    "PledgeView",
    "RECORDED",
    "check_in_due",
    "check_in_on",
    "load_content",
    "read_answer",
    "read_when_choice",
]
