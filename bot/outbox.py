"""The outbox: every message the companion sends first is stored here before it is sent.

Rows move queued -> sending -> sent | failed | skipped (back to queued with a later
``not_before`` when a retry is due). Every outcome is also recorded as a DeliveryAttempt, so
the engagement team can see what happened to each message and why. Enqueueing is idempotent
on ``source_key``; claiming is a conditional UPDATE (``WHERE status = 'queued'``, plus
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two couriers never claim the same row.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery_models import (
    STATUS_FAILED,
    STATUS_QUEUED,
    STATUS_SENDING,
    STATUS_SENT,
    STATUS_SKIPPED,
    STATUSES,
    DeliveryAttempt,
    OutboundMessage,
)
from bot.models import DIRECTION_OUT, Champion, ChatMessage, as_utc, utcnow

log = logging.getLogger(__name__)

# Outcomes recorded in delivery_attempts.
OUTCOME_SENT = "sent"
OUTCOME_RETRY = "retry"
OUTCOME_FAILED = "failed"
OUTCOME_SKIPPED = "skipped"
OUTCOME_INTERRUPTED = "interrupted"

# Rows per multi-row INSERT (keeps well under SQLite's bound-parameter limit).
_INSERT_CHUNK = 200
# Keys per "WHERE source_key IN (...)" lookup (well under SQLite's bound-parameter limit).
_LOOKUP_CHUNK = 500
_ERROR_CHARS = 500


def _clip(text: Optional[str]) -> Optional[str]:
    """text cut to fit the error/detail columns."""
    return None if text is None else text[:_ERROR_CHARS]


@dataclass(frozen=True)
class ClaimedMessage:
    """A claimed outbound message with what a sender needs to know about its champion."""

    id: int
    champion_id: int
    kind: str
    text: str
    buttons: Optional[List[Dict[str, Any]]]
    attempts: int
    broadcast_id: Optional[int]
    channel: str
    external_id: str
    opted_out: bool
    unreachable: bool
    # The champion asked for their data to be deleted (bot/erasure.py): nothing more is sent.
    erasure_requested: bool = False


class OutboxRepository:
    """Outbound messages and their delivery attempts, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    # --- storing --------------------------------------------------------------------------------

    def enqueue(
        self,
        champion_id: int,
        text: str,
        *,
        kind: str,
        source_key: str,
        buttons: Optional[Sequence[Dict[str, Any]]] = None,
        not_before: Optional[datetime] = None,
        broadcast_id: Optional[int] = None,
    ) -> int:
        """Store one message to send (once per source_key) and return its row id."""
        self.enqueue_many(
            [
                {
                    "champion_id": champion_id,
                    "text": text,
                    "kind": kind,
                    "source_key": source_key,
                    "buttons": buttons,
                    "not_before": not_before,
                    "broadcast_id": broadcast_id,
                }
            ]
        )
        with self._sessions() as session:
            return session.execute(
                select(OutboundMessage.id).where(OutboundMessage.source_key == source_key)
            ).scalar_one()

    def enqueue_each(self, rows: List[Dict[str, Any]]) -> None:
        """Store many messages at once; if one's champion was deleted meanwhile, only that one is dropped."""
        from sqlalchemy.exc import IntegrityError

        try:
            self.enqueue_many(rows)
        except IntegrityError:
            for row in rows:
                try:
                    self.enqueue_many([row])
                except IntegrityError:
                    log.info("%s: its champion is gone; nothing to send", row["source_key"])

    def ids_by_source_key(self, keys: Sequence[str]) -> Dict[str, int]:
        """Outbox row ids of these source keys (those stored)."""
        found: Dict[str, int] = {}
        with self._sessions() as session:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = list(keys[start : start + _LOOKUP_CHUNK])
                for key, oid in session.execute(
                    select(OutboundMessage.source_key, OutboundMessage.id).where(OutboundMessage.source_key.in_(chunk))
                ):
                    found[key] = oid
        return found

    def enqueue_many(self, rows: Iterable[Dict[str, Any]]) -> int:
        """Store many messages in one transaction (each once per source_key); return how many are new."""
        now = utcnow()
        values = [self._row_values(row, now) for row in rows]
        if not values:
            return 0
        added = 0
        with self._sessions() as session:
            statement = self._insert_ignoring_duplicates(session)
            for start in range(0, len(values), _INSERT_CHUNK):
                result = session.execute(statement.values(values[start : start + _INSERT_CHUNK]))
                added += max(0, result.rowcount or 0)
            session.commit()
        return added

    @staticmethod
    def _row_values(row: Dict[str, Any], now: datetime) -> Dict[str, Any]:
        """Column values for one new outbound row, refusing rows the courier could never send."""
        missing = [name for name in ("champion_id", "text", "kind", "source_key") if not row.get(name)]
        if missing:
            raise ValueError(f"outbound message needs {', '.join(missing)}")
        buttons = row.get("buttons")
        return {
            "champion_id": int(row["champion_id"]),
            "kind": str(row["kind"]),
            "source_key": str(row["source_key"]),
            "broadcast_id": row.get("broadcast_id"),
            "text": str(row["text"]),
            "buttons": [dict(button) for button in buttons] if buttons else None,
            "status": STATUS_QUEUED,
            "attempts": 0,
            "not_before": as_utc(row.get("not_before")) or now,
            "created_at": now,
        }

    @staticmethod
    def _insert_ignoring_duplicates(session: Session):
        """INSERT ... ON CONFLICT (source_key) DO NOTHING in this database's dialect."""
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:  # pragma: no cover - we run on SQLite and PostgreSQL only
            raise NotImplementedError(f"enqueue is not supported on {dialect}")
        return dialect_insert(OutboundMessage).on_conflict_do_nothing(index_elements=["source_key"])

    # --- claiming -------------------------------------------------------------------------------

    def claim_due(
        self,
        limit: int,
        now: Optional[datetime] = None,
        channels: Optional[Sequence[str]] = None,
    ) -> List[ClaimedMessage]:
        """Atomically move up to limit due queued rows (for champions on channels) to "sending"."""
        if limit <= 0:
            return []
        now = as_utc(now) or utcnow()
        candidates = (
            select(OutboundMessage.id)
            .where(OutboundMessage.status == STATUS_QUEUED, OutboundMessage.not_before <= now)
            .order_by(OutboundMessage.not_before, OutboundMessage.id)
            .limit(limit)
        )
        if channels is not None:
            candidates = candidates.join(Champion, Champion.id == OutboundMessage.champion_id).where(
                Champion.channel.in_(list(channels))
            )
        with self._sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Rows another courier is claiming right now are skipped, not waited for.
                candidates = candidates.with_for_update(skip_locked=True, of=OutboundMessage)
            ids = list(session.execute(candidates).scalars())
            claimed = []
            for outbound_id in ids:
                # Conditional: a row another courier claimed meanwhile is not ours (rowcount 0).
                result = session.execute(
                    update(OutboundMessage)
                    .where(OutboundMessage.id == outbound_id, OutboundMessage.status == STATUS_QUEUED)
                    .values(status=STATUS_SENDING, claimed_at=now)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:
                    claimed.append(outbound_id)
            session.commit()
            if not claimed:
                return []
            rows = session.execute(
                select(OutboundMessage, Champion)
                .join(Champion, Champion.id == OutboundMessage.champion_id)
                .where(OutboundMessage.id.in_(claimed))
                .order_by(OutboundMessage.not_before, OutboundMessage.id)
            ).all()
        return [
            ClaimedMessage(
                id=message.id,
                champion_id=message.champion_id,
                kind=message.kind,
                text=message.text,
                buttons=list(message.buttons) if message.buttons else None,
                attempts=message.attempts,
                broadcast_id=message.broadcast_id,
                channel=champion.channel,
                external_id=champion.external_id,
                opted_out=champion.opted_out_at is not None,
                unreachable=champion.unreachable_at is not None,
                erasure_requested=champion.erasure_requested_at is not None,
            )
            for message, champion in rows
        ]

    # --- outcomes -------------------------------------------------------------------------------

    def _finish(
        self,
        session: Session,
        outbound_id: int,
        outcome: str,
        detail: Optional[str],
        values: Dict[str, Any],
        count_attempt: bool = True,
    ) -> bool:
        """Update a "sending" row with values and record the attempt; False if it was not "sending"."""
        if count_attempt:
            values = {**values, "attempts": OutboundMessage.attempts + 1}
        result = session.execute(
            update(OutboundMessage)
            .where(OutboundMessage.id == outbound_id, OutboundMessage.status == STATUS_SENDING)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        session.add(DeliveryAttempt(outbound_id=outbound_id, outcome=outcome, detail=_clip(detail), at=utcnow()))
        return True

    def mark_sent(self, outbound_id: int, channel_message_id: Optional[str]) -> bool:
        """Record that the message was delivered (False if the row was not "sending")."""
        return self.mark_sent_many([(outbound_id, channel_message_id)])[0]

    def mark_sent_many(self, sent: Sequence[Tuple[int, Optional[str]]]) -> List[bool]:
        """Record several deliveries, (id, channel message id) each, in one transaction."""
        now = utcnow()
        results = []
        with self._sessions() as session:
            for outbound_id, channel_message_id in sent:
                results.append(
                    self._finish(
                        session,
                        outbound_id,
                        OUTCOME_SENT,
                        None,
                        {
                            "status": STATUS_SENT,
                            "sent_at": now,
                            "channel_message_id": None if channel_message_id is None else str(channel_message_id)[:64],
                            "last_error": None,
                        },
                    )
                )
            session.commit()
        return results

    def deliver_to_transcript(self, outbound_id: int) -> Optional[int]:
        """Add the message to its champion's web chat transcript and mark it sent, in ONE transaction.

        Returns the new chat_messages id, or None when the row was not "sending" (nothing added).
        """
        now = utcnow()
        with self._sessions() as session:
            message = session.execute(
                select(OutboundMessage).where(
                    OutboundMessage.id == outbound_id, OutboundMessage.status == STATUS_SENDING
                )
            ).scalar_one_or_none()
            if message is None:
                return None
            chat_message = ChatMessage(
                champion_id=message.champion_id,
                direction=DIRECTION_OUT,
                text=message.text,
                buttons=list(message.buttons) if message.buttons else None,
                created_at=now,
            )
            session.add(chat_message)
            session.flush()
            values = {
                "status": STATUS_SENT,
                "sent_at": now,
                "channel_message_id": str(chat_message.id),
                "last_error": None,
            }
            if not self._finish(session, outbound_id, OUTCOME_SENT, None, values):
                session.rollback()
                return None
            session.commit()
            return chat_message.id

    def mark_retry(
        self,
        outbound_id: int,
        error: str,
        not_before: datetime,
        *,
        count_attempt: bool = True,
    ) -> bool:
        """Put the message back in the queue until not_before, recording why (False if not "sending").

        count_attempt=False for rate limiting (429), which never uses up the message's attempts.
        """
        with self._sessions() as session:
            done = self._finish(
                session,
                outbound_id,
                OUTCOME_RETRY,
                error,
                {
                    "status": STATUS_QUEUED,
                    "not_before": as_utc(not_before),
                    "claimed_at": None,
                    "last_error": _clip(error),
                },
                count_attempt=count_attempt,
            )
            session.commit()
        return done

    def mark_failed(self, outbound_id: int, reason: str) -> bool:
        """Give up on the message for reason (False if the row was not "sending")."""
        return self._give_up(outbound_id, STATUS_FAILED, OUTCOME_FAILED, reason, count_attempt=True)

    def mark_skipped(self, outbound_id: int, reason: str) -> bool:
        """Leave the message unsent on purpose (opted out, ...) for reason (False if not "sending")."""
        return self._give_up(outbound_id, STATUS_SKIPPED, OUTCOME_SKIPPED, reason, count_attempt=False)

    def _give_up(self, outbound_id: int, status: str, outcome: str, reason: str, count_attempt: bool) -> bool:
        """Move a "sending" row to a final status other than sent, recording reason."""
        with self._sessions() as session:
            done = self._finish(
                session,
                outbound_id,
                outcome,
                reason,
                {"status": status, "last_error": _clip(reason)},
                count_attempt=count_attempt,
            )
            session.commit()
        return done

    def release(self, outbound_id: int, reason: str) -> bool:
        """Put a claimed message back in the queue untouched, as "interrupted" (it may have gone out)."""
        with self._sessions() as session:
            done = self._finish(
                session,
                outbound_id,
                OUTCOME_INTERRUPTED,
                reason,
                {"status": STATUS_QUEUED, "claimed_at": None, "last_error": _clip(reason)},
                count_attempt=True,
            )
            session.commit()
        return done

    def recover_interrupted(self, claimed_before: Optional[datetime] = None) -> int:
        """Put rows left "sending" by a courier that died back in the queue, recorded as "interrupted".

        Call it when no other courier is running (the delivery process does, at start), or pass
        claimed_before to recover only rows claimed before then.
        """
        now = utcnow()
        condition = OutboundMessage.status == STATUS_SENDING
        if claimed_before is not None:
            condition = and_(condition, OutboundMessage.claimed_at < as_utc(claimed_before))
        recovered = 0
        with self._sessions() as session:
            ids = list(session.execute(select(OutboundMessage.id).where(condition)).scalars())
            for outbound_id in ids:
                if self._finish(
                    session,
                    outbound_id,
                    OUTCOME_INTERRUPTED,
                    "the delivery process stopped before recording the outcome",
                    {"status": STATUS_QUEUED, "claimed_at": None, "not_before": now, "last_error": "interrupted"},
                ):
                    recovered += 1
            session.commit()
        return recovered

    # --- reading --------------------------------------------------------------------------------

    def get(self, outbound_id: int) -> Optional[OutboundMessage]:
        """The outbound message with this id, or None."""
        with self._sessions() as session:
            return session.get(OutboundMessage, outbound_id)

    def find(self, source_key: str) -> Optional[OutboundMessage]:
        """The outbound message stored under source_key, or None."""
        with self._sessions() as session:
            return session.execute(
                select(OutboundMessage).where(OutboundMessage.source_key == source_key)
            ).scalar_one_or_none()

    def attempts(self, outbound_id: int) -> List[DeliveryAttempt]:
        """Every recorded attempt at sending the message, oldest first."""
        with self._sessions() as session:
            return list(
                session.execute(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.outbound_id == outbound_id)
                    .order_by(DeliveryAttempt.id)
                ).scalars()
            )

    def counts(self, broadcast_id: Optional[int] = None) -> Dict[str, int]:
        """How many messages are in each status (all of them, or one broadcast's)."""
        query = select(OutboundMessage.status, func.count()).group_by(OutboundMessage.status)
        if broadcast_id is not None:
            query = query.where(OutboundMessage.broadcast_id == broadcast_id)
        totals = {status: 0 for status in STATUSES}
        with self._sessions() as session:
            for status, count in session.execute(query):
                totals[status] = int(count)
        return totals

    def reasons(self, broadcast_id: Optional[int] = None, status: str = STATUS_FAILED) -> Dict[str, int]:
        """How many messages in status (failed by default) there are per recorded reason."""
        query = (
            select(OutboundMessage.last_error, func.count())
            .where(OutboundMessage.status == status)
            .group_by(OutboundMessage.last_error)
        )
        if broadcast_id is not None:
            query = query.where(OutboundMessage.broadcast_id == broadcast_id)
        with self._sessions() as session:
            return {str(reason or ""): int(count) for reason, count in session.execute(query)}

    def pending(self, broadcast_id: Optional[int] = None) -> int:
        """How many messages are still queued or being sent."""
        query = select(func.count()).select_from(OutboundMessage).where(
            OutboundMessage.status.in_((STATUS_QUEUED, STATUS_SENDING))
        )
        if broadcast_id is not None:
            query = query.where(OutboundMessage.broadcast_id == broadcast_id)
        with self._sessions() as session:
            return int(session.execute(query).scalar_one())

    def next_due(self) -> Optional[datetime]:
        """When the earliest queued message becomes due (UTC), or None if nothing is queued."""
        with self._sessions() as session:
            value = session.execute(
                select(func.min(OutboundMessage.not_before)).where(OutboundMessage.status == STATUS_QUEUED)
            ).scalar_one()
        return as_utc(value)


__all__ = [
    "ClaimedMessage",
    "OutboxRepository",
    "OUTCOME_FAILED",
    "OUTCOME_INTERRUPTED",
    "OUTCOME_RETRY",
    "OUTCOME_SENT",
    "OUTCOME_SKIPPED",
    "STATUS_FAILED",
    "STATUS_QUEUED",
    "STATUS_SENDING",
    "STATUS_SENT",
    "STATUS_SKIPPED",
    "as_utc",
]
