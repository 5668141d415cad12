"""Tables of the app database: the champions who chat with us and their messages."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import declarative_base, relationship

# Stable constraint names, so Alembic migrations read the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Base = declarative_base(metadata=MetaData(naming_convention=NAMING_CONVENTION))

DIRECTION_IN = "in"
DIRECTION_OUT = "out"


def utcnow() -> datetime:
    """The current time in UTC, timezone-aware."""
    return datetime.now(timezone.utc)


def as_utc(moment: Optional[datetime]) -> Optional[datetime]:
    """moment as an aware UTC datetime (SQLite hands back naive values, which are UTC here)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class Champion(Base):
    """Someone who talks to the companion on one channel (web page, Telegram, ...)."""

    __tablename__ = "champions"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_champions_channel_external_id"),)

    id = Column(Integer, primary_key=True)
    channel = Column(String(32), nullable=False)
    external_id = Column(String(128), nullable=False)
    display_name = Column(String(200), nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    last_active_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)
    # Set when the champion says /stop (or "stop messages from the team"): no broadcasts.
    opted_out_at = Column(DateTime(timezone=True), nullable=True)
    # Set when their channel refuses messages for good (a Telegram user who blocked the bot).
    unreachable_at = Column(DateTime(timezone=True), nullable=True)
    unreachable_reason = Column(String(200), nullable=True)
    # Key of the organisation they volunteer with (knowledge/organisations.yml), if they said.
    organisation = Column(String(64), nullable=True)
    # IANA time zone for reading and saying times ("Europe/London" when NULL).
    time_zone = Column(String(64), nullable=True)
    # Set when the champion confirms "delete my data": nothing more is sent to them, and the
    # erasure pass (bot/erasure.py) removes them from every store once their last turn is over.
    erasure_requested_at = Column(DateTime(timezone=True), nullable=True)

    messages = relationship("ChatMessage", back_populates="champion", passive_deletes=True)

    def __repr__(self) -> str:
        """Short form for logs; never includes message text."""
        return f"<Champion id={self.id} channel={self.channel!r}>"


class ChatMessage(Base):
    """One message in a conversation: from the champion ("in") or from the companion ("out")."""

    __tablename__ = "chat_messages"
    __table_args__ = (
        CheckConstraint("direction IN ('in', 'out')", name="direction"),
        Index("ix_chat_messages_champion_id_id", "champion_id", "id"),
    )

    id = Column(Integer, primary_key=True)
    champion_id = Column(
        Integer, ForeignKey("champions.id", ondelete="CASCADE"), nullable=False
    )
    direction = Column(String(3), nullable=False)
    text = Column(Text, nullable=False)
    # What a tapped button sent to Rasa (the text column holds its title).
    payload = Column(Text, nullable=True)
    # Buttons offered with a companion message: [{"title": ..., "payload": ...}].
    buttons = Column(JSON, nullable=True)
    created_at = Column(DateTime(timezone=True), nullable=False, default=utcnow)

    champion = relationship("Champion", back_populates="messages")

    def __repr__(self) -> str:
        """Short form for logs; never includes message text."""
        return f"<ChatMessage id={self.id} champion_id={self.champion_id} direction={self.direction!r}>"
