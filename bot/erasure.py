"""Deleting a champion's data on request ("delete my data"): stop at once, erase a few seconds later.

Why two steps. The request is confirmed inside a Rasa custom action, but nothing can be
erased from there: when the action returns, Rasa saves the conversation again
(SQLTrackerStore.save counts the events stored for the session and inserts the rest, so
events deleted mid-turn come straight back; components/tracker_store.py inserts only the
turn's new events when it kept the conversation in memory, but still holds the older ones
there), and the web chat and the Telegram bot store the reply in `chat_messages` after
Rasa answers. So:

1. **At once** (`request_erasure`, called by actions/my_data.py when the champion taps
   "Yes, delete everything"): `champions.erasure_requested_at` is set; every pending or
   queued reminder and check-in is cancelled; their unsent (queued) outbound messages are
   removed. Anything queued for them later (a broadcast, a reminder tick that was already
   under way) is skipped by the courier, which never sends to a champion awaiting erasure
   (bot/delivery.py). Nothing more reaches them.
2. **The erasure pass** (`Eraser`, run every second by the delivery process) erases a
   champion once both the request and their last message are ERASURE_DELAY_SECONDS old
   (default 10 s): their turn is over, so Rasa and the front ends have stored everything
   they were going to. If they keep chatting, it waits for a pause, but never longer than
   60 times the delay after the request. It deletes first their Rasa events (every sender
   id of theirs, bot/rasa_tracker.py, stored up to that moment), then, in one transaction,
   every app row with a path to them (ERASED_TABLES, children first; the foreign keys'
   ON DELETE CASCADE would do the same) and their `champions` row. A broadcast the team
   addressed to them alone keeps the team's text but loses its link to them
   (`target_champion_id` set to NULL). If the conversation store can't be reached, the
   app rows are left too, and the pass tries again on the next tick (deleting the app rows
   first would lose the sender ids needed to find the events).

What the champion sends in the few seconds between the two steps belongs to the old
record and goes with it. What they send after the pass starts a fresh, empty record: the
web chat and Telegram create a new champion row, and Rasa finds no events for the sender
id, so it starts a new conversation.

One race is left: a Rasa turn that loaded the conversation before the pass deleted it and
saves after would put those events back (and the reply's `chat_messages` row fails its
foreign key, so nothing returns on the app side). For RECHECK_FACTOR times the delay after
each erasure the pass looks again: if events stored before the erasure moment reappear for
those sender ids, it deletes all their events, since any later turn has continued that old
conversation. The sender ids are kept only in memory for that time.

Tables with no path to a champion are not touched: `groups` (the team's), `telegram_callbacks`
(button payloads under short keys, linked to nobody), broadcasts to groups or everyone.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery_models import STATUS_QUEUED as OUTBOUND_QUEUED
from bot.delivery_models import DeliveryAttempt, OutboundMessage
from bot.models import Champion, ChatMessage, as_utc, utcnow
from bot.my_data import rasa_sender_ids
from bot.plan_models import Project, StepAnswer
from bot.reflection_models import CHECK_IN_CANCELLED, CHECK_IN_PENDING, CHECK_IN_QUEUED, Pledge, PledgeCheckIn, Reflection
from bot.reminder_models import STATUS_CANCELLED, STATUS_PENDING, STATUS_QUEUED, Meeting, Reminder
from bot.team_models import Broadcast, GroupMember

log = logging.getLogger(__name__)

DEFAULT_DELAY_SECONDS = 10.0
# A champion who keeps chatting is erased at the latest this many delays after the request.
MAX_WAIT_FACTOR = 60
# After an erasure, look for conversation events put back by a late save for this many delays
# (at least RECHECK_MIN_SECONDS).
RECHECK_FACTOR = 12
RECHECK_MIN_SECONDS = 120.0

# Every table with a path to `champions`, in the order the pass clears them (children first),
# and how: "delete" the rows, or "unlink" them (the row is the team's: its link to the champion
# is set to NULL). tests/test_erasure.py fails when a table with such a path is missing here.
ERASED_TABLES: Tuple[Tuple[str, str], ...] = (
    ("delivery_attempts", "delete"),
    ("pledge_check_ins", "delete"),
    ("pledges", "delete"),
    ("reflections", "delete"),
    ("reminders", "delete"),
    ("meetings", "delete"),
    ("step_answers", "delete"),
    ("projects", "delete"),
    ("outbound_messages", "delete"),
    ("group_members", "delete"),
    ("chat_messages", "delete"),
    ("broadcasts", "unlink"),
    ("champions", "delete"),
)


@dataclass(frozen=True)
class RequestResult:
    """What stopped when the champion confirmed: reminders, check-ins and unsent messages."""

    champion_id: int
    requested_at: datetime
    reminders_cancelled: int = 0
    check_ins_cancelled: int = 0
    messages_removed: int = 0


@dataclass
class ErasureReport:
    """What one erasure removed: rows per table and conversation events."""

    champion_id: int
    at: datetime
    rows: Dict[str, int] = field(default_factory=dict)
    events: int = 0


def _statements(champion_id: int) -> List[Tuple[str, Any]]:
    """The pass's statements for one champion, in ERASED_TABLES order."""
    outbound_ids = select(OutboundMessage.id).where(OutboundMessage.champion_id == champion_id).scalar_subquery()
    meeting_ids = select(Meeting.id).where(Meeting.champion_id == champion_id).scalar_subquery()
    project_ids = select(Project.id).where(Project.champion_id == champion_id).scalar_subquery()
    statements = {
        "delivery_attempts": delete(DeliveryAttempt).where(DeliveryAttempt.outbound_id.in_(outbound_ids)),
        "pledge_check_ins": delete(PledgeCheckIn).where(
            or_(PledgeCheckIn.champion_id == champion_id,
                PledgeCheckIn.pledge_id.in_(select(Pledge.id).where(Pledge.champion_id == champion_id).scalar_subquery()))
        ),
        "pledges": delete(Pledge).where(
            or_(Pledge.champion_id == champion_id,
                Pledge.reflection_id.in_(select(Reflection.id).where(Reflection.champion_id == champion_id).scalar_subquery()))
        ),
        "reflections": delete(Reflection).where(Reflection.champion_id == champion_id),
        "reminders": delete(Reminder).where(Reminder.meeting_id.in_(meeting_ids)),
        "meetings": delete(Meeting).where(Meeting.champion_id == champion_id),
        "step_answers": delete(StepAnswer).where(StepAnswer.project_id.in_(project_ids)),
        "projects": delete(Project).where(Project.champion_id == champion_id),
        "outbound_messages": delete(OutboundMessage).where(OutboundMessage.champion_id == champion_id),
        "group_members": delete(GroupMember).where(GroupMember.champion_id == champion_id),
        "chat_messages": delete(ChatMessage).where(ChatMessage.champion_id == champion_id),
        "broadcasts": update(Broadcast)
        .where(Broadcast.target_champion_id == champion_id)
        .values(target_champion_id=None),
        "champions": delete(Champion).where(Champion.id == champion_id, Champion.erasure_requested_at.is_not(None)),
    }
    return [(table, statements[table].execution_options(synchronize_session=False)) for table, _ in ERASED_TABLES]


