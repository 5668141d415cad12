"""Kill -9 each process in turn, then start it again: nothing saved is lost, nothing is sent twice.

One stack (the embedded default: SQLite) serves three scenarios:

- a champion part way through the five steps, while Rasa, the action server, the web chat and
  the delivery process are each killed with SIGKILL and started again between their turns: every
  answer is in the finished plan and the conversation carries on where it was;
- a broadcast to 3,000 web champions, with the delivery process killed while it is sending;
- 3,000 reminders falling due together, with the delivery process killed while it hands them over.

Web chat messages are delivered exactly once even across a SIGKILL (the transcript line and the
"sent" mark are one transaction), so every champion must hold exactly one copy.
"""
from __future__ import annotations

import json
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from typing import Dict, List

import pytest
from sqlalchemy import func, insert, select

from bench.stack import MODEL, running_stack
from bot.broadcasts import Broadcasts, Target
from bot.db import make_engine, make_session_factory
from bot.models import Champion, ChatMessage
from bot.reminder_models import Meeting, Reminder
from bot.team_auth import authorise
from tests.conftest import LIVE_STACK_TIMEOUT, _log_tails

pytestmark = pytest.mark.model

CROWD = 3000
FIRST_ID = 100_000
BROADCAST = "Faults test: the patient panel meets on Thursday."


def _post(url: str, body: Dict) -> List[Dict]:
    """One web chat message; the companion's replies."""
    request = urllib.request.Request(
        f"{url}/api/messages", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["messages"]


class WebChampion:
    """One champion typing into the web chat page."""

    def __init__(self, url: str) -> None:
        """A new champion on the web chat at url."""
        self.url, self.sender_id, self.last = url, uuid.uuid4().hex, []

    def say(self, text: str) -> str:
        """Type a message; the replies joined."""
        self.last = _post(self.url, {"sender_id": self.sender_id, "text": text})
        return "\n".join(m["text"] for m in self.last)

    def tap(self, title_part: str) -> str:
        """Tap the button whose title contains title_part."""
        buttons = [b for m in self.last for b in m["buttons"] if title_part.lower() in b["title"].lower()]
        assert buttons, f"no button like {title_part!r} in {self.last}"
        self.last = _post(self.url, {"sender_id": self.sender_id, "payload": buttons[0]["payload"],
                                     "title": buttons[0]["title"]})
        return "\n".join(m["text"] for m in self.last)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The whole stack on SQLite, with the crowd of web champions in its database."""
    if not MODEL.exists():
        pytest.fail("models/coproduction.tar.gz is missing: the test command trains it first")
    data_dir = tmp_path_factory.mktemp("faults")
    stack_cm = running_stack(data_dir=data_dir, timeout=LIVE_STACK_TIMEOUT)
    try:
        running = stack_cm.__enter__()
    except (TimeoutError, OSError) as exc:
        pytest.fail(f"the stack did not start: {exc}\n{_log_tails(data_dir)}")
    engine = make_engine(f"sqlite:///{data_dir / 'app.db'}")
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        connection.execute(insert(Champion), [
            {"id": FIRST_ID + i, "channel": "web", "external_id": f"crowd-{i}", "created_at": now,
             "last_active_at": now} for i in range(CROWD)])
    running.engine = engine
    try:
        yield running
    finally:
        engine.dispose()
        stack_cm.__exit__(None, None, None)


def _copies(engine, text_like: str) -> Dict[int, int]:
    """How many transcript lines from the companion match text_like, per crowd champion."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(ChatMessage.champion_id, func.count()).where(
                ChatMessage.champion_id >= FIRST_ID, ChatMessage.champion_id < FIRST_ID + CROWD,
                ChatMessage.direction == "out", ChatMessage.text.like(text_like)
            ).group_by(ChatMessage.champion_id)
        ).all()
    return dict(rows)


