"""A champion's own data by chat: "what do you know about me?" and "delete my data".

`action_my_data` sums up what is held (bot/my_data.py) in one phone-sized message and
offers the whole file: a download link on the web chat (GET /api/my-data.json), the file
itself as a document on Telegram (bot/telegram_bot.py sends it when the reply carries
custom.attachment "my_data").

`action_delete_my_data` asks first, with buttons (Yes, delete everything / No, keep it).
The buttons send `delete_my_data` with the entity `my_data_choice` ("yes" or "no"); a typed
"yes" or "no" straight after the question counts too (stories/rules_my_data.yml; the slot
`my_data_asked` says the question was the last thing asked). On "yes", bot.erasure's
request_erasure stops everything due to go to them at once; the delivery process's erasure
pass removes them from every store a few seconds later, once this turn is over (deleting
here would not last: Rasa saves the conversation again when the action returns).
All wording is in knowledge/my_data.yml.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Text
from urllib.parse import urlencode

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.champions import champion_for, directory
from actions.db import get_sessions
from bot.erasure import request_erasure
from bot.my_data import MyDataRepository, Summary, load_content
from bot.my_data_download import PATH as DOWNLOAD_PATH
from bot.organisations import OTHER
from bot.plans import fill, shorten
from bot.sender_ids import split_sender

log = logging.getLogger(__name__)

ASKED_SLOT = "my_data_asked"
CHOICE_ENTITY = "my_data_choice"
YES, NO = "yes", "no"
AFFIRM, DENY = "affirm", "deny"
# The usual replies to a "yes" or "no" that wasn't an answer to the delete question (domain/basics.yml).
USUAL_REPLY = {AFFIRM: "utter_menu", DENY: "utter_deny"}
WEB, TELEGRAM = "web", "telegram"
ATTACHMENT = "my_data"


def content() -> Mapping[str, Any]:
    """knowledge/my_data.yml."""
    return load_content()


def button(key: str) -> Dict[str, str]:
    """A button from knowledge/my_data.yml."""
    spec = content()["buttons"][key]
    return {"title": str(spec["title"]), "payload": str(spec["payload"])}


def say_date(moment, wording: Mapping[str, Any]) -> str:
    """"3 March 2026" (the date in London; near enough for "since")."""
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo("Europe/London"))
    return fill(wording["date"], day=local.day, month=wording["months"][local.month - 1], year=local.year)


def names(values, wording: Mapping[str, Any]) -> str:
    """The first few names, shortened, then "and N more"."""
    shown = int(wording["names_shown"])
    limit = int(wording["name_chars"])
    listed = [shorten(str(v), limit) for v in values[:shown]]
    if len(values) > shown:
        listed.append(fill(wording["more"], n=len(values) - shown))
    return ", ".join(listed)


def summary_text(summary: Summary) -> str:
    """The phone-sized summary of what is held, one line per kind of thing."""
    wording = content()["summary"]
    channel_names = wording["channel_names"]
    lines = [
        wording["header"],
        fill(wording["channel"], channel=channel_names.get(summary.channel, channel_names["other"]),
             since=say_date(summary.since, wording)),
    ]
    if summary.organisation is None:
        lines.append(wording["organisation_none"])
    elif summary.organisation == OTHER:
        lines.append(wording["organisation_other"])
    else:
        found = directory()
        organisation = found.get(summary.organisation) if found is not None else None
        lines.append(fill(wording["organisation"], organisation=organisation.name if organisation else summary.organisation))
    lines.append(fill(wording["time_zone"], time_zone=summary.time_zone))
    if summary.groups:
        lines.append(fill(wording["groups"], groups=names([name for _, name in summary.groups], wording)))
    else:
        lines.append(wording["groups_none"])
    if summary.projects:
        lines.append(fill(wording["projects"], count=len(summary.projects), names=names(list(summary.projects), wording)))
    else:
        lines.append(wording["projects_none"])
    if summary.meetings:
        lines.append(fill(wording["meetings"], count=summary.meetings, upcoming=summary.upcoming_meetings))
        lines.append(fill(wording["reminders"], reminders=summary.reminders_to_come))
    else:
        lines.append(wording["meetings_none"])
    lines.append(fill(wording["reflections"], reflections=summary.reflections, pledges=summary.pledges,
                      open=summary.open_pledges))
    lines.append(fill(wording["messages"], messages=summary.messages))
    lines.append(wording["team_on"] if summary.team_messages_on else wording["team_off"])
    return "\n".join(lines)


def trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that the details can't be reached (nothing was read or changed)."""
    dispatcher.utter_message(text=content()["trouble"])


