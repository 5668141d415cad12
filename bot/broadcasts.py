"""Broadcasts from the engagement team: preview, schedule, cancel, report, and start the due ones.

Used by the command-line tool (bot/team.py) and, later, the web console. A broadcast is stored as
"scheduled"; the delivery process calls start_due_broadcasts(), which turns each due broadcast into
one outbound message per recipient (skipping champions who said stop or cannot be reached) and marks
it "sending"; once none of its messages is queued or being sent it is "sent".
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery_models import (
    STATUS_FAILED,
    STATUS_QUEUED,
    STATUS_SENDING,
    STATUS_SENT,
    STATUS_SKIPPED,
    DeliveryAttempt,
    OutboundMessage,
)
from bot.groups import GroupRepository, TeamInputError
from bot.models import Champion, as_utc, utcnow
from bot.sender_ids import DELIVERABLE_CHANNELS
from bot.text import clean_text
from bot.team_auth import require
from bot.team_models import Broadcast, Group, GroupMember

MAX_TEXT_CHARS = 4000
CREATED_BY_MAX = 120
# A send time this far in the past is refused (a little slack for "now" typed a moment ago).
PAST_SLACK = timedelta(minutes=1)
KIND = "broadcast"
CANCELLED_REASON = "cancelled"
INSERT_CHUNK = 500


def source_key(broadcast_id: int, champion_id: int) -> str:
    """The outbound message's unique key for one broadcast to one champion."""
    return f"broadcast:{broadcast_id}:champion:{champion_id}"


# --- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Who a broadcast goes to: everyone, one group (kind and name) or one champion."""

    kind: str
    group_kind: Optional[str] = None
    group_name: Optional[str] = None
    champion_id: Optional[int] = None

    @classmethod
    def everyone(cls) -> "Target":
        """Every champion."""
        return cls("all")

    @classmethod
    def group(cls, kind: str, name: str) -> "Target":
        """The members of one group."""
        return cls("group", group_kind=kind, group_name=name)

    @classmethod
    def champion(cls, champion_id: int) -> "Target":
        """One champion."""
        return cls("champion", champion_id=int(champion_id))

    @classmethod
    def parse(cls, text: str) -> "Target":
        """Read "all", "group:<kind>:<name>" or "champion:<id>", or TeamInputError."""
        raw = clean_text(str(text or ""), multiline=False)
        head, _, rest = raw.partition(":")
        head = head.strip().lower()
        if head in ("all", "everyone") and not rest.strip():
            return cls.everyone()
        if head == "group":
            kind, sep, name = rest.partition(":")
            if not sep or not kind.strip() or not name.strip():
                raise TeamInputError(
                    'A group target looks like group:<kind>:<name>, e.g. "group:cohort:Spring 2026".'
                )
            return cls.group(kind.strip(), name.strip())
        if head == "champion":
            try:
                return cls.champion(int(rest.strip()))
            except ValueError:
                raise TeamInputError(
                    "A champion target looks like champion:<id>, e.g. champion:12 (see: champion list)."
                ) from None
        raise TeamInputError(
            f"Send to whom? {raw[:60]!r} is not a target: use all, group:<kind>:<name> or champion:<id>."
        )


def _describe(kind: str, group: Optional[Group], champion_id: Optional[int]) -> str:
    """A target in words: "everyone", "cohort: Spring 2026", "champion 12"."""
    if kind == "all":
        return "everyone"
    if kind == "group":
        return f"{group.kind}: {group.name}" if group is not None else "a group that no longer exists"
    return f"champion {champion_id}" if champion_id is not None else "a champion who no longer exists"


def _resolve(session: Session, groups: GroupRepository, target: Target) -> Tuple[Optional[Group], Optional[int]]:
    """The target's group or champion id, checked to exist, or TeamInputError."""
    if not isinstance(target, Target) or target.kind not in ("all", "group", "champion"):
        raise TeamInputError("Send to whom? Use everyone, one group or one champion.")
    if target.kind == "group":
        return groups.get_group(target.group_kind or "", target.group_name or ""), None
    if target.kind == "champion":
        if target.champion_id is None or session.get(Champion, int(target.champion_id)) is None:
            raise TeamInputError(f"There is no champion with id {target.champion_id} (see: champion list).")
        return None, int(target.champion_id)
    return None, None