def request_erasure(
    session_factory: "sessionmaker[Session]", champion_id: int, now: Optional[datetime] = None
) -> Optional[RequestResult]:
    """Step 1, in one transaction: mark the champion for erasure and stop everything due to go to them.

    Returns None when there is no such champion. Asking again keeps the first request's time.
    """
    now = as_utc(now) or utcnow()
    with session_factory() as session:
        champion = session.get(Champion, champion_id)
        if champion is None:
            return None
        if champion.erasure_requested_at is None:
            champion.erasure_requested_at = now
        requested_at = as_utc(champion.erasure_requested_at)
        meeting_ids = select(Meeting.id).where(Meeting.champion_id == champion_id).scalar_subquery()
        reminders = session.execute(
            update(Reminder)
            .where(Reminder.meeting_id.in_(meeting_ids), Reminder.status.in_((STATUS_PENDING, STATUS_QUEUED)))
            .values(status=STATUS_CANCELLED, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        check_ins = session.execute(
            update(PledgeCheckIn)
            .where(
                PledgeCheckIn.champion_id == champion_id,
                PledgeCheckIn.status.in_((CHECK_IN_PENDING, CHECK_IN_QUEUED)),
            )
            .values(status=CHECK_IN_CANCELLED, updated_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        unsent = select(OutboundMessage.id).where(
            OutboundMessage.champion_id == champion_id, OutboundMessage.status == OUTBOUND_QUEUED
        ).scalar_subquery()
        session.execute(
            delete(DeliveryAttempt).where(DeliveryAttempt.outbound_id.in_(unsent)).execution_options(synchronize_session=False)
        )
        # Reminders and check-ins pointing at these rows lose the link (ON DELETE SET NULL).
        for model in (Reminder, PledgeCheckIn):
            session.execute(
                update(model)
                .where(model.outbound_id.in_(unsent))
                .values(outbound_id=None)
                .execution_options(synchronize_session=False)
            )
        removed = session.execute(
            delete(OutboundMessage)
            .where(OutboundMessage.champion_id == champion_id, OutboundMessage.status == OUTBOUND_QUEUED)
            .execution_options(synchronize_session=False)
        ).rowcount
        session.commit()
    log.info(
        "champion %s asked for their data to be deleted: %d reminder(s), %d check-in(s) cancelled, %d unsent message(s) removed",
        champion_id, reminders, check_ins, removed,
    )
    return RequestResult(champion_id, requested_at, int(reminders or 0), int(check_ins or 0), int(removed or 0))


@dataclass
class _Recheck:
    """Sender ids erased at a moment, watched for a while in case a late save puts events back."""

    sender_ids: List[str]
    erased_at: datetime
    until: datetime


class Eraser:
    """Step 2: erases every champion whose request (and last message) is old enough, from every store."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        tracker: Any = None,
        delay_seconds: float = DEFAULT_DELAY_SECONDS,
    ) -> None:
        """Erase from the app database behind session_factory and from tracker (a bot.rasa_tracker.TrackerEvents, or None)."""
        self._sessions = session_factory
        self.tracker = tracker
        self.delay = timedelta(seconds=max(0.0, float(delay_seconds)))
        self.max_wait = self.delay * MAX_WAIT_FACTOR
        self.recheck_for = max(self.delay * RECHECK_FACTOR, timedelta(seconds=RECHECK_MIN_SECONDS))
        self._rechecks: List[_Recheck] = []

    def due(self, now: Optional[datetime] = None) -> List[int]:
        """Ids of champions to erase now: asked at least the delay ago, and quiet as long (or asked long ago)."""
        now = as_utc(now) or utcnow()
        ready = now - self.delay
        with self._sessions() as session:
            return list(
                session.execute(
                    select(Champion.id)
                    .where(
                        Champion.erasure_requested_at.is_not(None),
                        or_(
                            and_(Champion.erasure_requested_at <= ready, Champion.last_active_at <= ready),
                            Champion.erasure_requested_at <= now - self.max_wait,
                        ),
                    )
                    .order_by(Champion.erasure_requested_at, Champion.id)
                ).scalars()
            )

    def erase(self, champion_id: int, now: Optional[datetime] = None) -> Optional[ErasureReport]:
        """Erase one champion who asked for it: conversation events first, then every app row. None: nothing to do."""
        now = as_utc(now) or utcnow()
        with self._sessions() as session:
            champion = session.get(Champion, champion_id)
            if champion is None or champion.erasure_requested_at is None:
                return None
            senders = rasa_sender_ids(champion.channel, champion.external_id)
        report = ErasureReport(champion_id, now)
        if self.tracker is not None:
            report.events = self.tracker.delete(senders, up_to=now)
        with self._sessions() as session:
            for table, statement in _statements(champion_id):
                report.rows[table] = int(session.execute(statement).rowcount or 0)
            session.commit()
        if self.tracker is not None:
            self._rechecks.append(_Recheck(senders, now, now + self.recheck_for))
        log.info(
            "erased champion %s: %d row(s), %d conversation event(s)",
            champion_id, sum(n for t, n in report.rows.items() if t != "broadcasts"), report.events,
        )
        return report

    def recheck(self, now: Optional[datetime] = None) -> int:
        """Delete conversations a late Rasa save put back after recent erasures; returns how many events."""
        now = as_utc(now) or utcnow()
        self._rechecks = [r for r in self._rechecks if r.until > now]
        removed = 0
        for entry in self._rechecks:
            oldest = self.tracker.oldest(entry.sender_ids)
            if oldest is not None and oldest <= entry.erased_at.timestamp():
                count = self.tracker.delete(entry.sender_ids)
                removed += count
                log.warning("a late save put %d erased conversation event(s) back: deleted them again", count)
        return removed

    def run_once(self, now: Optional[datetime] = None) -> List[ErasureReport]:
        """One pass: erase everyone due (one failure doesn't stop the others), then the rechecks."""
        now = as_utc(now) or utcnow()
        reports = []
        for champion_id in self.due(now):
            try:
                report = self.erase(champion_id, now)
            except Exception:  # noqa: BLE001 - tried again on the next pass
                log.exception("erasing champion %s failed; trying again on the next pass", champion_id)
                continue
            if report is not None:
                reports.append(report)
        if self.tracker is not None and self._rechecks:
            try:
                self.recheck(now)
            except Exception:  # noqa: BLE001
                log.exception("checking erased conversations failed; trying again on the next pass")
        return reports

    @property
    def watching(self) -> Sequence[_Recheck]:
        """The recent erasures still being watched for late saves."""
        return tuple(self._rechecks)


async def run_erasure_forever(
    settings: Any,
    session_factory: "sessionmaker[Session]",
    stop: asyncio.Event,
    every: float = 1.0,
    tracker: Any = None,
) -> None:
    """The delivery process's erasure pass: every `every` seconds until stop is set.

    The conversation store is the one in settings.rasa_endpoints unless tracker is given.
    """
    from bot.rasa_tracker import TrackerEvents

    own_tracker = tracker is None
    if own_tracker:
        tracker = TrackerEvents.from_settings(settings)
    eraser = Eraser(session_factory, tracker, getattr(settings, "erasure_delay_seconds", DEFAULT_DELAY_SECONDS))
    try:
        while not stop.is_set():
            try:
                await asyncio.to_thread(eraser.run_once)
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the pass
                log.exception("the erasure pass failed; trying again shortly")
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass
    finally:
        if own_tracker and tracker is not None:
            tracker.close()