class ActionMyData(Action):
    """"What do you know about me?": a summary of everything held, and the whole of it as a file."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_my_data"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Sum up what is held; offer the download (web) or the document (Telegram) and the choices."""
        try:
            champion = champion_for(tracker)
            summary = MyDataRepository(get_sessions()).summary(champion.id)
        except (SQLAlchemyError, LookupError):
            log.exception("could not read what is held about a champion")
            trouble(dispatcher)
            return []
        wording = content()["summary"]
        if summary is None or summary.erasure_requested:
            dispatcher.utter_message(text=wording["erasing"])
            return []
        dispatcher.utter_message(text=summary_text(summary))
        buttons = [button("delete"), button("opt_out" if summary.team_messages_on else "opt_in")]
        channel, external_id = split_sender(tracker.sender_id)
        if channel == WEB:
            url = DOWNLOAD_PATH + "?" + urlencode({"sender_id": external_id})
            dispatcher.utter_message(
                text=wording["download_web"], buttons=buttons,
                json_message={"download": {"url": url, "label": wording["download_label"]}},
            )
        elif channel == TELEGRAM:
            dispatcher.utter_message(text=wording["download_telegram"], buttons=buttons,
                                     json_message={"attachment": ATTACHMENT})
        else:
            dispatcher.utter_message(text=wording["download_other"], buttons=buttons)
        return []


def choice(tracker: Tracker) -> Optional[str]:
    """"yes" or "no" from a tapped button (the my_data_choice entity), else None."""
    for entity in (tracker.latest_message or {}).get("entities") or []:
        if entity.get("entity") == CHOICE_ENTITY and str(entity.get("value", "")).strip().lower() in (YES, NO):
            return str(entity["value"]).strip().lower()
    return None


class ActionDeleteMyData(Action):
    """"Delete my data": ask with buttons, then delete everything (yes) or keep it (no)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_delete_my_data"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Ask, or act on the answer (a tapped button, or "yes"/"no" typed straight after the question)."""
        answer = choice(tracker)
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        if answer is None and intent in USUAL_REPLY:
            if not tracker.get_slot(ASKED_SLOT):  # a "yes" or "no" about something else
                dispatcher.utter_message(response=USUAL_REPLY[intent])
                return [SlotSet(ASKED_SLOT, False)]
            answer = YES if intent == AFFIRM else NO
        if answer == YES and not tracker.get_slot(ASKED_SLOT):
            answer = None  # a "yes" to a question never asked (a typed or forged payload): ask first
        wording = content()["delete"]
        if answer == NO:
            dispatcher.utter_message(text=wording["kept"])
            return [SlotSet(ASKED_SLOT, False)]
        if answer == YES:
            return self._delete(dispatcher, tracker, wording)
        dispatcher.utter_message(text=wording["ask"], buttons=[button("confirm"), button("keep"), button("show")])
        return [SlotSet(ASKED_SLOT, True)]

    @staticmethod
    def _delete(dispatcher: CollectingDispatcher, tracker: Tracker, wording: Mapping[str, Any]) -> List[Dict[Text, Any]]:
        """Stop everything now; the erasure pass deletes the rest once this turn is over."""
        try:
            champion = champion_for(tracker)
            request_erasure(get_sessions(), champion.id)
        except (SQLAlchemyError, LookupError):
            log.exception("could not record a request to delete a champion's data")
            trouble(dispatcher)
            return [SlotSet(ASKED_SLOT, False)]
        channel, _ = split_sender(tracker.sender_id)
        extra = wording.get(f"done_{channel}", wording.get("done_other", "")) or ""
        dispatcher.utter_message(text=(wording["done"] + (" " + extra if extra else "")).strip())
        return [SlotSet(ASKED_SLOT, False)]
