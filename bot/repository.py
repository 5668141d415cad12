"""Reading and writing conversations in the app database (SQLAlchemy 2.0 style)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.models import DIRECTION_IN, DIRECTION_OUT, Champion, ChatMessage, utcnow

DIRECTIONS = (DIRECTION_IN, DIRECTION_OUT)


class ChatRepository:
    """Champions and their chat transcripts, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    def find_champion(self, channel: str, external_id: str) -> Optional[Champion]:
        """The champion known on channel by external_id, or None."""
        with self._sessions() as session:
            return session.execute(
                select(Champion).where(
                    Champion.channel == channel, Champion.external_id == external_id
                )
            ).scalar_one_or_none()

    def get_or_create_champion(
        self, channel: str, external_id: str, display_name: Optional[str] = None
    ) -> Champion:
        """The champion known on channel by external_id, created on first contact."""
        existing = self.find_champion(channel, external_id)
        if existing is not None:
            return existing
        with self._sessions() as session:
            champion = Champion(channel=channel, external_id=external_id, display_name=display_name)
            session.add(champion)
            try:
                session.commit()
                return champion
            except IntegrityError:
                # Another request created the same champion a moment ago: use that one.
                session.rollback()
        found = self.find_champion(channel, external_id)
        if found is None:  # pragma: no cover - only if the row vanished again
            raise LookupError(f"champion {channel}/{external_id} could not be created")
        return found

    def add_message(
        self,
        champion: Champion | int,
        direction: str,
        text: str,
        buttons: Optional[Sequence[Dict[str, Any]]] = None,
        payload: Optional[str] = None,
    ) -> ChatMessage:
        """Store one message (direction "in" or "out") and mark the champion as active."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        champion_id = champion if isinstance(champion, int) else champion.id
        now = utcnow()
        with self._sessions() as session:
            message = ChatMessage(
                champion_id=champion_id,
                direction=direction,
                text=text,
                payload=payload,
                buttons=list(buttons) if buttons else None,
                created_at=now,
            )
            session.add(message)
            session.execute(
                update(Champion).where(Champion.id == champion_id).values(last_active_at=now)
            )
            session.commit()
            return message

    def history(self, champion: Champion | int, limit: int = 200) -> List[ChatMessage]:
        """The champion's latest `limit` messages, oldest first."""
        champion_id = champion if isinstance(champion, int) else champion.id
        with self._sessions() as session:
            rows = (
                session.execute(
                    select(ChatMessage)
                    .where(ChatMessage.champion_id == champion_id)
                    .order_by(ChatMessage.id.desc())
                    .limit(max(0, limit))
                )
                .scalars()
                .all()
            )
        return list(reversed(rows))

    def set_opted_out(self, champion: Champion | int, opted_out: bool) -> None:
        """Record that the champion said stop (True) or start again (False) to team messages."""
        champion_id = champion if isinstance(champion, int) else champion.id
        with self._sessions() as session:
            session.execute(
                update(Champion)
                .where(Champion.id == champion_id)
                .values(opted_out_at=utcnow() if opted_out else None)
            )
            session.commit()

    def set_reachable(self, champion: Champion | int, reachable: bool, reason: Optional[str] = None) -> None:
        """Record that the champion's channel refuses messages for good (or accepts them again)."""
        champion_id = champion if isinstance(champion, int) else champion.id
        values = (
            {"unreachable_at": None, "unreachable_reason": None}
            if reachable
            else {"unreachable_at": utcnow(), "unreachable_reason": (reason or "unreachable")[:200]}
        )
        with self._sessions() as session:
            session.execute(update(Champion).where(Champion.id == champion_id).values(**values))
            session.commit()

    def history_after(self, champion: Champion | int, after_id: int, limit: int = 200) -> List[ChatMessage]:
        """The champion's messages with an id above after_id, oldest first, at most `limit` of them."""
        champion_id = champion if isinstance(champion, int) else champion.id
        with self._sessions() as session:
            return list(
                session.execute(
                    select(ChatMessage)
                    .where(ChatMessage.champion_id == champion_id, ChatMessage.id > after_id)
                    .order_by(ChatMessage.id)
                    .limit(max(0, limit))
                ).scalars()
            )
