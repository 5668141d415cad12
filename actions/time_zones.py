"""The champion's time zone by chat: see it, set it, change it ("my time zone is Europe/Paris", "I live in Spain now").

`set_time_zone` starts `time_zone_form`. `validate_time_zone_form` reads the
message that started it: a place or zone it knows is saved at once and the form
stops; a place with several zones ("the USA"), a near spelling ("Frnace") or a
place it doesn't know gets a question, and the form takes the reply (a tap or a
typed place). "What time zone am I in?" just shows the zone in use. After
`max_tries` replies that name no known place, it stops asking and keeps the zone
in use. `action_ask_tz_answer` puts the question; `action_time_zone_end` tidies
up. The zone is saved in champions.time_zone at once (bot/time_zones.py); reminders
read it (actions/reminders.py). All wording is in knowledge/time_zones.yml.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.clock import now
from actions.db import get_sessions
from bot.plans import fill
from bot.reminder_times import say_time
from bot.reminders import ReminderRepository
from bot.repository import ChatRepository
from bot.sender_ids import split_sender
from bot.time_zones import (
    CHOOSE,
    FOUND,
    MAYBE,
    NONE,
    TimeZoneRepository,
    TimeZones,
    buttons_for,
    champion_zone,
    load_content,
    normalise,
    read_place,
    valid_zone,
)

log = logging.getLogger(__name__)

ANSWER_SLOT = "tz_answer"
STATE_SLOT = "tz_state"
REQUESTED_SLOT = "requested_slot"
FORM = "time_zone_form"
ENTITY = "tz_zone"
ASK = "ask"  # tz_zone value of the "Somewhere else" button
CRISIS_INTENT = "crisis"
CRISIS_RESPONSE = "utter_crisis"
# Why the form stopped.
STOP_SAVED, STOP_SHOWN, STOP_KEPT, STOP_GAVE_UP, STOP_CRISIS, STOP_TROUBLE = (
    "saved", "shown", "kept", "gave_up", "crisis", "trouble",
)

def content() -> TimeZones:
    """knowledge/time_zones.yml."""
    return load_content()


def words(key: str, /, **values: Any) -> str:
    """The conversation wording called key, placeholders filled."""
    return fill(str(content().conversation[key]).strip(), **values)


def button(key: str, /, **values: Any) -> Dict[str, str]:
    """A button from the conversation wording."""
    spec = content().conversation["buttons"][key]
    return {"title": spec["title"].format(**values), "payload": spec["payload"].format(**values)}


def phrases(key: str) -> set:
    """Exact replies (normalised) from the conversation wording."""
    return {normalise(p) for p in content().conversation[key]}


def get_state(tracker: Tracker) -> Dict[str, Any]:
    """The conversation's state (empty when the form has just started)."""
    state = tracker.get_slot(STATE_SLOT)
    return dict(state) if isinstance(state, dict) else {}


