"""Test helpers for a champion's own data: a champion with a row in every table, and Rasa's tracker store.

Used by tests/test_erasure.py and tests/test_my_data.py (SQLite and PostgreSQL), and by the form
tests (`opted_out`).
"""
from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence

from sqlalchemy import MetaData, func, select, text
from sqlalchemy.engine import Engine

from bot.delivery_models import DeliveryAttempt, OutboundMessage, TelegramCallback
from bot.models import Champion, ChatMessage
from bot.plan_models import Project, StepAnswer
from bot.reflection_models import Pledge, PledgeCheckIn, Reflection
from bot.reminder_models import Meeting, Reminder
from bot.team_models import Broadcast, Group, GroupMember

PG_ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def opted_out(sender: str) -> bool:
    """Whether the champion behind a Rasa sender id has stopped team messages (in the actions' database)."""
    from actions.db import get_sessions
    from bot.sender_ids import split_sender

    channel, external_id = split_sender(sender)
    with get_sessions()() as session:
        row = session.execute(
            select(Champion).where(Champion.channel == channel, Champion.external_id == external_id)
        ).scalar_one_or_none()
    return row is not None and row.opted_out_at is not None


def champion_tables(metadata: MetaData) -> set:
    """Names of every table with a path of foreign keys to `champions` (the table itself included)."""
    linked = {"champions"}
    grew = True
    while grew:
        grew = False
        for table in metadata.tables.values():
            if table.name in linked:
                continue
            if any(fk.column.table.name in linked for fk in table.foreign_keys):
                linked.add(table.name)
                grew = True
    return linked


@dataclass
class Populated:
    """A champion built with rows in every table, and the ids of what was made."""

    champion_id: int
    channel: str
    external_id: str
    ids: Dict[str, List[int]] = field(default_factory=dict)

    @property
    def sender_id(self) -> str:
        """The champion's Rasa sender id."""
        return {"web": "web-", "telegram": "tg-"}[self.channel] + self.external_id


def populate(sessions, channel: str = "web", external_id: Optional[str] = None, now: Optional[datetime] = None) -> Populated:
    """A champion with rows in every table that leads to them (and a broadcast addressed to them)."""
    now = now or datetime.now(timezone.utc)
    external_id = external_id or (uuid.uuid4().hex if channel == "web" else str(700000 + uuid.uuid4().int % 100000))
    with sessions() as s:
        champion = Champion(channel=channel, external_id=external_id, display_name="Sam", organisation="leeds",
                            time_zone="Europe/London", created_at=now - timedelta(days=30), last_active_at=now)
        s.add(champion)
        s.flush()
        cid = champion.id
        group = s.execute(select(Group).where(Group.kind == "cohort", Group.name == "Leeds 2026")).scalar_one_or_none()
        if group is None:
            group = Group(kind="cohort", name="Leeds 2026")
            s.add(group)
            s.flush()
        s.add(GroupMember(group_id=group.id, champion_id=cid))
        s.add_all([
            ChatMessage(champion_id=cid, direction="in", text="my stroke project"),
            ChatMessage(champion_id=cid, direction="out", text="Tell me more", buttons=[{"title": "Yes", "payload": "/affirm"}]),
        ])
        project = Project(champion_id=cid, name="Stroke rehab", about="Better rehab after a stroke", current_question="role")
        s.add(project)
        s.flush()
        s.add(StepAnswer(project_id=project.id, question_key="aim", value="shorter waits"))
        meeting = Meeting(champion_id=cid, project_id=project.id, description="PRG meeting",
                          starts_at=now + timedelta(days=3), time_zone="Europe/London")
        past = Meeting(champion_id=cid, description="patient panel", starts_at=now - timedelta(days=3))
        s.add_all([meeting, past])
        s.flush()
        broadcast = Broadcast(text="Hello Sam", target_kind="champion", target_champion_id=cid, created_by="team",
                              status="sent")
        s.add(broadcast)
        s.flush()
        queued = OutboundMessage(champion_id=cid, kind="reminder", source_key=f"test:{cid}:queued",
                                 text="Reminder: PRG meeting", status="queued", not_before=now)
        sent = OutboundMessage(champion_id=cid, kind="broadcast", source_key=f"test:{cid}:sent", text="Hello Sam",
                               broadcast_id=broadcast.id, status="sent", sent_at=now - timedelta(days=1))
        checkin_out = OutboundMessage(champion_id=cid, kind="checkin", source_key=f"test:{cid}:checkin",
                                      text="How is your pledge going?", status="queued", not_before=now)
        s.add_all([queued, sent, checkin_out])
        s.flush()
        s.add_all([
            DeliveryAttempt(outbound_id=sent.id, outcome="sent"),
            DeliveryAttempt(outbound_id=queued.id, outcome="retry", detail="429"),
        ])
        reminders = [
            Reminder(meeting_id=meeting.id, kind="day_before", offset_minutes=1440,
                     due_at=now + timedelta(days=2), status="pending"),
            Reminder(meeting_id=meeting.id, kind="custom", offset_minutes=4320,
                     due_at=now - timedelta(minutes=1), status="queued", outbound_id=queued.id, handled_at=now),
            Reminder(meeting_id=past.id, kind="hour_before", offset_minutes=60,
                     due_at=now - timedelta(days=3, hours=1), status="sent", handled_at=now - timedelta(days=3)),
        ]
        s.add_all(reminders)
        reflection = Reflection(champion_id=cid, meeting_id=past.id, session_label="patient panel", organisation="leeds",
                                takeaway="they listened", rating=4, improvement="papers earlier", sharing="anonymous")
        s.add(reflection)
        s.flush()
        pledge = Pledge(reflection_id=reflection.id, champion_id=cid, text="read the papers early")
        s.add(pledge)
        s.flush()
        check_ins = [
            PledgeCheckIn(pledge_id=pledge.id, champion_id=cid, due_at=now + timedelta(days=7), status="pending"),
            PledgeCheckIn(pledge_id=pledge.id, champion_id=cid, due_at=now - timedelta(minutes=1), status="queued",
                          outbound_id=checkin_out.id),
            PledgeCheckIn(pledge_id=pledge.id, champion_id=cid, due_at=now - timedelta(days=7), status="answered",
                          answer="in_progress", answered_at=now - timedelta(days=7)),
        ]
        s.add_all(check_ins)
        s.add(TelegramCallback(key=f"k{cid}", payload='/delete_my_data{"my_data_choice":"yes"}'))
        s.commit()
        return Populated(cid, channel, external_id, {
            "reminders": [r.id for r in reminders],
            "check_ins": [c.id for c in check_ins],
            "outbound": [queued.id, sent.id, checkin_out.id],
            "broadcast": [broadcast.id],
            "group": [group.id],
            "project": [project.id],
        })


