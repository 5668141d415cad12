"""Tables for reflections after a session, the pledges made in them, and the check-ins that follow pledges up.

A reflection is saved answer by answer (each column is filled the moment the
champion gives it), so stopping half way keeps what was said; `completed_at`
is set when they reach the end. Every pledge belongs to a reflection (saying
"can I make a pledge" starts a reflection that may skip the other questions),
so each pledge follows its reflection's sharing choice.

A check-in is one "how is your pledge going?" message, due at a time the
champion picked. The scheduler hands due check-ins to the delivery layer
(source key "checkin:<id>"); the champion's answer is recorded on the
check-in and on the pledge, and "in progress" adds the next check-in row.
"""
from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import relationship

from bot.models import Base, utcnow

SESSION_LABEL_MAX = 200
ANSWER_MAX = 2000
PLEDGE_MAX = 500
MAX_PLEDGES_PER_REFLECTION = 3

# Who may see a reflection (and its pledges): nobody but the champion, the
# engagement team without the champion's name or chat id, or with their name.
SHARING_PRIVATE = "private"
SHARING_ANONYMOUS = "anonymous"
SHARING_NAMED = "named"
SHARING_CHOICES = (SHARING_PRIVATE, SHARING_ANONYMOUS, SHARING_NAMED)

# Where a pledge stands: just made, or the champion's latest answer at a check-in (or at any time).
PLEDGE_OPEN = "open"
PLEDGE_DONE = "done"
PLEDGE_IN_PROGRESS = "in_progress"
PLEDGE_NEED_HELP = "need_help"
PLEDGE_LET_GO = "let_go"
PLEDGE_STATUSES = (PLEDGE_OPEN, PLEDGE_DONE, PLEDGE_IN_PROGRESS, PLEDGE_NEED_HELP, PLEDGE_LET_GO)
# The answers a champion can give at a check-in.
CHECK_IN_ANSWERS = (PLEDGE_DONE, PLEDGE_IN_PROGRESS, PLEDGE_NEED_HELP, PLEDGE_LET_GO)

# Life of a check-in: pending -> queued (handed to the delivery layer) -> answered;
# pending -> cancelled (the pledge was marked done or let go first, or the champion's data was deleted).
CHECK_IN_PENDING = "pending"
CHECK_IN_QUEUED = "queued"
CHECK_IN_ANSWERED = "answered"
CHECK_IN_CANCELLED = "cancelled"
CHECK_IN_STATUSES = (CHECK_IN_PENDING, CHECK_IN_QUEUED, CHECK_IN_ANSWERED, CHECK_IN_CANCELLED)


def _in(values) -> str:
    """SQL "IN (...)" list of string literals for a check constraint."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class Reflection(Base):
    """What a champion said after a session or meeting: take-away, rating, what would help, sharing choice."""

    __tablename__ = "reflections"
    __table_args__ = (
        CheckConstraint("rating IS NULL OR (rating >= 1 AND rating <= 5)", name="rating"),
        CheckConstraint(f"sharing IS NULL OR sharing IN {_in(SHARING_CHOICES)}", name="sharing"),
        Index("ix_reflections_champion_id_created_at", "champion_id", "created_at"),
        Index("ix_reflections_created_at", "created_at"),
    )

    id = Column(Integer, primary_key=True)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False)
    # The meeting it is about when it came from a reminder (or was picked from their meetings).
    meeting_id = Column(Integer, ForeignKey("meetings.id", ondelete="SET NULL"), nullable=True)
    # Which session it was, as the champion named it or the meeting's description.
    session_label = Column(String(SESSION_LABEL_MAX), nullable=True)
    # The champion's organisation when they reflected (the team's reports filter by it).
    organisation = Column(String(64), nullable=True)
    takeaway = Column(Text, nullable=True)
    rating = Column(Integer, nullable=True)
    improvement = Column(Text, nullable=True)
    # NULL until they answer the sharing question: treated as private.
    sharing = Column(String(16), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    completed_at = Column(DateTime(timezone=True), nullable=True)

    pledges = relationship(
        "Pledge", back_populates="reflection", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Pledge.id",
    )

    def __repr__(self) -> str:
        """Short form for logs; never includes what the champion wrote."""
        return f"<Reflection id={self.id} champion_id={self.champion_id}>"


class Pledge(Base):
    """One thing a champion pledged to do, and where it stands."""

    __tablename__ = "pledges"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(PLEDGE_STATUSES)}", name="status"),
        Index("ix_pledges_champion_id", "champion_id"),
        Index("ix_pledges_reflection_id", "reflection_id"),
    )

    id = Column(Integer, primary_key=True)
    reflection_id = Column(Integer, ForeignKey("reflections.id", ondelete="CASCADE"), nullable=False)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False)
    text = Column(String(PLEDGE_MAX), nullable=False)
    status = Column(String(16), nullable=False, default=PLEDGE_OPEN)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    # When it was marked done (at a check-in or by saying so).
    done_at = Column(DateTime(timezone=True), nullable=True)

    reflection = relationship("Reflection", back_populates="pledges")
    check_ins = relationship(
        "PledgeCheckIn", back_populates="pledge", cascade="all, delete-orphan", passive_deletes=True,
        order_by="PledgeCheckIn.due_at",
    )

    def __repr__(self) -> str:
        """Short form for logs; never includes the pledge's text."""
        return f"<Pledge id={self.id} champion_id={self.champion_id} status={self.status!r}>"


class PledgeCheckIn(Base):
    """One "how is your pledge going?" message, due at a time the champion picked."""

    __tablename__ = "pledge_check_ins"
    __table_args__ = (
        CheckConstraint(f"status IN {_in(CHECK_IN_STATUSES)}", name="status"),
        CheckConstraint(f"answer IS NULL OR answer IN {_in(CHECK_IN_ANSWERS)}", name="answer"),
        Index("ix_pledge_check_ins_status_due_at", "status", "due_at"),
        Index("ix_pledge_check_ins_pledge_id", "pledge_id"),
        Index("ix_pledge_check_ins_champion_id", "champion_id"),
    )

    id = Column(Integer, primary_key=True)
    pledge_id = Column(Integer, ForeignKey("pledges.id", ondelete="CASCADE"), nullable=False)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False)
    due_at = Column(DateTime(timezone=True), nullable=False)  # UTC
    status = Column(String(16), nullable=False, default=CHECK_IN_PENDING)
    # The delivery layer's row once handed over (outbound_messages.id).
    outbound_id = Column(Integer, ForeignKey("outbound_messages.id", ondelete="SET NULL"), nullable=True)
    handled_at = Column(DateTime(timezone=True), nullable=True)
    answer = Column(String(16), nullable=True)
    answered_at = Column(DateTime(timezone=True), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    updated_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    pledge = relationship("Pledge", back_populates="check_ins")

    @property
    def source_key(self) -> str:
        """The delivery layer's idempotency key: one message per check-in."""
        return check_in_source_key(self.id)

    def __repr__(self) -> str:
        """Short form for logs."""
        return f"<PledgeCheckIn id={self.id} pledge_id={self.pledge_id} status={self.status!r}>"


def check_in_source_key(check_in_id: int) -> str:
    """"checkin:12": the outbox key of check-in 12."""
    return f"checkin:{check_in_id}"
