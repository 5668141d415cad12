"""Tables for meeting-preparation reminders: a champion's meetings and the reminders set for each."""
from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import relationship

from bot.models import Base, utcnow

MEETING_DESCRIPTION_MAX = 200
TIME_ZONE_MAX = 64

# Kinds of reminder: the two defaults, one the champion chose, and the prompt after the meeting.
KIND_DAY_BEFORE = "day_before"
KIND_HOUR_BEFORE = "hour_before"
KIND_CUSTOM = "custom"
KIND_AFTER_MEETING = "after_meeting"
KINDS = (KIND_DAY_BEFORE, KIND_HOUR_BEFORE, KIND_CUSTOM, KIND_AFTER_MEETING)

# Life of a reminder: pending -> queued (handed to the delivery layer) -> sent;
# pending -> missed (its time passed while the service was down and the meeting had begun);
# pending -> cancelled. A snooze (or moving the meeting) puts a queued or sent reminder back to pending.
STATUS_PENDING = "pending"
STATUS_QUEUED = "queued"
STATUS_SENT = "sent"
STATUS_MISSED = "missed"
STATUS_CANCELLED = "cancelled"
STATUSES = (STATUS_PENDING, STATUS_QUEUED, STATUS_SENT, STATUS_MISSED, STATUS_CANCELLED)


class Meeting(Base):
    """A meeting a champion asked to be reminded about, at one instant in their time zone."""

    __tablename__ = "meetings"
    __table_args__ = (Index("ix_meetings_champion_id_starts_at", "champion_id", "starts_at"),)

    id = Column(Integer, primary_key=True)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False)
    # The five-steps project it belongs to, if any (its role and aim are recalled the day before).
    project_id = Column(Integer, ForeignKey("projects.id", ondelete="SET NULL"), nullable=True)
    description = Column(String(MEETING_DESCRIPTION_MAX), nullable=False)
    starts_at = Column(DateTime(timezone=True), nullable=False)  # UTC
    time_zone = Column(String(TIME_ZONE_MAX), nullable=False, default="Europe/London")
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    cancelled_at = Column(DateTime(timezone=True), nullable=True)

    reminders = relationship(
        "Reminder", back_populates="meeting", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        """Short form for logs; never includes what the champion wrote."""
        return f"<Meeting id={self.id} champion_id={self.champion_id} starts_at={self.starts_at}>"


class Reminder(Base):
    """One message about a meeting, due at a set time before (or after) it."""

    __tablename__ = "reminders"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('day_before', 'hour_before', 'custom', 'after_meeting')", name="kind"
        ),
        CheckConstraint(
            "status IN ('pending', 'queued', 'sent', 'missed', 'cancelled')", name="status"
        ),
        Index("ix_reminders_status_due_at", "status", "due_at"),
        Index("ix_reminders_meeting_id", "meeting_id"),
        Index("ix_reminders_outbound_id", "outbound_id"),
    )

    id = Column(Integer, primary_key=True)
    meeting_id = Column(Integer, ForeignKey("meetings.id", ondelete="CASCADE"), nullable=False)
    kind = Column(String(16), nullable=False)
    # Minutes before the meeting's start (negative: after it). Whole days count on the calendar.
    offset_minutes = Column(Integer, nullable=False)
    # When it goes (UTC): worked out from the start and the offset, or the snooze time.
    due_at = Column(DateTime(timezone=True), nullable=False)
    status = Column(String(16), nullable=False, default=STATUS_PENDING)
    # Set by a snooze ("in 1 hour"): due_at is moved there too.
    snoozed_until = Column(DateTime(timezone=True), nullable=True)
    # Bumped each time a reminder that already went is armed again (a snooze, the meeting moved),
    # so each sending has its own key in the delivery layer.
    generation = Column(Integer, nullable=False, default=0)
    # The delivery layer's row once handed over (outbound_messages.id).
    outbound_id = Column(
        Integer, ForeignKey("outbound_messages.id", ondelete="SET NULL"), nullable=True
    )
    # When it was handed over, or recorded as missed; `late` when it went with an apology.
    handled_at = Column(DateTime(timezone=True), nullable=True)
    late = Column(Boolean, nullable=False, default=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    meeting = relationship("Meeting", back_populates="reminders")

    @property
    def source_key(self) -> str:
        """The delivery layer's idempotency key: one message per reminder and generation."""
        return reminder_source_key(self.id, self.generation)

    def __repr__(self) -> str:
        """Short form for logs."""
        return f"<Reminder id={self.id} meeting_id={self.meeting_id} kind={self.kind!r} status={self.status!r}>"


def reminder_source_key(reminder_id: int, generation: int = 0) -> str:
    """"reminder:12", then "reminder:12:1" once reminder 12 has been armed again (snoozed, re-timed)."""
    return f"reminder:{reminder_id}" if not generation else f"reminder:{reminder_id}:{generation}"
