"""Keeping conversation records no longer than RETENTION_DAYS (DATA-PROTECTION.md).

A scheduled clean-up in the delivery process (every RETENTION_CHECK_SECONDS,
and once at start) deletes what is older than the retention period:

- the web chat and Telegram transcripts (chat_messages);
- Rasa's conversation events in its tracker store (the events table);
- messages the assistant sent first that are finished (sent, failed or skipped),
  with their delivery attempts; anything still queued or being sent stays;
- long button payloads kept for Telegram (telegram_callbacks).

What a champion chose to keep working with is not a conversation log and stays
until they delete it ("delete my data"): their profile, five-steps plans,
meetings and reminders, reflections and pledges.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery_models import (
    STATUS_FAILED,
    STATUS_SENT,
    STATUS_SKIPPED,
    DeliveryAttempt,
    OutboundMessage,
    TelegramCallback,
)
from bot.models import ChatMessage

log = logging.getLogger(__name__)

FINISHED = (STATUS_SENT, STATUS_FAILED, STATUS_SKIPPED)


@dataclass
class RetentionReport:
    """How many records one clean-up deleted, by kind."""

    chat_messages: int = 0
    tracker_events: int = 0
    outbound_messages: int = 0
    delivery_attempts: int = 0
    telegram_callbacks: int = 0

    @property
    def total(self) -> int:
        """Everything deleted."""
        return (self.chat_messages + self.tracker_events + self.outbound_messages
                + self.delivery_attempts + self.telegram_callbacks)


class Retention:
    """Deletes conversation records older than `days` from the app database and Rasa's tracker store."""

    def __init__(self, session_factory: "sessionmaker[Session]", tracker: Any, days: float) -> None:
        """tracker: a bot.rasa_tracker.TrackerEvents (None when Rasa's events can't be reached)."""
        self._sessions = session_factory
        self.tracker = tracker
        self.days = float(days)

    def cutoff(self, now: Optional[datetime] = None) -> datetime:
        """Records from before this moment are deleted."""
        return (now or datetime.now(timezone.utc)) - timedelta(days=self.days)

    def run_once(self, now: Optional[datetime] = None) -> RetentionReport:
        """One clean-up; returns what it deleted."""
        cutoff = self.cutoff(now)
        report = RetentionReport()
        with self._sessions() as session:
            old_outbound = select(OutboundMessage.id).where(
                OutboundMessage.created_at < cutoff, OutboundMessage.status.in_(FINISHED)
            )
            report.delivery_attempts = session.execute(
                delete(DeliveryAttempt).where(DeliveryAttempt.outbound_id.in_(old_outbound)),
                execution_options={"synchronize_session": False},
            ).rowcount or 0
            report.outbound_messages = session.execute(
                delete(OutboundMessage).where(OutboundMessage.created_at < cutoff, OutboundMessage.status.in_(FINISHED)),
                execution_options={"synchronize_session": False},
            ).rowcount or 0
            report.chat_messages = session.execute(
                delete(ChatMessage).where(ChatMessage.created_at < cutoff),
                execution_options={"synchronize_session": False},
            ).rowcount or 0
            report.telegram_callbacks = session.execute(
                delete(TelegramCallback).where(TelegramCallback.created_at < cutoff),
                execution_options={"synchronize_session": False},
            ).rowcount or 0
            session.commit()
        if self.tracker is not None:
            report.tracker_events = self.tracker.delete_before(cutoff)
        if report.total:
            log.info(
                "retention (%g days): deleted %d transcript lines, %d conversation events, %d sent messages",
                self.days, report.chat_messages, report.tracker_events, report.outbound_messages,
            )
        return report


async def run_retention_forever(
    settings: Any, session_factory: "sessionmaker[Session]", stop: asyncio.Event, tracker: Any = None
) -> None:
    """The delivery process's clean-up: at start, then every settings.retention_check_seconds, until stop."""
    from bot.rasa_tracker import TrackerEvents

    own_tracker = tracker is None
    if own_tracker:
        tracker = TrackerEvents.from_settings(settings)
    retention = Retention(session_factory, tracker, settings.retention_days)
    try:
        while not stop.is_set():
            try:
                await asyncio.to_thread(retention.run_once)
            except Exception:  # noqa: BLE001 - a database hiccup must not stop the clean-up
                log.exception("the retention clean-up failed; trying again later")
            try:
                await asyncio.wait_for(stop.wait(), settings.retention_check_seconds)
            except asyncio.TimeoutError:
                pass
    finally:
        if own_tracker and tracker is not None:
            tracker.close()
