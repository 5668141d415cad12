"""Reflections after a session or meeting, and the pledges made in them, in the app database.

One short transaction per call (SQLAlchemy 2.0 style); every call checks that
the reflection or pledge belongs to the champion asking. A reflection is saved
answer by answer (`start`, then `set_session`, `save_takeaway`, `save_rating`,
`save_improvement`, `save_sharing`, `complete`), so stopping half way keeps what
was said. `add_pledge` stores a pledge together with its first check-in (a
pending `pledge_check_ins` row) in one transaction; `move_check_in` changes that
check-in's day when the champion picks another. `recent_meetings` lists the
meetings (from the reminders tables) a champion might be reflecting on.

Check-in days: `check_in_day` ("two_weeks", "month"), `check_in_at` (the
instant, at `time_of_day` in the champion's zone) and `read_check_in_day`
(a typed day, read with bot.reminder_times) are plain functions others can reuse.
Times go in and come out as aware UTC datetimes. Wording and timing are in
knowledge/reflections.yml.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from bot import checkins
from bot.content import load_yaml
from bot.models import Champion, as_utc, utcnow
from bot.reflection_models import (
    ANSWER_MAX,
    CHECK_IN_PENDING,
    MAX_PLEDGES_PER_REFLECTION,
    PLEDGE_MAX,
    PLEDGE_OPEN,
    SESSION_LABEL_MAX,
    SHARING_CHOICES,
    Pledge,
    PledgeCheckIn,
    Reflection,
)
from bot.reminder_models import Meeting
from bot.reminder_times import AMBIGUOUS, OK, PAST, parse_when, zone
from bot.time_zones import champion_zone

ROOT = Path(__file__).resolve().parent.parent
CONTENT_FILE = ROOT / "knowledge" / "reflections.yml"
DEFAULT_TIME_ZONE = "Europe/London"

# What read_check_in_day found.
DAY_OK, DAY_CHOOSE, DAY_PAST, DAY_TOO_FAR, DAY_UNKNOWN = "ok", "choose", "past", "too_far", "unknown"


# --- content ------------------------------------------------------------------------------------


def load_content(path: Path = CONTENT_FILE) -> Dict[str, Any]:
    """knowledge/reflections.yml as a dict, read once and then cached."""
    return load_yaml(path)


def _aware(moment: Optional[datetime], name: str) -> datetime:
    """moment in UTC (now when None), refusing a naive datetime."""
    if moment is None:
        return utcnow()
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(timezone.utc)


def _clean(text: Any) -> str:
    """text without control characters (NUL, ...), runs of spaces made one; line breaks survive."""
    text = "".join(ch for ch in str(text or "") if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs"))
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines()).strip()


# --- check-in days -------------------------------------------------------------------------------


def time_zone_or_default(name: Optional[str], content: Optional[Mapping[str, Any]] = None) -> str:
    """name if it is a zone we know, else the default zone (bot.time_zones decides)."""
    return champion_zone(name)


def check_in_day(choice: str, today: date, content: Optional[Mapping[str, Any]] = None) -> date:
    """The day a choice ("two_weeks", "month") means, counted from today (timing in knowledge/checkins.yml)."""
    return checkins.check_in_day(choice, today)


def check_in_at(day: date, time_zone: Optional[str] = None, content: Optional[Mapping[str, Any]] = None) -> datetime:
    """The check-in instant on day: the check-in time of day in the champion's zone, as aware UTC."""
    return checkins.check_in_on(day, time_zone)


def local_today(now: datetime, time_zone: Optional[str] = None) -> date:
    """Today's date in the champion's zone."""
    return _aware(now, "now").astimezone(zone(time_zone_or_default(time_zone))).date()


