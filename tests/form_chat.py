"""Test helpers for running custom actions the way Rasa runs them: NLU results, a migrated app
database for the actions, and the tracker and slot bookkeeping of one champion's conversation.

Used by the form and action tests (walk-through, reminders, reflections, time zones, check-ins).
"""
from __future__ import annotations

import contextlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.clock import set_clock
from actions.db import use_sessions
from bot.db import make_engine, make_session_factory, migrate


def nlu_result(text: str, intent: Optional[str], confidence: float, entities: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What NLU would make of text; a button payload is parsed like Rasa's /intent{json} syntax (confidence 1)."""
    match = re.fullmatch(r"/(\w+)(\{.*\})?", text)
    if match:
        intent, confidence = match.group(1), 1.0
        entities = json.loads(match.group(2)) if match.group(2) else {}
    return {
        "text": text,
        "intent": {"name": intent or "nlu_fallback", "confidence": confidence},
        "entities": [{"entity": k, "value": v} for k, v in (entities or {}).items()],
    }


@contextlib.contextmanager
def actions_database(tmp_path: Path, now: Optional[datetime] = None) -> Iterator[Any]:
    """A migrated SQLite app database the actions use (its sessions), with the actions' clock pinned to now."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    use_sessions(sessions)
    if now is not None:
        set_clock(lambda: now)
    try:
        yield sessions
    finally:
        set_clock(None)
        use_sessions(None)
        engine.dispose()


class ActionChat:
    """One champion's conversation with the action server: its slots, and whether form is running."""

    def __init__(self, sender: str, form: str, domain: Dict[str, Any], slots: List[str]) -> None:
        """A conversation with the form's slots (and requested_slot) not set yet."""
        self.sender = sender
        self.form = form
        self.domain = domain
        self.slots: Dict[str, Any] = {name: None for name in [*slots, "requested_slot"]}
        self.form_active = False

    def tracker(self, latest: Dict[str, Any], events: List[Dict[str, Any]]) -> Tracker:
        """A tracker as the action server receives it."""
        return Tracker(self.sender, dict(self.slots), latest, events, False, None,
                       {"name": self.form} if self.form_active else {}, "action_listen")

    async def run(self, action, latest: Dict[str, Any], events: Optional[List[Dict[str, Any]]] = None):
        """Run one action, apply its slot events; returns (messages, events)."""
        dispatcher = CollectingDispatcher()
        events = events or [{"event": "user", "text": latest["text"], "parse_data": latest}]
        result = await action.run(dispatcher, self.tracker(latest, events), self.domain)
        for event in result:
            if event.get("event") == "slot":
                self.slots[event["name"]] = event["value"]
        return dispatcher.messages, result

    async def said(self, action, latest: Dict[str, Any], events: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
        """Run one action as run() does; only what it said."""
        messages, _ = await self.run(action, latest, events)
        return messages

    async def form_turn(self, latest: Dict[str, Any], slot: str, validate, end, ask) -> List[Dict[str, Any]]:
        """One message while the form runs: validate it as the form's slot, then the end action if the
        form stopped, or the next question; returns everything said."""
        text = latest["text"]
        self.slots[slot] = text
        events = [{"event": "user", "text": text, "parse_data": latest}, {"event": "slot", "name": slot, "value": text}]
        said, result = await self.run(validate, latest, events)
        if any(e.get("event") == "slot" and e.get("name") == "requested_slot" and e.get("value") is None for e in result):
            self.form_active = False
            return said + await self.said(end, latest)
        return said + await self.said(ask, latest)
