"""Tables of the engagement team's tools: groups of champions and broadcasts to them."""
from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)

from bot.models import Base, utcnow

GROUP_KINDS = ("organisation", "cohort", "project")
TARGET_KINDS = ("all", "group", "champion")
# scheduled -> sending (recipients queued in outbound_messages) -> sent; or cancelled.
BROADCAST_STATUSES = ("scheduled", "sending", "sent", "cancelled")


class Group(Base):
    """A named group of champions: an organisation, a training cohort or a project."""

    __tablename__ = "groups"
    __table_args__ = (
        UniqueConstraint("kind", "name", name="uq_groups_kind_name"),
        CheckConstraint("kind IN ('organisation', 'cohort', 'project')", name="kind"),
    )

    id = Column(Integer, primary_key=True)
    kind = Column(String(16), nullable=False)
    name = Column(String(120), nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)


class GroupMember(Base):
    """A champion's membership of a group."""

    __tablename__ = "group_members"
    __table_args__ = (Index("ix_group_members_champion_id", "champion_id"),)

    group_id = Column(Integer, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    champion_id = Column(Integer, ForeignKey("champions.id", ondelete="CASCADE"), primary_key=True)
    added_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)


class Broadcast(Base):
    """A message from the engagement team to everyone, a group or one champion, now or later."""

    __tablename__ = "broadcasts"
    __table_args__ = (
        CheckConstraint("target_kind IN ('all', 'group', 'champion')", name="target_kind"),
        CheckConstraint("status IN ('scheduled', 'sending', 'sent', 'cancelled')", name="status"),
        Index("ix_broadcasts_status_send_at", "status", "send_at"),
    )

    id = Column(Integer, primary_key=True)
    text = Column(Text, nullable=False)
    buttons = Column(JSON, nullable=True)
    target_kind = Column(String(16), nullable=False)
    target_group_id = Column(Integer, ForeignKey("groups.id", ondelete="SET NULL"), nullable=True)
    target_champion_id = Column(
        Integer, ForeignKey("champions.id", ondelete="SET NULL"), nullable=True
    )
    # Who on the engagement team made it (free text from the tool, e.g. their name).
    created_by = Column(String(120), nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    send_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    status = Column(String(16), nullable=False, default="scheduled")
    # Filled when it starts sending: how many were queued and how many were left out as opted out.
    queued_count = Column(Integer, nullable=True)
    opted_out_count = Column(Integer, nullable=True)
    unreachable_count = Column(Integer, nullable=True)
    started_at = Column(DateTime(timezone=True), nullable=True)
    cancelled_at = Column(DateTime(timezone=True), nullable=True)