def _recipients(
    session: Session, kind: str, group_id: Optional[int], champion_id: Optional[int]
) -> List[Tuple[int, str, bool, bool]]:
    """(champion id, channel, opted out?, unreachable?) for everyone the target covers, by id."""
    query = select(Champion.id, Champion.channel, Champion.opted_out_at, Champion.unreachable_at).where(
        Champion.channel.in_(DELIVERABLE_CHANNELS)  # not `rasa shell` or test senders
    )
    if kind == "group":
        if group_id is None:
            return []
        query = query.join(GroupMember, GroupMember.champion_id == Champion.id).where(
            GroupMember.group_id == group_id
        )
    elif kind == "champion":
        if champion_id is None:
            return []
        query = query.where(Champion.id == champion_id)
    rows = session.execute(query.order_by(Champion.id)).all()
    return [(cid, channel, opted is not None, gone is not None) for cid, channel, opted, gone in rows]


def _split(recipients: Sequence[Tuple[int, str, bool, bool]]) -> Tuple[List[Tuple[int, str]], int, int]:
    """(who gets it, how many opted out, how many unreachable); opting out counts first."""
    keep: List[Tuple[int, str]] = []
    opted_out = unreachable = 0
    for cid, channel, opted, gone in recipients:
        if opted:
            opted_out += 1
        elif gone:
            unreachable += 1
        else:
            keep.append((cid, channel))
    return keep, opted_out, unreachable


# --- checking what the team typed ---------------------------------------------------------------


def clean_message(text: str) -> str:
    """The broadcast text as it will be sent: control characters removed, trimmed; or TeamInputError."""
    cleaned = clean_text(str(text or ""), multiline=True)
    if not cleaned:
        raise TeamInputError("The message is empty: write what you want to tell the champions.")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise TeamInputError(
            f"The message is {len(cleaned):,} characters long; keep it to {MAX_TEXT_CHARS:,} or fewer "
            "(a phone screen or two)."
        )
    return cleaned


def _clean_created_by(created_by: str) -> str:
    """Who made the broadcast, as one short line; or TeamInputError."""
    cleaned = clean_text(str(created_by or ""), multiline=False)
    if not cleaned:
        raise TeamInputError("Say who is sending the broadcast (your name).")
    return cleaned[:CREATED_BY_MAX]


def _clean_send_at(send_at: Optional[datetime], now: datetime) -> datetime:
    """send_at in UTC (None means now); TeamInputError for a time without a zone or in the past."""
    if send_at is None:
        return now
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise TeamInputError("The send time needs a time zone (for example Europe/London).")
    send_at = send_at.astimezone(timezone.utc)
    if send_at < now - PAST_SLACK:
        raise TeamInputError("That send time has already passed: choose a time from now on.")
    return send_at


# --- what the functions hand back ---------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """Who a broadcast would reach now, who is left out, and the text exactly as it will be sent."""

    target: str
    recipients: int
    opted_out: int
    unreachable: int
    by_channel: Dict[str, int]
    text: str


@dataclass(frozen=True)
class BroadcastInfo:
    """One broadcast as the team sees it."""

    id: int
    status: str
    target: str
    text: str
    created_by: str
    created_at: datetime
    send_at: datetime
    started_at: Optional[datetime]
    cancelled_at: Optional[datetime]
    queued_count: Optional[int]
    opted_out_count: Optional[int]
    unreachable_count: Optional[int]


@dataclass(frozen=True)
class BroadcastReport:
    """How a broadcast's delivery went, from its outbound messages and their delivery attempts."""

    broadcast: BroadcastInfo
    queued: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    failed_reasons: Dict[str, int] = field(default_factory=dict)
    skipped_reasons: Dict[str, int] = field(default_factory=dict)
    opted_out: int = 0
    unreachable: int = 0
    retries: int = 0

    @property
    def total(self) -> int:
        """How many outbound messages the broadcast made."""
        return self.queued + self.sending + self.sent + self.failed + self.skipped


def _info(broadcast: Broadcast, group: Optional[Group]) -> BroadcastInfo:
    """The team's view of one broadcast row."""
    return BroadcastInfo(
        id=broadcast.id,
        status=broadcast.status,
        target=_describe(broadcast.target_kind, group, broadcast.target_champion_id),
        text=broadcast.text,
        created_by=broadcast.created_by,
        created_at=as_utc(broadcast.created_at),
        send_at=as_utc(broadcast.send_at),
        started_at=as_utc(broadcast.started_at),
        cancelled_at=as_utc(broadcast.cancelled_at),
        queued_count=broadcast.queued_count,
        opted_out_count=broadcast.opted_out_count,
        unreachable_count=broadcast.unreachable_count,
    )


