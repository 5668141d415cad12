"""What the guided conversations (walk-through, reminders, reflections) share.

Each form reads the champion's latest message the same way (`read_message`), keeps its place
in a slot (`get_state`), and collects what it will say in an `Outcome` before sending it.
Each feature keeps only its own wording and stages.
"""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, TypeVar

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.champions import ActionOptInMessages, ActionOptOutMessages

log = logging.getLogger(__name__)

# Settings a champion can change mid-form ("stop messages from the team"): the setting's own action
# answers, then the form asks its question again. Only short messages NLU is sure of (or a button).
SETTING_INTENTS = {"opt_out_messages": ActionOptOutMessages, "opt_in_messages": ActionOptInMessages}
SETTING_CONFIDENCE = 0.8
SETTING_MAX_WORDS = 12

_PUNCTUATION = str.maketrans({ch: " " for ch in string.punctuation + "‘’“”…–—"})
_APOSTROPHES = str.maketrans({"'": None, "’": None, "‘": None})


def normalise(text: Any) -> str:
    """Lower case, no apostrophes or punctuation, single spaces: "I'll stop!" → "ill stop"."""
    text = str(text or "").casefold().translate(_APOSTROPHES).translate(_PUNCTUATION)
    return " ".join(text.split())


def readable(text: str, minimum: int = 1) -> bool:
    """True when text holds at least `minimum` letters or digits (emoji and punctuation alone are not)."""
    return sum(1 for ch in text if ch.isalnum()) >= minimum


@dataclass
class Message:
    """What the champion just sent, as NLU understood it."""

    text: str
    intent: Optional[str] = None
    confidence: float = 0.0
    entities: Dict[str, Any] = field(default_factory=dict)
    # (intent, confidence) pairs, most likely first, as NLU ranked them.
    ranking: List[Tuple[str, float]] = field(default_factory=list)

    @property
    def is_payload(self) -> bool:
        """True for a button payload such as /skip_question (NLU is bypassed)."""
        return self.text.startswith("/") and self.intent is not None and self.confidence >= 1.0

    @property
    def words(self) -> int:
        """Number of words."""
        return len(self.text.split())

    @property
    def plain(self) -> str:
        """The normalised text."""
        return normalise(self.text)


M = TypeVar("M", bound=Message)


def read_message(tracker: Tracker, text: Optional[str] = None, kind: Type[M] = Message) -> M:  # type: ignore[assignment]
    """The latest message from the tracker (text as given if not None), as a `kind`."""
    latest = tracker.latest_message or {}
    intent = latest.get("intent") or {}
    entities: Dict[str, Any] = {}
    for entity in latest.get("entities") or []:
        if entity.get("entity") and entity.get("value") is not None:
            entities.setdefault(entity["entity"], entity["value"])
    raw = text if isinstance(text, str) else latest.get("text")
    ranking = [
        (str(item.get("name")), float(item.get("confidence") or 0.0))
        for item in latest.get("intent_ranking") or []
        if isinstance(item, dict) and item.get("name")
    ]
    return kind(
        text=(raw or "").strip(),
        intent=intent.get("name"),
        confidence=float(intent.get("confidence") or 0.0),
        entities=entities,
        ranking=ranking,
    )


def setting_action(message: Message) -> Optional[Action]:
    """The action that changes the setting this message asks for mid-form, or None if it asks for none."""
    kind = SETTING_INTENTS.get(message.intent or "")
    if kind is None:
        return None
    if not message.is_payload and (message.confidence < SETTING_CONFIDENCE or message.words > SETTING_MAX_WORDS):
        return None
    return kind()


def get_state(tracker: Tracker, slot: str) -> Dict[str, Any]:
    """A form's state kept in slot (a fresh one if there is none)."""
    state = tracker.get_slot(slot)
    return dict(state) if isinstance(state, dict) else {}


def sender_of(tracker: Tracker) -> str:
    """The Rasa sender id of the conversation."""
    return tracker.sender_id or "unknown"


def join(note: Optional[str], text: str) -> str:
    """A note, then the question, as one message."""
    return f"{note}\n\n{text}" if note else text


def say_trouble(dispatcher: CollectingDispatcher, text: str) -> None:
    """Log the database failure being handled and say text (kindly, that saved things can't be reached)."""
    log.exception("the app database could not be used")
    dispatcher.utter_message(text=text)


@dataclass
class Outcome:
    """What handling one message led to: messages to send, other actions to run, whether the form stops."""

    messages: List[Dict[str, Any]] = field(default_factory=list)
    stop: Optional[str] = None
    # Other actions that answer in our place (the glossary, "tell me more"), run after the messages.
    delegates: List[Action] = field(default_factory=list)

    def say(self, text: Optional[str] = None, buttons: Sequence[Dict[str, str]] = (), **kwargs: Any) -> None:
        """Queue one message (text and buttons, or a domain response via response=...)."""
        message = dict(kwargs)
        if text is not None:
            message["text"] = text
        if buttons:
            message["buttons"] = list(buttons)
        self.messages.append(message)

    def send(self, dispatcher: CollectingDispatcher) -> None:
        """Send the queued messages."""
        for message in self.messages:
            dispatcher.utter_message(**message)

    async def send_all(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Send the queued messages, then run the delegates; returns the slot events they asked for."""
        self.send(dispatcher)
        events: List[Dict[str, Any]] = []
        for action in self.delegates:
            for event in await action.run(dispatcher, tracker, domain) or []:
                if isinstance(event, dict) and event.get("event") == "slot":
                    events.append(event)
        return events