class Turn:
    """One message to time_zone_form: what the champion said, and what to say and save."""

    def __init__(self, tracker: Tracker, state: Dict[str, Any]) -> None:
        """Look up the champion and their zone; state is tz_state."""
        sessions = get_sessions()
        channel, external_id = split_sender(tracker.sender_id)
        self.champion = ChatRepository(sessions).get_or_create_champion(channel, external_id)
        self.zones = TimeZoneRepository(sessions)
        self.reminders = ReminderRepository(sessions)
        self.current = champion_zone(self.champion.time_zone)
        self.state = dict(state)
        self.now = now()
        self.messages: List[Dict[str, Any]] = []
        self.stop: Optional[str] = None

    # -- saying things --

    def say(self, text: str, buttons: Optional[List[Dict[str, str]]] = None) -> None:
        """Queue one message."""
        message: Dict[str, Any] = {"text": text}
        if buttons:
            message["buttons"] = buttons
        self.messages.append(message)

    def local_time(self, zone: str) -> str:
        """The time there now: "3:05pm"."""
        return say_time(self.now, zone)

    def common_buttons(self, keep: bool) -> List[Dict[str, str]]:
        """"Keep UK time" (when keep), then the common choices other than the zone in use."""
        found = content()
        chosen = [button("keep", label=found.label(self.current), zone=self.current)] if keep else []
        others = [(title, zone) for title, zone in found.common if zone != self.current]
        room = max(0, found.max_buttons - len(chosen))
        chosen += buttons_for([z for _, z in others[:room]], found, titles=dict((z, t) for t, z in others))
        return chosen

    def ask(self, text: str, buttons: List[Dict[str, str]], **values: Any) -> None:
        """Keep the form going: the question (with its buttons) is put by action_ask_tz_answer."""
        self.state.update(asking=True, ask={"text": text, "buttons": buttons}, **values)

    def ask_where(self, note: Optional[str] = None) -> None:
        """"Which country or city are you in?" with the common choices."""
        found = content()
        text = note or words("ask_where", label=found.label(self.current), time=self.local_time(self.current))
        self.ask(text, self.common_buttons(keep=True), maybe=None)

    def failed(self) -> None:
        """A reply that names no place we know: ask again, or stop after max_tries."""
        tries = int(self.state.get("tries") or 0) + 1
        self.state["tries"] = tries
        if tries >= content().max_tries:
            self.say(words("gave_up", label=content().label(self.current)))
            self.stop = STOP_GAVE_UP
            return
        self.ask_where(words("unknown"))

    # -- saving --

    def save(self, zone: str) -> None:
        """Save zone for the champion, then confirm it with the time there now."""
        found = content()
        label = found.label(zone)
        if zone == self.current:
            if not self.champion.time_zone:
                self.zones.set(self.champion.id, zone)  # the default, now chosen
            self.say(words("kept", label=label, time=self.local_time(zone)))
            self.stop = STOP_KEPT
            return
        self.zones.set(self.champion.id, zone)
        text = words("saved", label=label, time=self.local_time(zone))
        others = sorted({m.time_zone for m in self.reminders.upcoming(self.champion.id, self.now) if m.time_zone != zone})
        if len(others) == 1:
            text += " " + words("meetings_keep", old_label=found.label(others[0]))
        self.say(text)
        self.current = zone
        self.stop = STOP_SAVED

    # -- reading the message --

    def handle(self, text: str, intent: Optional[str], entities: Dict[str, Any]) -> None:
        """Deal with the message that started the form, or a reply to its question."""
        starting = not self.state.get("asking")
        plain = normalise(text)
        tapped = entities.get(ENTITY)
        if tapped:
            if tapped == ASK:
                self.ask_where()
            elif valid_zone(tapped):
                self.save(valid_zone(tapped))
            else:
                self.failed()
            return
        maybe = self.state.get("maybe")
        if maybe and (plain in phrases("yes_phrases") or intent == "affirm"):
            self.save(maybe)
            return
        if maybe and (plain == "no" or intent == "deny"):
            self.ask_where()
            return
        if not starting and plain in phrases("stop_phrases"):
            self.say(words("stopped", label=content().label(self.current)))
            self.stop = STOP_KEPT
            return
        if text.startswith("/"):  # the intent's button with nothing said
            self.ask_where()
            return
        reading = read_place(text, content())
        found = content()
        if reading.status == FOUND:
            self.save(reading.zones[0])
        elif reading.status == CHOOSE:
            keep = [button("keep", label=found.label(self.current), zone=self.current)] if self.current not in reading.zones else []
            self.ask(reading.question or words("which_of"), buttons_for(reading.zones, found) + keep, maybe=None)
        elif reading.status == MAYBE:
            zone = reading.zone
            place = reading.place.title() if reading.place else found.label(zone)
            keep = [button("keep", label=found.label(self.current), zone=self.current)] if zone != self.current else []
            self.ask(words("did_you_mean", place=place, label=found.label(zone)), buttons_for([zone], found) + keep, maybe=zone)
        elif reading.status == NONE and starting and not reading.wants_change:
            self.say(words("current", label=found.label(self.current), time=self.local_time(self.current)),
                     self.common_buttons(keep=False) + [button("somewhere_else")])
            self.stop = STOP_SHOWN
        elif reading.status == NONE and starting:
            self.ask_where()
        else:  # UNKNOWN, or a reply that names no place
            self.failed()

    def events(self) -> List[Dict[str, Any]]:
        """The slots to set: the state, an empty answer, and requested_slot None when the form stops."""
        events = [SlotSet(STATE_SLOT, dict(self.state, stop=self.stop) if self.stop else self.state), SlotSet(ANSWER_SLOT, None)]
        if self.stop:
            events.append(SlotSet(REQUESTED_SLOT, None))
        return events


def _latest(tracker: Tracker) -> Dict[str, Any]:
    """(text, intent, entities) of the latest message."""
    latest = tracker.latest_message or {}
    entities: Dict[str, Any] = {}
    for entity in latest.get("entities") or []:
        if entity.get("entity") and entity.get("value") is not None:
            entities.setdefault(entity["entity"], entity["value"])
    text = latest.get("text")
    if not isinstance(text, str):
        text = tracker.get_slot(ANSWER_SLOT) if isinstance(tracker.get_slot(ANSWER_SLOT), str) else ""
    return {"text": text.strip(), "intent": (latest.get("intent") or {}).get("name"), "entities": entities}


class ValidateTimeZoneForm(Action):
    """Take each message given to time_zone_form (the one that started it too): save a zone, or ask."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "validate_time_zone_form"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Handle the message; the form goes on (requested_slot stays) or stops (requested_slot None)."""
        message = _latest(tracker)
        state = get_state(tracker)
        if message["intent"] == CRISIS_INTENT:  # first, and even if the database is down
            dispatcher.utter_message(response=CRISIS_RESPONSE)
            return [SlotSet(STATE_SLOT, dict(state, stop=STOP_CRISIS)), SlotSet(ANSWER_SLOT, None), SlotSet(REQUESTED_SLOT, None)]
        try:
            turn = Turn(tracker, state)
            turn.handle(message["text"], message["intent"], message["entities"])
        except (SQLAlchemyError, LookupError, ValueError):
            log.exception("could not read or save the champion's time zone")
            dispatcher.utter_message(text=words("trouble"))
            return [SlotSet(STATE_SLOT, dict(state, stop=STOP_TROUBLE)), SlotSet(ANSWER_SLOT, None), SlotSet(REQUESTED_SLOT, None)]
        for said in turn.messages:
            dispatcher.utter_message(**said)
        return turn.events()


class ActionAskTzAnswer(Action):
    """Put the form's question (time_zone_form calls this whenever it needs tz_answer)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_ask_tz_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Send the question the validation left in the state (once)."""
        state = get_state(tracker)
        question = state.pop("ask", None)
        if question:
            dispatcher.utter_message(text=question.get("text"), buttons=question.get("buttons") or [])
        return [SlotSet(STATE_SLOT, state)]


class ActionTimeZoneEnd(Action):
    """After time_zone_form stops: forget the conversation's state."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_time_zone_end"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Empty the form's slots (everything said is saved already)."""
        return [SlotSet(STATE_SLOT, None), SlotSet(ANSWER_SLOT, None)]
