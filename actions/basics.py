"""Conversation basics: "tell me more" continues the assistant's last answer."""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

NO_MORE_RESPONSE = "utter_no_more"
# Replies that are not answers: "tell me more" looks past them to the answer before.
NOT_ANSWERS = frozenset({"utter_menu", "utter_no_more", "utter_default"})
# utter_levels_more continues utter_levels; utter_levels_more_2 continues utter_levels_more.
_CONTINUATION = re.compile(r"^(?P<base>utter_.+)_more(?:_(?P<part>\d+))?$")


def response_name(event: Dict[Text, Any]) -> Optional[Text]:
    """The utter_ response an event shows the bot sent, or None.

    A response sent by an utter_ action is logged as an `action` event; one
    sent by a custom action (as this one sends utter_X_more) only as a `bot`
    event whose metadata names it (`utter_action`).
    """
    kind = event.get("event")
    if kind == "bot":
        name = (event.get("metadata") or {}).get("utter_action")
    elif kind == "action":
        name = event.get("name")
    else:
        return None
    return name if isinstance(name, str) and name.startswith("utter_") else None


def last_answer(events: Iterable[Dict[Text, Any]]) -> Optional[Text]:
    """The most recent utter_ response the bot sent that is an answer (not a menu or fallback)."""
    for event in reversed(list(events)):
        name = response_name(event)
        if name and name not in NOT_ANSWERS:
            return name
    return None


def next_part(name: Text) -> Text:
    """The response that would continue `name`: X -> X_more -> X_more_2 -> X_more_3."""
    match = _CONTINUATION.match(name)
    if match:
        part = int(match.group("part") or 1)
        return f"{match.group('base')}_more_{part + 1}"
    return f"{name}_more"


class ActionTellMeMore(Action):
    """Sends the continuation of the last answer, or says there is no more."""

    def name(self) -> Text:
        """The action's name in the domain."""
        return "action_tell_me_more"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[Text, Any],
    ) -> List[Dict[Text, Any]]:
        """Utters utter_X_more (or the next part) if the domain has it, else utter_no_more."""
        responses = (domain or {}).get("responses") or {}
        answer = last_answer(tracker.events)
        wanted = next_part(answer) if answer else None
        dispatcher.utter_message(response=wanted if wanted in responses else NO_MORE_RESPONSE)
        return []
