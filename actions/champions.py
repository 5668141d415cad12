"""The champion's own details: which organisation they volunteer with, their engagement team, team messages on or off.

The organisations come from knowledge/organisations.yml (ORGANISATIONS_FILE), read
again whenever it changes; every answer is saved in the app database at once
(bot/organisations.py, bot/repository.py). All wording is in domain/champions.yml.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.basics import response_name
from actions.db import get_sessions
from actions.settings import get_settings
from bot.models import Champion
from bot.organisations import (
    ENTITY,
    OTHER,
    Directory,
    DirectoryCache,
    Organisation,
    OrganisationError,
    OrganisationRecorder,
)
from bot.repository import ChatRepository
from bot.sender_ids import split_sender

log = logging.getLogger(__name__)

ASKED_SLOT = "organisation_asked"
# Replies that put the organisation question (with its buttons) to the champion.
QUESTIONS = ("utter_ask_organisation", "utter_ask_organisation_change", "utter_organisation_not_found")
SKIP_INTENT = "skip_organisation"
TROUBLE = "utter_champion_trouble"


# --- the organisations file, read on first use (the database: actions.db) --------------------------------

_directories = DirectoryCache()


def directory() -> Optional[Directory]:
    """The organisations file (None, logged, when it is missing or malformed)."""
    path = get_settings().organisations_file
    try:
        return _directories.get(path)
    except (OSError, OrganisationError):
        log.exception("the organisations file %s can't be used", path)
        return None


def champion_for(tracker: Tracker) -> Champion:
    """The champion behind the conversation, created on first contact."""
    channel, external_id = split_sender(tracker.sender_id)
    return ChatRepository(get_sessions()).get_or_create_champion(channel, external_id)


# --- reading the conversation --------------------------------------------------------------------


def organisation_values(tracker: Tracker) -> List[str]:
    """The `organisation` entity values in the latest message, in order."""
    entities = (tracker.latest_message or {}).get("entities") or []
    return [str(e["value"]) for e in entities if e.get("entity") == ENTITY and e.get("value") not in (None, "")]


def latest_intent(tracker: Tracker) -> Optional[str]:
    """The intent of the latest message."""
    return ((tracker.latest_message or {}).get("intent") or {}).get("name")


def just_asked(tracker: Tracker) -> bool:
    """True when the assistant's last message before this one asked which organisation they volunteer with."""
    seen_user = False
    for event in reversed(tracker.events or []):
        kind = event.get("event")
        if kind == "user":
            if seen_user:
                return False
            seen_user = True
        elif kind == "bot" and seen_user:
            return response_name(event) in QUESTIONS
    return False


def ask(dispatcher: CollectingDispatcher, found: Directory, response: str = "utter_ask_organisation", **values: Any) -> None:
    """Put the organisation question, with a button per organisation, "Not listed" and "Not now"."""
    dispatcher.utter_message(response=response, buttons=found.buttons(), **values)


def trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that nothing could be saved (the database or the organisations file is unavailable)."""
    dispatcher.utter_message(response=TROUBLE)


# --- actions -------------------------------------------------------------------------------------


class ActionAskOrganisation(Action):
    """After the greeting: ask once which organisation the champion volunteers with (silent otherwise)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_ask_organisation"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Ask with buttons unless asked before, already answered, or there are no organisations to offer."""
        if tracker.get_slot(ASKED_SLOT):
            return []
        try:
            champion = champion_for(tracker)
        except SQLAlchemyError:
            log.exception("could not look up the champion; not asking for the organisation")
            return []  # the greeting stands on its own
        if champion.organisation is not None:
            return [SlotSet(ASKED_SLOT, True)]
        found = directory()
        if found is None or not found.organisations:
            return []
        ask(dispatcher, found)
        return [SlotSet(ASKED_SLOT, True)]