def read_check_in_day(
    text: str, now: datetime, time_zone: Optional[str] = None, content: Optional[Mapping[str, Any]] = None
) -> Tuple[str, Tuple[date, ...]]:
    """(status, days) for a typed check-in day: "Friday", "12/12", "in 3 weeks" (British order, day first).

    status is DAY_OK (one day, after today and within `max_days_ahead`), DAY_CHOOSE
    (several readings, e.g. "next Friday": ask which), DAY_PAST, DAY_TOO_FAR or DAY_UNKNOWN.
    A time said with the day is ignored: check-ins go at `time_of_day`.
    """
    content = content or load_content()
    zone_name = time_zone_or_default(time_zone, content)
    now = _aware(now, "now")
    today = local_today(now, zone_name)
    limit = today + timedelta(days=int(content["timing"]["max_days_ahead"]))
    parsed = parse_when(text, now, zone_name, vague_ok=True)
    if parsed.status == OK and parsed.when is not None:
        days = (parsed.when.astimezone(zone(zone_name)).date(),)
    elif parsed.status == AMBIGUOUS and parsed.days:
        days = tuple(sorted(set(parsed.days)))
    elif parsed.status == AMBIGUOUS and parsed.candidates:
        days = tuple(sorted({c.astimezone(zone(zone_name)).date() for c in parsed.candidates}))
    elif parsed.status == PAST:
        return DAY_PAST, ()
    elif parsed.reason == "too_far":
        return DAY_TOO_FAR, ()
    else:
        return DAY_UNKNOWN, ()
    future = tuple(d for d in days if d > today)
    if not future:
        return DAY_PAST, ()
    within = tuple(d for d in future if d <= limit)
    if not within:
        return DAY_TOO_FAR, ()
    return (DAY_OK if len(within) == 1 else DAY_CHOOSE), within


# --- views ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PledgeView:
    """A pledge and its next pending check-in, detached from the database session."""

    id: int
    reflection_id: int
    champion_id: int
    text: str
    status: str
    created_at: datetime
    check_in_id: Optional[int]
    check_in_due_at: Optional[datetime]


@dataclass(frozen=True)
class ReflectionView:
    """A reflection with its pledges, detached from the database session."""

    id: int
    champion_id: int
    meeting_id: Optional[int]
    session_label: Optional[str]
    organisation: Optional[str]
    takeaway: Optional[str]
    rating: Optional[int]
    improvement: Optional[str]
    sharing: Optional[str]
    created_at: datetime
    updated_at: datetime
    completed_at: Optional[datetime]
    pledges: Tuple[PledgeView, ...] = ()

    @property
    def finished(self) -> bool:
        """True once the champion reached the end."""
        return self.completed_at is not None


@dataclass(frozen=True)
class RecentMeeting:
    """A meeting from the champion's reminders that they might reflect on."""

    id: int
    description: str
    starts_at: datetime
    time_zone: str


def _pledge_view(row: Pledge) -> PledgeView:
    """A detached copy of a pledge row, with its soonest pending check-in."""
    pending = sorted(
        (c for c in row.check_ins if c.status == CHECK_IN_PENDING), key=lambda c: (as_utc(c.due_at), c.id)
    )
    first = pending[0] if pending else None
    return PledgeView(
        id=row.id,
        reflection_id=row.reflection_id,
        champion_id=row.champion_id,
        text=row.text,
        status=row.status,
        created_at=as_utc(row.created_at),
        check_in_id=first.id if first else None,
        check_in_due_at=as_utc(first.due_at) if first else None,
    )


def _reflection_view(row: Reflection) -> ReflectionView:
    """A detached copy of a reflection row with its pledges, oldest first."""
    return ReflectionView(
        id=row.id,
        champion_id=row.champion_id,
        meeting_id=row.meeting_id,
        session_label=row.session_label,
        organisation=row.organisation,
        takeaway=row.takeaway,
        rating=row.rating,
        improvement=row.improvement,
        sharing=row.sharing,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        completed_at=as_utc(row.completed_at),
        pledges=tuple(_pledge_view(p) for p in sorted(row.pledges, key=lambda p: p.id)),
    )


