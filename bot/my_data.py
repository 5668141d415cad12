"""Everything held about one champion: a short summary for the chat and the full export file.

"What do you know about me?" answers from `MyDataRepository.summary` (counts and key facts,
worded by actions/my_data.py from knowledge/my_data.yml) and offers the file built by
`MyDataRepository.export`: every row of every table that leads to the champion, table by
table (EXPORTED_TABLES; tests/test_my_data.py fails when a table with a path to `champions`
is added and not listed), plus their conversation as Rasa stored it (its `events`, read
through bot/rasa_tracker.py). The web chat serves the file at GET /api/my-data.json
(bot/my_data_download.py); Telegram sends it as a document (bot/telegram_bot.py).

Not in the file, because it is not about the champion: `groups` themselves (names the team
chose; the champion's memberships are in), `telegram_callbacks` (button payloads kept under
short keys, with no link to anyone), and the team's broadcasts to groups or to everyone
(what reached the champion is in their `outbound_messages`; broadcasts addressed to them
alone are in).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery_models import DeliveryAttempt, OutboundMessage
from bot.models import Champion, ChatMessage, as_utc, utcnow
from bot.plan_models import Project, StepAnswer
from bot.reflection_models import Pledge, PledgeCheckIn, Reflection
from bot.reminder_models import Meeting, Reminder
from bot.sender_ids import OTHER_CHANNEL, sender_id
from bot.team_models import Broadcast, Group, GroupMember

CONTENT_FILE = Path(__file__).resolve().parent.parent / "knowledge" / "my_data.yml"
FILENAME = "my-data.json"
FORMAT = "coproduction-companion/my-data"
FORMAT_VERSION = 1
# Every table with a path to `champions`, in the order the file lists them.
EXPORTED_TABLES = (
    "champions",
    "chat_messages",
    "group_members",
    "projects",
    "step_answers",
    "meetings",
    "reminders",
    "reflections",
    "pledges",
    "pledge_check_ins",
    "outbound_messages",
    "delivery_attempts",
    "broadcasts",
)
DEFAULT_TIME_ZONE = "Europe/London"


_content_lock = threading.Lock()
_content: Optional[Dict[str, Any]] = None


def load_content(path: Optional[Path] = None) -> Dict[str, Any]:
    """knowledge/my_data.yml (read once; a path given is read afresh)."""
    global _content
    if path is not None:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    with _content_lock:
        if _content is None:
            _content = yaml.safe_load(CONTENT_FILE.read_text(encoding="utf-8")) or {}
        return _content


def rasa_sender_ids(channel: str, external_id: str) -> List[str]:
    """The Rasa sender ids of a champion: ("web", "ab12") → ["web-ab12"]; a sender Rasa knew by another name → itself."""
    if channel == OTHER_CHANNEL:
        return [external_id]
    return [sender_id(channel, external_id)]


def _value(value: Any) -> Any:
    """A column value as JSON: times in UTC ISO 8601, everything else as it is."""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _rows(session: Session, table: Table, *where: Any) -> List[Dict[str, Any]]:
    """Every row of table matching where, all columns, oldest (lowest id) first."""
    order = [c for c in table.primary_key.columns]
    result = session.execute(select(table).where(*where).order_by(*order))
    return [{key: _value(value) for key, value in row._mapping.items()} for row in result]


@dataclass(frozen=True)
class Summary:
    """The key facts held about a champion, for a phone-sized reply."""

    champion_id: int
    channel: str
    since: datetime
    organisation: Optional[str]
    time_zone: str
    groups: Tuple[Tuple[str, str], ...]  # (kind, name)
    projects: Tuple[str, ...]
    meetings: int
    upcoming_meetings: int
    reminders_to_come: int
    reflections: int
    pledges: int
    open_pledges: int
    messages: int
    team_messages_on: bool
    erasure_requested: bool = False


class MyDataRepository:
    """Reads everything held about one champion (one short transaction per call)."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    def find_champion(self, channel: str, external_id: str) -> Optional[Champion]:
        """The champion known on channel by external_id, or None."""
        with self._sessions() as session:
            return session.execute(
                select(Champion).where(Champion.channel == channel, Champion.external_id == external_id)
            ).scalar_one_or_none()

    def summary(self, champion_id: int, now: Optional[datetime] = None) -> Optional[Summary]:
        """Counts and key facts about the champion (None when there is no such champion)."""
        now = as_utc(now) or utcnow()
        with self._sessions() as session:
            champion = session.get(Champion, champion_id)
            if champion is None:
                return None

            def count(statement) -> int:
                """The number a count query gives."""
                return int(session.execute(statement).scalar_one() or 0)

            groups = tuple(
                (kind, name)
                for kind, name in session.execute(
                    select(Group.kind, Group.name)
                    .join(GroupMember, GroupMember.group_id == Group.id)
                    .where(GroupMember.champion_id == champion_id)
                    .order_by(Group.kind, Group.name)
                )
            )
            projects = tuple(
                session.execute(
                    select(Project.name).where(Project.champion_id == champion_id).order_by(Project.updated_at.desc())
                ).scalars()
            )
            live = (Meeting.champion_id == champion_id, Meeting.cancelled_at.is_(None))
            return Summary(
                champion_id=champion.id,
                channel=champion.channel,
                since=as_utc(champion.created_at),
                organisation=champion.organisation,
                time_zone=champion.time_zone or DEFAULT_TIME_ZONE,
                groups=groups,
                projects=projects,
                meetings=count(select(func.count()).select_from(Meeting).where(Meeting.champion_id == champion_id)),
                upcoming_meetings=count(select(func.count()).select_from(Meeting).where(*live, Meeting.starts_at > now)),
                reminders_to_come=count(
                    select(func.count())
                    .select_from(Reminder)
                    .join(Meeting, Meeting.id == Reminder.meeting_id)
                    .where(*live, Reminder.status == "pending")
                ),
                reflections=count(
                    select(func.count()).select_from(Reflection).where(Reflection.champion_id == champion_id)
                ),
                pledges=count(select(func.count()).select_from(Pledge).where(Pledge.champion_id == champion_id)),
                open_pledges=count(
                    select(func.count())
                    .select_from(Pledge)
                    .where(Pledge.champion_id == champion_id, Pledge.status.in_(("open", "in_progress", "need_help")))
                ),
                messages=count(
                    select(func.count()).select_from(ChatMessage).where(ChatMessage.champion_id == champion_id)
                ),
                team_messages_on=champion.opted_out_at is None,
                erasure_requested=champion.erasure_requested_at is not None,
            )

    def tables(self, champion_id: int) -> Optional[Dict[str, List[Dict[str, Any]]]]:
        """Every row held about the champion, by table (EXPORTED_TABLES); None when there is no such champion."""
        with self._sessions() as session:
            if session.get(Champion, champion_id) is None:
                return None
            project_ids = select(Project.id).where(Project.champion_id == champion_id)
            meeting_ids = select(Meeting.id).where(Meeting.champion_id == champion_id)
            outbound_ids = select(OutboundMessage.id).where(OutboundMessage.champion_id == champion_id)
            memberships = [
                {k: _value(v) for k, v in row._mapping.items()}
                for row in session.execute(
                    select(
                        GroupMember.group_id,
                        GroupMember.champion_id,
                        GroupMember.added_at,
                        Group.kind.label("group_kind"),
                        Group.name.label("group_name"),
                    )
                    .join(Group, Group.id == GroupMember.group_id)
                    .where(GroupMember.champion_id == champion_id)
                    .order_by(GroupMember.group_id)
                )
            ]
            tables = {
                "champions": _rows(session, Champion.__table__, Champion.id == champion_id),
                "chat_messages": _rows(session, ChatMessage.__table__, ChatMessage.champion_id == champion_id),
                "group_members": memberships,
                "projects": _rows(session, Project.__table__, Project.champion_id == champion_id),
                "step_answers": _rows(session, StepAnswer.__table__, StepAnswer.project_id.in_(project_ids)),
                "meetings": _rows(session, Meeting.__table__, Meeting.champion_id == champion_id),
                "reminders": _rows(session, Reminder.__table__, Reminder.meeting_id.in_(meeting_ids)),
                "reflections": _rows(session, Reflection.__table__, Reflection.champion_id == champion_id),
                "pledges": _rows(session, Pledge.__table__, Pledge.champion_id == champion_id),
                "pledge_check_ins": _rows(session, PledgeCheckIn.__table__, PledgeCheckIn.champion_id == champion_id),
                "outbound_messages": _rows(
                    session, OutboundMessage.__table__, OutboundMessage.champion_id == champion_id
                ),
                "delivery_attempts": _rows(
                    session, DeliveryAttempt.__table__, DeliveryAttempt.outbound_id.in_(outbound_ids)
                ),
                "broadcasts": _rows(session, Broadcast.__table__, Broadcast.target_champion_id == champion_id),
            }
        return {name: tables[name] for name in EXPORTED_TABLES}

    def export(
        self,
        champion_id: int,
        tracker: Any = None,
        now: Optional[datetime] = None,
        about: Optional[Dict[str, str]] = None,
    ) -> Optional[Dict[str, Any]]:
        """The whole file as a dict: every table's rows and the Rasa conversation events (None: no such champion).

        tracker is a bot.rasa_tracker.TrackerEvents (None: Rasa keeps no stored conversations);
        about describes each part of the file (knowledge/my_data.yml's `export` wording).
        """
        now = as_utc(now) or utcnow()
        tables = self.tables(champion_id)
        if tables is None:
            return None
        champion = tables["champions"][0]
        senders = rasa_sender_ids(champion["channel"], champion["external_id"])
        conversation: Dict[str, Any] = {"sender_ids": senders, "stored": tracker is not None}
        conversation["events"] = tracker.events(senders) if tracker is not None else []
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "exported_at": now.isoformat(),
            "about": dict(about or {}),
            "tables": tables,
            "conversation": conversation,
        }

    def export_json(
        self,
        champion_id: int,
        tracker: Any = None,
        now: Optional[datetime] = None,
        about: Optional[Dict[str, str]] = None,
    ) -> Optional[bytes]:
        """The export as a UTF-8 JSON file (None: no such champion)."""
        data = self.export(champion_id, tracker, now, about)
        if data is None:
            return None
        return (json.dumps(data, ensure_ascii=False, indent=1, default=str) + "\n").encode("utf-8")



