"""Tables of the delivery layer: every message the companion sends first, stored before it is sent."""
from __future__ import annotations

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, String, Text

from bot.models import Base, utcnow

# Life of an outbound message: queued -> sending -> sent | failed | skipped
# (back to queued with a later not_before when a retry is due).
STATUS_QUEUED = "queued"
STATUS_SENDING = "sending"
STATUS_SENT = "sent"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"
STATUSES = (STATUS_QUEUED, STATUS_SENDING, STATUS_SENT, STATUS_FAILED, STATUS_SKIPPED)


class OutboundMessage(Base):
    """One message the companion sends on its own initiative (broadcast, reminder, check-in, ...)."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'failed', 'skipped')", name="status"
        ),
        Index("ix_outbound_messages_status_not_before", "status", "not_before"),
        Index("ix_outbound_messages_broadcast_id", "broadcast_id"),
        Index("ix_outbound_messages_champion_id", "champion_id"),
    )

    id = Column(Integer, primary_key=True)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False)
    # What made it: "broadcast", "reminder", "checkin", ...
    kind = Column(String(32), nullable=False)
    # Unique per message ("broadcast:12:champion:5"): enqueueing twice stores it once.
    source_key = Column(String(200), nullable=False, unique=True)
    broadcast_id = Column(Integer, ForeignKey("broadcasts.id", ondelete="SET NULL"), nullable=True)
    text = Column(Text, nullable=False)
    # Buttons offered with it: [{"title": ..., "payload": ...}].
    buttons = Column(JSON, nullable=True)
    status = Column(String(16), nullable=False, default=STATUS_QUEUED)
    attempts = Column(Integer, nullable=False, default=0)
    # Not sent before this time (the due time, or when the next retry may go).
    not_before = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    claimed_at = Column(DateTime(timezone=True), nullable=True)
    sent_at = Column(DateTime(timezone=True), nullable=True)
    # Why it failed or was skipped, or what the last retry was for.
    last_error = Column(String(500), nullable=True)
    # The channel's id for the sent message (Telegram message_id, chat_messages.id for the web).
    channel_message_id = Column(String(64), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    def __repr__(self) -> str:
        """Short form for logs; never includes message text."""
        return f"<OutboundMessage id={self.id} champion_id={self.champion_id} status={self.status!r}>"


class DeliveryAttempt(Base):
    """One try at sending an outbound message, and how it went."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_outbound_id", "outbound_id"),)

    id = Column(Integer, primary_key=True)
    outbound_id = Column(
        Integer, ForeignKey("outbound_messages.id", ondelete="CASCADE"), nullable=False
    )
    # bot.outbox's OUTCOME_*: "sent", "retry" (429 or network trouble: queued again), "failed"
    # (will not be retried), "skipped" (left unsent on purpose, e.g. opted out), "interrupted"
    # (the courier stopped or died before recording the outcome: queued again).
    outcome = Column(String(16), nullable=False)
    detail = Column(String(500), nullable=True)
    at = Column(DateTime(timezone=True), nullable=False, default=utcnow)


class TelegramCallback(Base):
    """A button payload too long for Telegram's 64-byte callback_data, kept under a short key."""

    __tablename__ = "telegram_callbacks"

    key = Column(String(64), primary_key=True)
    payload = Column(Text, nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