def _kill_while_sending(stack, text_like: str) -> int:
    """SIGKILL the delivery process as soon as some (not all) copies have arrived; how many had."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        arrived = sum(_copies(stack.engine, text_like).values())
        if arrived > 0:
            stack.kill("delivery")
            return arrived
        time.sleep(0.02)
    pytest.fail(f"nothing was delivered\n{_log_tails(stack.data_dir)}")


def _wait_for_everyone(stack, text_like: str) -> Dict[int, int]:
    """Wait until every crowd champion has a copy (or time runs out); the copies per champion."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        copies = _copies(stack.engine, text_like)
        if len(copies) == CROWD:
            time.sleep(3)  # anything sent twice would show up now
            return _copies(stack.engine, text_like)
        time.sleep(0.5)
    return _copies(stack.engine, text_like)


def test_each_process_killed_in_turn_during_a_five_step_walk(stack):
    """SIGKILL Rasa, the action server, the web chat and delivery in turn: the walk carries on, every answer kept."""
    me = WebChampion(stack.web_url)
    assert "name" in me.say("help me with my project").lower()
    me.say("Stroke project")
    stack.kill("rasa")
    stack.start("rasa")
    me.say("Improving stroke care in Copeland")
    me.tap("Co-design")
    stack.kill("actions")
    stack.start("actions")
    assert "ladder" in me.tap("Done").lower()
    me.tap("Yes")
    me.tap("Yes")
    stack.kill("web")
    stack.start("web")
    me.tap("No")
    assert "step 2" in me.tap("Yes").lower()
    stack.kill("delivery")
    stack.start("delivery")
    answers = ["Attend the monthly meetings for a year", "Fewer people in Copeland having a stroke"]
    for answer in answers:
        me.say(answer)
    plan = me.say("show my plan")
    assert "Stroke project" in plan
    for answer in answers:
        assert answer[:30] in plan, plan
    with urllib.request.urlopen(f"{stack.web_url}/api/history?sender_id={me.sender_id}&limit=500", timeout=30) as r:
        history = json.loads(r.read())
    typed = [m["text"] for m in history["messages"] if m["direction"] == "in"]
    assert typed[:3] == ["help me with my project", "Stroke project", "Improving stroke care in Copeland"]


def test_broadcast_survives_a_kill_of_the_delivery_process(stack):
    """A broadcast to 3,000 web champions, delivery killed mid-send: every one gets it exactly once."""
    sessions = make_session_factory(stack.engine)
    Broadcasts(sessions).create_broadcast(BROADCAST, Target.everyone(), "faults test", auth=authorise("t", "t"))
    arrived = _kill_while_sending(stack, BROADCAST)
    stack.start("delivery")
    copies = _wait_for_everyone(stack, BROADCAST)
    assert len(copies) == CROWD, f"{CROWD - len(copies)} never arrived (killed after {arrived})"
    assert set(copies.values()) == {1}, {k: v for k, v in copies.items() if v != 1}


def test_reminders_firing_survive_a_kill_of_the_delivery_process(stack):
    """3,000 reminders due together, delivery killed while handing them over: each arrives exactly once."""
    now = datetime.now(timezone.utc)
    due = now + timedelta(seconds=5)
    with stack.engine.begin() as connection:
        connection.execute(insert(Meeting), [
            {"id": FIRST_ID + i, "champion_id": FIRST_ID + i, "description": f"faults meeting {i}",
             "starts_at": due + timedelta(hours=1), "time_zone": "Europe/London", "created_at": now,
             "updated_at": now} for i in range(CROWD)])
        connection.execute(insert(Reminder), [
            {"id": FIRST_ID + i, "meeting_id": FIRST_ID + i, "kind": "hour_before", "offset_minutes": 60,
             "due_at": due, "status": "pending", "generation": 0, "late": False, "created_at": now,
             "updated_at": now} for i in range(CROWD)])
    arrived = _kill_while_sending(stack, "%faults meeting %")
    stack.start("delivery")
    copies = _wait_for_everyone(stack, "%faults meeting %")
    assert len(copies) == CROWD, f"{CROWD - len(copies)} never arrived (killed after {arrived})"
    assert set(copies.values()) == {1}, {k: v for k, v in copies.items() if v != 1}
    with stack.engine.connect() as connection:
        states = dict(connection.execute(
            select(Reminder.status, func.count()).where(Reminder.id >= FIRST_ID).group_by(Reminder.status)).all())
    assert states.get("pending", 0) == 0 and states.get("missed", 0) == 0, states