def rows_for(engine: Engine, champion_id: int, ids: Optional[Dict[str, List[int]]] = None) -> Dict[str, int]:
    """How many rows each table holds for the champion, counted with plain SQL (the stores queried directly)."""
    q = {
        "champions": "SELECT count(*) FROM champions WHERE id = :c",
        "chat_messages": "SELECT count(*) FROM chat_messages WHERE champion_id = :c",
        "group_members": "SELECT count(*) FROM group_members WHERE champion_id = :c",
        "projects": "SELECT count(*) FROM projects WHERE champion_id = :c",
        "meetings": "SELECT count(*) FROM meetings WHERE champion_id = :c",
        "reflections": "SELECT count(*) FROM reflections WHERE champion_id = :c",
        "pledges": "SELECT count(*) FROM pledges WHERE champion_id = :c",
        "pledge_check_ins": "SELECT count(*) FROM pledge_check_ins WHERE champion_id = :c",
        "outbound_messages": "SELECT count(*) FROM outbound_messages WHERE champion_id = :c",
        "broadcasts": "SELECT count(*) FROM broadcasts WHERE target_champion_id = :c",
    }
    counts: Dict[str, int] = {}
    with engine.connect() as connection:
        for table, sql in q.items():
            counts[table] = connection.execute(text(sql), {"c": champion_id}).scalar_one()
        if ids is not None:
            # Children found by their own ids, whatever their parents' state.
            for table, key, column in (("reminders", "reminders", "id"), ("step_answers", "project", "project_id"),
                                       ("delivery_attempts", "outbound", "outbound_id")):
                values = ids.get(key) or [-1]
                counts[table] = connection.execute(
                    text(f"SELECT count(*) FROM {table} WHERE {column} IN ({', '.join(str(int(v)) for v in values)})")
                ).scalar_one()
    return counts


def table_counts(engine: Engine) -> Dict[str, int]:
    """Rows per table of the app database (for "others untouched" checks)."""
    from bot.db import load_models

    with engine.connect() as connection:
        return {
            name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in load_models().tables.items()
        }


# --- Rasa's tracker store ---------------------------------------------------------------------------


def tracker_store(url: str):
    """A real rasa SQLTrackerStore on the database at url (it creates its `events` table)."""
    from sqlalchemy.engine import make_url

    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return SQLTrackerStore(Domain.empty(), dialect="sqlite", db=parsed.database)
    return SQLTrackerStore(Domain.empty(), dialect="postgresql", host=parsed.host, port=parsed.port,
                           db=parsed.database, username=parsed.username, password=parsed.password)


def conversation_events(texts: Sequence[str], start: float):
    """Rasa events of a short conversation: session start, then each text and a reply, from time start."""
    from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered

    events = [ActionExecuted("action_session_start", timestamp=start), SessionStarted(timestamp=start),
              ActionExecuted("action_listen", timestamp=start)]
    t = start
    for said in texts:
        t += 1
        events += [
            UserUttered(said, {"name": "greet", "confidence": 0.9}, timestamp=t),
            SlotSet("organisation_asked", True, timestamp=t + 0.1),
            BotUttered(f"reply to {said}", timestamp=t + 0.2),
            ActionExecuted("action_listen", timestamp=t + 0.3),
        ]
    return events


def save_conversation(store, sender: str, events) -> None:
    """Save a tracker with events to the store as Rasa does after a turn (inserting what isn't stored yet)."""
    from rasa.shared.core.trackers import DialogueStateTracker

    tracker = DialogueStateTracker.from_events(sender, events)
    asyncio.run(store.save(tracker))


def events_in(url: str, sender: str) -> List[tuple]:
    """(type_name, timestamp) of the sender's rows in Rasa's events table, queried directly."""
    from sqlalchemy import create_engine

    engine = create_engine(url, future=True)
    try:
        with engine.connect() as connection:
            return [tuple(r) for r in connection.execute(
                text("SELECT type_name, timestamp FROM events WHERE sender_id = :s ORDER BY id"), {"s": sender})]
    finally:
        engine.dispose()


def create_pg_database(prefix: str = "coprod_tracker") -> Optional[str]:
    """A new empty PostgreSQL database's name (None when there is no server)."""
    import psycopg2

    try:
        admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError:
        return None
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def drop_pg_database(name: str) -> None:
    """Drop a database made by create_pg_database."""
    import psycopg2

    admin = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()