class ActionChooseOrganisation(Action):
    """Save the organisation the champion tapped or typed, or ask which one (to change it)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_choose_organisation"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Record a known organisation or "not listed"; otherwise ask, with buttons."""
        done = [SlotSet(ASKED_SLOT, True)]
        found = directory()
        if found is None:
            trouble(dispatcher)
            return done
        values = organisation_values(tracker)
        other = any(v.strip().casefold() == OTHER for v in values)
        chosen = next((o for o in (found.find(v) for v in values) if o is not None), None)
        text = (tracker.latest_message or {}).get("text") or ""
        if chosen is None and not other and not text.startswith("/"):
            chosen = found.match(text)
        try:
            champion = champion_for(tracker)
            recorder = OrganisationRecorder(get_sessions())
            if chosen is not None or other:
                recorder.record(champion.id, chosen, found)
        except (SQLAlchemyError, LookupError):
            log.exception("could not save the champion's organisation")
            trouble(dispatcher)
            return done
        if chosen is not None:
            dispatcher.utter_message(response="utter_organisation_saved", organisation=chosen.name)
        elif other:
            dispatcher.utter_message(response="utter_organisation_other")
        elif values:  # they named one that isn't on the list (never echoed back)
            ask(dispatcher, found, "utter_organisation_not_found")
        else:
            current = found.get(champion.organisation)
            if current is not None:
                ask(dispatcher, found, "utter_ask_organisation_change", organisation=current.name)
            else:
                ask(dispatcher, found)
        return done


class ActionSkipOrganisation(Action):
    """"Not now" to the organisation question (a "no" or "skip" straight after it counts too)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_skip_organisation"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Say how to tell us later; a plain "no" that wasn't about the question gets the usual reply."""
        if latest_intent(tracker) == SKIP_INTENT or just_asked(tracker):
            dispatcher.utter_message(response="utter_organisation_skipped")
        else:
            dispatcher.utter_message(response="utter_deny")
        return [SlotSet(ASKED_SLOT, True)]


class ActionEngagementTeam(Action):
    """Who the champion's engagement team is, and their local resources, from the organisations file."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_engagement_team"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Give the contact and resources configured for their organisation, or say plainly there are none yet."""
        found = directory()
        try:
            champion = champion_for(tracker)
        except SQLAlchemyError:
            log.exception("could not look up the champion's organisation")
            trouble(dispatcher)
            return []
        if champion.organisation == OTHER:
            dispatcher.utter_message(response="utter_engagement_other")
            return []
        if found is None:
            trouble(dispatcher)
            return []
        organisation = found.get(champion.organisation)
        if organisation is None:  # not chosen yet, or no longer in the file
            ask(dispatcher, found, "utter_engagement_need_organisation")
            return [SlotSet(ASKED_SLOT, True)]
        self._say(dispatcher, organisation)
        return []

    @staticmethod
    def _say(dispatcher: CollectingDispatcher, organisation: Organisation) -> None:
        """The contact line and the resources, whichever the team has filled in."""
        name = organisation.name
        if not organisation.engagement_contact and not organisation.local_resources:
            dispatcher.utter_message(response="utter_engagement_no_details", organisation=name)
            return
        if organisation.engagement_contact:
            dispatcher.utter_message(
                response="utter_engagement_contact", organisation=name, contact=organisation.engagement_contact
            )
        else:
            dispatcher.utter_message(response="utter_engagement_no_contact", organisation=name)
        if organisation.local_resources:
            lines = "\n".join(f"{r.title}: {r.url}" for r in organisation.local_resources)
            dispatcher.utter_message(response="utter_local_resources", organisation=name, resources=lines)


def set_opted_out(dispatcher: CollectingDispatcher, tracker: Tracker, opted_out: bool, response: str) -> None:
    """Save the champion's choice about team messages at once, then say what it means."""
    try:
        champion = champion_for(tracker)
        ChatRepository(get_sessions()).set_opted_out(champion, opted_out)
    except SQLAlchemyError:
        log.exception("could not save the champion's choice about team messages")
        trouble(dispatcher)
        return
    dispatcher.utter_message(response=response)


class ActionOptOutMessages(Action):
    """"Stop messages from the team": no more broadcasts; their own reminders still come."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_opt_out_messages"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Turn team messages off and say what that means and how to turn them on again."""
        set_opted_out(dispatcher, tracker, True, "utter_opted_out")
        return []


class ActionOptInMessages(Action):
    """"Start team messages": the engagement team's messages come again."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_opt_in_messages"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Turn team messages back on and say how to stop them again."""
        set_opted_out(dispatcher, tracker, False, "utter_opted_in")
        return []