def _row_id(value: Any) -> Optional[int]:
    """value as a row id, or None when it can't be one (not a number, or beyond the database's integers)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 0 < number < 2**31 else None


def _check_text(value: Any, limit: int, what: str) -> str:
    """value cleaned; ValueError when it is empty or longer than limit."""
    text = _clean(value)
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return text


class ReflectionRepository:
    """Reflections, pledges and their first check-ins in the app database, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    # --- reading ----------------------------------------------------------------------------------

    @staticmethod
    def _load(session: Session, reflection_id: int) -> Optional[Reflection]:
        """The reflection row with its pledges and their check-ins, read fresh."""
        return session.execute(
            select(Reflection)
            .where(Reflection.id == reflection_id)
            .options(selectinload(Reflection.pledges).selectinload(Pledge.check_ins))
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()

    def get(self, champion_id: int, reflection_id: Any) -> Optional[ReflectionView]:
        """The champion's reflection with this id, or None (also for someone else's)."""
        reflection_id = _row_id(reflection_id)
        if reflection_id is None:
            return None
        with self._sessions() as session:
            row = self._load(session, reflection_id)
            if row is None or row.champion_id != champion_id:
                return None
            return _reflection_view(row)

    def unfinished(
        self,
        champion_id: int,
        *,
        meeting_id: Optional[int] = None,
        since: Optional[datetime] = None,
    ) -> Optional[ReflectionView]:
        """The champion's most recent reflection not yet completed (about meeting_id, started since), or None."""
        query = select(Reflection.id).where(Reflection.champion_id == champion_id, Reflection.completed_at.is_(None))
        if meeting_id is not None:
            query = query.where(Reflection.meeting_id == meeting_id)
        if since is not None:
            query = query.where(Reflection.created_at >= _aware(since, "since"))
        with self._sessions() as session:
            found = session.execute(
                query.order_by(Reflection.created_at.desc(), Reflection.id.desc()).limit(1)
            ).scalar_one_or_none()
        return self.get(champion_id, found) if found is not None else None

    def reflections(self, champion_id: int, limit: int = 50) -> List[ReflectionView]:
        """The champion's reflections, newest first."""
        with self._sessions() as session:
            rows = session.execute(
                select(Reflection)
                .where(Reflection.champion_id == champion_id)
                .order_by(Reflection.created_at.desc(), Reflection.id.desc())
                .limit(max(0, limit))
                .options(selectinload(Reflection.pledges).selectinload(Pledge.check_ins))
            ).scalars().all()
            return [_reflection_view(row) for row in rows]

    def recent_meetings(
        self, champion_id: int, now: Optional[datetime] = None, *, days: int = 14, limit: int = 4
    ) -> List[RecentMeeting]:
        """The champion's meetings that started in the last `days` days (not cancelled, not yet reflected on), newest first."""
        now = _aware(now, "now")
        reflected = (
            select(Reflection.id)
            .where(Reflection.meeting_id == Meeting.id, Reflection.completed_at.is_not(None))
            .exists()
        )
        with self._sessions() as session:
            rows = session.execute(
                select(Meeting.id, Meeting.description, Meeting.starts_at, Meeting.time_zone)
                .where(
                    Meeting.champion_id == champion_id,
                    Meeting.cancelled_at.is_(None),
                    Meeting.starts_at <= now,
                    Meeting.starts_at >= now - timedelta(days=days),
                    ~reflected,
                )
                .order_by(Meeting.starts_at.desc(), Meeting.id.desc())
                .limit(max(0, limit))
            ).all()
        return [RecentMeeting(id=r[0], description=r[1], starts_at=as_utc(r[2]), time_zone=r[3]) for r in rows]

    def meeting(self, champion_id: int, meeting_id: Any) -> Optional[RecentMeeting]:
        """The champion's meeting with this id (any time, even cancelled), or None."""
        meeting_id = _row_id(meeting_id)  # a huge number would overflow the database's integer
        if meeting_id is None:
            return None
        with self._sessions() as session:
            row = session.get(Meeting, meeting_id)
            if row is None or row.champion_id != champion_id:
                return None
            return RecentMeeting(id=row.id, description=row.description, starts_at=as_utc(row.starts_at), time_zone=row.time_zone)

    def champion_time_zone(self, champion_id: int) -> str:
        """The champion's zone (champions.time_zone), or the default one."""
        with self._sessions() as session:
            name = session.execute(select(Champion.time_zone).where(Champion.id == champion_id)).scalar_one_or_none()
        return time_zone_or_default(name)

    # --- a reflection, answer by answer -----------------------------------------------------------

    def start(
        self,
        champion_id: int,
        *,
        meeting_id: Optional[int] = None,
        session_label: Optional[str] = None,
        now: Optional[datetime] = None,
    ) -> ReflectionView:
        """A new reflection (about the champion's meeting, or a session they named), with their organisation."""
        now = _aware(now, "now")
        label = _clean(session_label)[:SESSION_LABEL_MAX] or None
        with self._sessions() as session:
            champion = session.get(Champion, champion_id)
            if champion is None:
                raise LookupError(f"no champion {champion_id}")
            if meeting_id is not None:
                meeting = session.get(Meeting, meeting_id)
                if meeting is None or meeting.champion_id != champion_id:
                    raise LookupError(f"champion {champion_id} has no meeting {meeting_id}")
                label = label or meeting.description
            row = Reflection(
                champion_id=champion_id,
                meeting_id=meeting_id,
                session_label=label,
                organisation=champion.organisation,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.commit()
            return _reflection_view(self._load(session, row.id))

    def _set(self, champion_id: int, reflection_id: Any, now: Optional[datetime], **values: Any) -> bool:
        """Update columns of the champion's reflection; False when it isn't theirs (or doesn't exist)."""
        reflection_id = _row_id(reflection_id)
        if reflection_id is None:
            return False
        values["updated_at"] = _aware(now, "now")
        with self._sessions() as session:
            result = session.execute(
                update(Reflection)
                .where(Reflection.id == reflection_id, Reflection.champion_id == champion_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return result.rowcount == 1

    def set_session(
        self,
        champion_id: int,
        reflection_id: Any,
        *,
        meeting_id: Optional[int] = None,
        session_label: Optional[str] = None,
        now: Optional[datetime] = None,
    ) -> bool:
        """Which session it was: one of the champion's meetings, or a name they typed."""
        label = _clean(session_label)[:SESSION_LABEL_MAX] or None
        if meeting_id is not None:
            meeting = self.meeting(champion_id, meeting_id)
            if meeting is None:
                raise LookupError(f"champion {champion_id} has no meeting {meeting_id}")
            label = label or meeting.description
        return self._set(champion_id, reflection_id, now, meeting_id=meeting_id, session_label=label)

    def save_takeaway(self, champion_id: int, reflection_id: Any, text: str, now: Optional[datetime] = None) -> bool:
        """The one thing they'll take away (1 to ANSWER_MAX characters)."""
        return self._set(champion_id, reflection_id, now, takeaway=_check_text(text, ANSWER_MAX, "a take-away"))

    def save_rating(self, champion_id: int, reflection_id: Any, rating: Any, now: Optional[datetime] = None) -> bool:
        """How the session went, 1 to 5."""
        if isinstance(rating, int) and not isinstance(rating, bool):
            value = rating
        elif isinstance(rating, str) and rating.strip().isdigit():
            value = int(rating.strip())
        else:
            raise ValueError("a rating is a whole number from 1 to 5")
        if not 1 <= value <= 5:
            raise ValueError("a rating is a whole number from 1 to 5")
        return self._set(champion_id, reflection_id, now, rating=value)

    def save_improvement(self, champion_id: int, reflection_id: Any, text: str, now: Optional[datetime] = None) -> bool:
        """What would have made it better (1 to ANSWER_MAX characters)."""
        return self._set(champion_id, reflection_id, now, improvement=_check_text(text, ANSWER_MAX, "an answer"))

    def save_sharing(self, champion_id: int, reflection_id: Any, sharing: str, now: Optional[datetime] = None) -> bool:
        """Who may see it: "private", "anonymous" or "named"."""
        if sharing not in SHARING_CHOICES:
            raise ValueError(f"sharing is one of {', '.join(SHARING_CHOICES)}")
        return self._set(champion_id, reflection_id, now, sharing=sharing)

    def complete(self, champion_id: int, reflection_id: Any, now: Optional[datetime] = None) -> bool:
        """Record that the champion reached the end (the first time only)."""
        now = _aware(now, "now")
        reflection_id = _row_id(reflection_id)
        if reflection_id is None:
            return False
        with self._sessions() as session:
            result = session.execute(
                update(Reflection)
                .where(
                    Reflection.id == reflection_id,
                    Reflection.champion_id == champion_id,
                    Reflection.completed_at.is_(None),
                )
                .values(completed_at=now, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return result.rowcount == 1

    # --- pledges ----------------------------------------------------------------------------------

    def add_pledge(
        self,
        champion_id: int,
        reflection_id: Any,
        text: str,
        check_in_due_at: datetime,
        now: Optional[datetime] = None,
    ) -> PledgeView:
        """Store a pledge and its first check-in (pending, due at check_in_due_at) together.

        ValueError for an empty or too long pledge, a check-in time already gone, or
        a fourth pledge; LookupError when the reflection isn't the champion's.
        """
        now = _aware(now, "now")
        text = _check_text(text, PLEDGE_MAX, "a pledge")
        due = _aware(check_in_due_at, "check_in_due_at")
        if due <= now:
            raise ValueError("the check-in time has already gone")
        with self._sessions() as session:
            reflection = session.get(Reflection, _row_id(reflection_id) or 0)
            if reflection is None or reflection.champion_id != champion_id:
                raise LookupError(f"champion {champion_id} has no reflection {reflection_id}")
            count = len(session.execute(select(Pledge.id).where(Pledge.reflection_id == reflection.id)).all())
            if count >= MAX_PLEDGES_PER_REFLECTION:
                raise ValueError(f"at most {MAX_PLEDGES_PER_REFLECTION} pledges per reflection")
            pledge = Pledge(
                reflection_id=reflection.id,
                champion_id=champion_id,
                text=text,
                status=PLEDGE_OPEN,
                created_at=now,
                updated_at=now,
            )
            pledge.check_ins.append(
                PledgeCheckIn(champion_id=champion_id, due_at=due, status=CHECK_IN_PENDING, created_at=now, updated_at=now)
            )
            session.add(pledge)
            reflection.updated_at = now
            session.commit()
            pledge_id = pledge.id
        return self.pledge(champion_id, pledge_id)

    def pledge(self, champion_id: int, pledge_id: Any) -> Optional[PledgeView]:
        """The champion's pledge with this id, or None."""
        pledge_id = _row_id(pledge_id)
        if pledge_id is None:
            return None
        with self._sessions() as session:
            row = session.execute(
                select(Pledge)
                .where(Pledge.id == pledge_id)
                .options(selectinload(Pledge.check_ins))
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
            if row is None or row.champion_id != champion_id:
                return None
            return _pledge_view(row)

    def move_check_in(
        self, champion_id: int, pledge_id: Any, due_at: datetime, now: Optional[datetime] = None
    ) -> Optional[PledgeView]:
        """Move the pledge's pending check-in to due_at (adding one if none is pending); None if it isn't theirs."""
        now = _aware(now, "now")
        due = _aware(due_at, "due_at")
        if due <= now:
            raise ValueError("the check-in time has already gone")
        view = self.pledge(champion_id, pledge_id)
        if view is None:
            return None
        with self._sessions() as session:
            if view.check_in_id is not None:
                session.execute(
                    update(PledgeCheckIn)
                    .where(PledgeCheckIn.id == view.check_in_id, PledgeCheckIn.status == CHECK_IN_PENDING)
                    .values(due_at=due, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            else:
                session.add(PledgeCheckIn(pledge_id=view.id, champion_id=champion_id, due_at=due,
                                          status=CHECK_IN_PENDING, created_at=now, updated_at=now))
            session.commit()
        return self.pledge(champion_id, view.id)