class Broadcasts:
    """The engagement team's broadcast functions; changing calls need a TeamPass (bot.team_auth)."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory
        self._groups = GroupRepository(session_factory)

    def preview(self, target: Target, text: str) -> Preview:
        """Who would get text if it went to target now, who is left out, and the text as sent."""
        cleaned = clean_message(text)
        with self._sessions() as session:
            group, champion_id = _resolve(session, self._groups, target)
            recipients = _recipients(session, target.kind, group.id if group else None, champion_id)
        keep, opted_out, unreachable = _split(recipients)
        return Preview(
            target=_describe(target.kind, group, champion_id),
            recipients=len(keep),
            opted_out=opted_out,
            unreachable=unreachable,
            by_channel=dict(sorted(Counter(channel for _, channel in keep).items())),
            text=cleaned,
        )

    def create_broadcast(
        self,
        text: str,
        target: Target,
        created_by: str,
        send_at: Optional[datetime] = None,
        *,
        auth: object,
    ) -> BroadcastInfo:
        """Store a broadcast as "scheduled" for send_at (None: now); the delivery process starts it. Team only."""
        require(auth)
        now = utcnow()
        cleaned = clean_message(text)
        by = _clean_created_by(created_by)
        when = _clean_send_at(send_at, now)
        with self._sessions() as session:
            group, champion_id = _resolve(session, self._groups, target)
            broadcast = Broadcast(
                text=cleaned,
                target_kind=target.kind,
                target_group_id=group.id if group else None,
                target_champion_id=champion_id,
                created_by=by,
                created_at=now,
                send_at=when,
                status="scheduled",
            )
            session.add(broadcast)
            session.commit()
            return _info(broadcast, group)

    def cancel_broadcast(self, broadcast_id: int, *, auth: object) -> Tuple[BroadcastInfo, int]:
        """Cancel a scheduled broadcast, or stop a sending one's queued messages; returns (it, messages stopped). Team only."""
        require(auth)
        finish_sent_broadcasts(self._sessions)
        with self._sessions() as session:
            result = session.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.status.in_(("scheduled", "sending")))
                .values(status="cancelled", cancelled_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                session.rollback()
                existing = session.get(Broadcast, broadcast_id)
                if existing is None:
                    raise TeamInputError(f"There is no broadcast {broadcast_id} (see: broadcast list).")
                raise TeamInputError(
                    f"Broadcast {broadcast_id} is already {existing.status}: there is nothing left to cancel."
                )
            stopped = session.execute(
                update(OutboundMessage)
                .where(OutboundMessage.broadcast_id == broadcast_id, OutboundMessage.status == STATUS_QUEUED)
                .values(status=STATUS_SKIPPED, last_error=CANCELLED_REASON)
                .execution_options(synchronize_session=False)
            )
            session.commit()
        return self.get_broadcast(broadcast_id), int(stopped.rowcount or 0)

    def get_broadcast(self, broadcast_id: int) -> BroadcastInfo:
        """One broadcast, or TeamInputError if there is none with that id."""
        with self._sessions() as session:
            row = session.execute(
                select(Broadcast, Group)
                .outerjoin(Group, Group.id == Broadcast.target_group_id)
                .where(Broadcast.id == broadcast_id)
            ).first()
        if row is None:
            raise TeamInputError(f"There is no broadcast {broadcast_id} (see: broadcast list).")
        return _info(*row)

    def list_broadcasts(self, limit: int = 50) -> List[BroadcastInfo]:
        """The latest broadcasts, newest first."""
        with self._sessions() as session:
            rows = session.execute(
                select(Broadcast, Group)
                .outerjoin(Group, Group.id == Broadcast.target_group_id)
                .order_by(Broadcast.id.desc())
                .limit(max(0, limit))
            ).all()
        return [_info(b, g) for b, g in rows]

    def report(self, broadcast_id: int) -> BroadcastReport:
        """How the broadcast went: queued, sending, sent, failed (why), skipped (why), left out."""
        info = self.get_broadcast(broadcast_id)
        with self._sessions() as session:
            counts = session.execute(
                select(OutboundMessage.status, OutboundMessage.last_error, func.count())
                .where(OutboundMessage.broadcast_id == broadcast_id)
                .group_by(OutboundMessage.status, OutboundMessage.last_error)
            ).all()
            # A failure with no reason on the message: the last failed attempt's detail says why.
            unexplained = session.execute(
                select(DeliveryAttempt.outbound_id, DeliveryAttempt.detail)
                .join(OutboundMessage, OutboundMessage.id == DeliveryAttempt.outbound_id)
                .where(
                    OutboundMessage.broadcast_id == broadcast_id,
                    OutboundMessage.status == STATUS_FAILED,
                    OutboundMessage.last_error.is_(None),
                )
                .order_by(DeliveryAttempt.id)
            ).all()
            retries = session.execute(
                select(func.count())
                .select_from(DeliveryAttempt)
                .join(OutboundMessage, OutboundMessage.id == DeliveryAttempt.outbound_id)
                .where(OutboundMessage.broadcast_id == broadcast_id, DeliveryAttempt.outcome == "retry")
            ).scalar_one()
        by_status: Counter = Counter()
        failed_reasons: Counter = Counter()
        skipped_reasons: Counter = Counter()
        for status, reason, count in counts:
            by_status[status] += count
            if status == STATUS_FAILED and reason is not None:
                failed_reasons[reason] += count
            elif status == STATUS_SKIPPED:
                skipped_reasons[reason or "no reason recorded"] += count
        last_detail: Dict[int, Optional[str]] = {}
        for outbound_id, detail in unexplained:
            last_detail[outbound_id] = detail
        for detail in last_detail.values():
            failed_reasons[detail or "no reason recorded"] += 1
        return BroadcastReport(
            broadcast=info,
            queued=by_status[STATUS_QUEUED],
            sending=by_status[STATUS_SENDING],
            sent=by_status[STATUS_SENT],
            failed=by_status[STATUS_FAILED],
            skipped=by_status[STATUS_SKIPPED],
            failed_reasons=dict(failed_reasons.most_common()),
            skipped_reasons=dict(skipped_reasons.most_common()),
            opted_out=info.opted_out_count or 0,
            unreachable=info.unreachable_count or 0,
            retries=int(retries),
        )


# --- the delivery process's side ----------------------------------------------------------------


def _insert_new_only(session: Session):
    """INSERT into outbound_messages that quietly keeps an existing row with the same source_key."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - we run on SQLite and PostgreSQL only
        raise RuntimeError(f"no idempotent insert for the {dialect} database")
    return insert(OutboundMessage.__table__).on_conflict_do_nothing(index_elements=["source_key"])


def _start(session_factory: "sessionmaker[Session]", broadcast_id: int, now: datetime) -> bool:
    """Queue one due broadcast's messages and mark it sending, all in one transaction; False if not due."""
    with session_factory() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        if broadcast is None or broadcast.status != "scheduled":
            return False
        recipients = _recipients(
            session, broadcast.target_kind, broadcast.target_group_id, broadcast.target_champion_id
        )
        keep, opted_out, unreachable = _split(recipients)
        rows = [
            {
                "champion_id": champion_id,
                "kind": KIND,
                "source_key": source_key(broadcast.id, champion_id),
                "broadcast_id": broadcast.id,
                "text": broadcast.text,
                "buttons": broadcast.buttons,
                "status": STATUS_QUEUED,
                "attempts": 0,
                "not_before": now,
                "created_at": now,
            }
            for champion_id, _channel in keep
        ]
        for start in range(0, len(rows), INSERT_CHUNK):
            session.execute(_insert_new_only(session), rows[start : start + INSERT_CHUNK])
        # Only if it is still scheduled (not cancelled or started elsewhere meanwhile): else undo.
        claimed = session.execute(
            update(Broadcast)
            .where(Broadcast.id == broadcast.id, Broadcast.status == "scheduled")
            .values(
                status="sending",
                started_at=now,
                queued_count=len(rows),
                opted_out_count=opted_out,
                unreachable_count=unreachable,
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            session.rollback()
            return False
        session.commit()
        return True


def finish_sent_broadcasts(session_factory: "sessionmaker[Session]") -> int:
    """Mark "sending" broadcasts "sent" once none of their messages is queued or being sent; returns how many."""
    pending = (
        select(OutboundMessage.id)
        .where(
            OutboundMessage.broadcast_id == Broadcast.id,
            OutboundMessage.status.in_((STATUS_QUEUED, STATUS_SENDING)),
        )
        .exists()
    )
    with session_factory() as session:
        # Read first: the delivery process calls this every second, and most times nothing is done.
        done = list(
            session.execute(select(Broadcast.id).where(Broadcast.status == "sending", ~pending)).scalars()
        )
        if not done:
            return 0
        result = session.execute(
            update(Broadcast)
            .where(Broadcast.id.in_(done), Broadcast.status == "sending", ~pending)
            .values(status="sent")
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return int(result.rowcount or 0)


def start_due_broadcasts(session_factory: "sessionmaker[Session]", now: Optional[datetime] = None) -> int:
    """Queue every scheduled broadcast whose time has come (idempotent, crash-safe); returns how many started."""
    now = as_utc(now or utcnow()).astimezone(timezone.utc)
    with session_factory() as session:
        due = list(
            session.execute(
                select(Broadcast.id)
                .where(Broadcast.status == "scheduled", Broadcast.send_at <= now)
                .order_by(Broadcast.send_at, Broadcast.id)
            ).scalars()
        )
    started = sum(1 for broadcast_id in due if _start(session_factory, broadcast_id, now))
    finish_sent_broadcasts(session_factory)
    return started