class MyDataFiles:
    """The "my data" file for a champion, as the web chat serves it and Telegram sends it."""

    def __init__(self, session_factory: "sessionmaker[Session]", tracker: Any = None,
                 content: Optional[Mapping[str, Any]] = None) -> None:
        """Read the app database behind session_factory and Rasa's events through tracker (None: not stored)."""
        self.repository = MyDataRepository(session_factory)
        self.tracker = tracker
        self._content = content

    @property
    def about(self) -> Dict[str, str]:
        """What the file says about its parts."""
        content = self._content or load_content()
        return dict((content.get("export") or {}).get("about") or {})

    def for_champion(self, champion_id: int, now: Optional[datetime] = None) -> Optional[bytes]:
        """The champion's file (None: no such champion, or they asked for their data to be deleted)."""
        summary = self.repository.summary(champion_id, now)
        if summary is None or summary.erasure_requested:
            return None
        return self.repository.export_json(champion_id, self.tracker, now, self.about)

    def for_sender(self, channel: str, external_id: str, now: Optional[datetime] = None) -> Optional[bytes]:
        """The file of the champion known on channel by external_id (None when there is none)."""
        champion = self.repository.find_champion(channel, external_id)
        return None if champion is None else self.for_champion(champion.id, now)

    def close(self) -> None:
        """Close the connection to Rasa's store."""
        if self.tracker is not None:
            self.tracker.close()
