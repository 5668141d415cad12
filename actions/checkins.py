"""Pledges that are followed up: answering a check-in, choosing the next one, "what were my pledges?", "I've done my pledge".

Check-in messages are sent by the scheduler (bot/checkins.py) with four buttons
that carry the check-in's id: /check_in_answer{"ci_id": "12", "ci_answer": "done"}.
`action_check_in_answer` records the answer (a typed "I need some help with my
pledge" works too: it answers the latest check-in, or the champion's open
pledge); "in progress" adds the next check-in, which `action_check_in_when`
moves ("In a month"); "need help" gives the engagement team's contact for the
champion's organisation with the same action as "who is my engagement team?"
(actions/champions.py). Every answer is saved the moment it is given. All
wording is in knowledge/checkins.yml; dates are said in the champion's zone.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.champions import ActionEngagementTeam, champion_for
from actions.clock import now
from actions.db import get_sessions
from bot.checkins import (
    ALREADY_ANSWERED,
    CANCELLED,
    CLOSED,
    NOT_FOUND,
    AnswerResult,
    CheckInRepository,
    PledgeView,
    champion_zone,
    check_in_due,
    check_in_on,
    load_content,
    read_answer,
    read_when_choice,
    say_check_in_day,
)
from bot.plans import fill, shorten
from bot.reflection_models import (
    CHECK_IN_ANSWERS,
    CHECK_IN_PENDING,
    PLEDGE_DONE,
    PLEDGE_IN_PROGRESS,
    PLEDGE_LET_GO,
    PLEDGE_NEED_HELP,
)
from bot.reminder_times import AMBIGUOUS, OK, PAST, parse_when

log = logging.getLogger(__name__)

CHECK_IN_ENTITY = "ci_id"
PLEDGE_ENTITY = "ci_pledge"
ANSWER_ENTITY = "ci_answer"
WHEN_ENTITY = "ci_when"


# --- the clock, the database and the wording -----------------------------------------------------

def repository() -> CheckInRepository:
    """Pledges and check-ins on the action server's app database (actions.db)."""
    return CheckInRepository(get_sessions())


def content() -> Dict[str, Any]:
    """knowledge/checkins.yml."""
    return load_content()


def words(key: str, /, **values: Any) -> str:
    """The reply called key, placeholders filled."""
    return fill(str(content()["replies"][key]).strip(), **values)


def title(key: str, /, **values: Any) -> str:
    """A button title, placeholders filled."""
    return fill(str(content()["buttons"][key]), **values)


def payload(key: str, /, **values: Any) -> str:
    """A button payload, placeholders filled."""
    return fill(str(content()["payloads"][key]), **values)


def pledge_text(pledge: PledgeView) -> str:
    """The pledge as quoted in a reply (shortened)."""
    return shorten(pledge.text, int(content()["check_in"]["pledge_chars"]))


def pledge_label(pledge: PledgeView) -> str:
    """The pledge shortened for a button."""
    return shorten(pledge.text, int(content()["buttons"]["label_chars"]))


def status_words(status: str) -> str:
    """A pledge's status in words ("in progress")."""
    return str(content()["status_words"].get(status, status))


def status_is(status: str) -> str:
    """A pledge's status after "is" ("marked as done")."""
    return str(content()["status_is"].get(status, status))


def my_pledges_button() -> Dict[str, str]:
    """The "My pledges" button."""
    return {"title": title("my_pledges"), "payload": payload("list")}


def answer_buttons(*, check_in_id: Optional[int] = None, pledge_id: Optional[int] = None) -> List[Dict[str, str]]:
    """Done / In progress / Need help / Let it go, for a check-in or (without one) a pledge."""
    buttons = []
    for spec in content()["check_in"]["buttons"]:
        if check_in_id is not None:
            value = payload("answer", check_in_id=check_in_id, answer=spec["answer"])
        else:
            value = payload("answer_pledge", pledge_id=pledge_id, answer=spec["answer"])
        buttons.append({"title": str(spec["title"]), "payload": value})
    return buttons


def next_buttons(check_in_id: int) -> List[Dict[str, str]]:
    """"In 2 weeks" / "In a month" for the check-in still to go."""
    return [
        {"title": title(choice), "payload": payload("next", check_in_id=check_in_id, choice=choice)}
        for choice in content()["timing"]["choices"]
    ]


def entity(tracker: Tracker, name: str) -> Optional[str]:
    """The first value of entity name in the latest message, as text (None when absent or empty)."""
    for item in (tracker.latest_message or {}).get("entities") or []:
        if item.get("entity") == name and item.get("value") not in (None, ""):
            return str(item["value"]).strip()[:64] or None
    return None


def typed_text(tracker: Tracker) -> str:
    """What the champion typed ("" for a button payload)."""
    text = str((tracker.latest_message or {}).get("text") or "").strip()
    return "" if text.startswith("/") else text


def trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that pledges can't be reached (the database is down)."""
    log.exception("the app database could not be used")
    dispatcher.utter_message(text=words("trouble"))


def no_pledges(dispatcher: CollectingDispatcher, pledges: Sequence[PledgeView]) -> None:
    """Nothing open to talk about: no pledges at all, or all finished."""
    if pledges:
        dispatcher.utter_message(text=words("no_open_pledges"), buttons=[my_pledges_button()])
        return
    idea = str(content()["pledge_idea"]["text"])
    dispatcher.utter_message(
        text=words("no_pledges", idea=idea), buttons=[{"title": title("make_pledge"), "payload": payload("make")}]
    )


def say_day(moment: datetime, time_zone: str, at: datetime) -> str:
    """"Monday 7 December" in the champion's zone."""
    return say_check_in_day(moment, at, time_zone)


# --- answering a check-in ------------------------------------------------------------------------


async def reply_to_answer(
    dispatcher: CollectingDispatcher,
    tracker: Tracker,
    domain: DomainDict,
    result: AnswerResult,
    time_zone: str,
    at: datetime,
) -> List[Dict[str, Any]]:
    """Say what recording an answer did; "need help" also gives the engagement team's contact."""
    pledge = result.pledge
    if result.outcome == NOT_FOUND or pledge is None:
        dispatcher.utter_message(text=words("not_found"), buttons=[my_pledges_button()])
        return []
    quoted = pledge_text(pledge)
    if result.outcome in (ALREADY_ANSWERED, CANCELLED, CLOSED):
        key = {ALREADY_ANSWERED: "already_answered", CANCELLED: "cancelled", CLOSED: "closed"}[result.outcome]
        dispatcher.utter_message(text=words(key, pledge=quoted, status=status_is(pledge.status)), buttons=[my_pledges_button()])
        return []
    if pledge.status == PLEDGE_DONE:
        dispatcher.utter_message(text=words("done", pledge=quoted), buttons=[my_pledges_button()])
    elif pledge.status == PLEDGE_LET_GO:
        dispatcher.utter_message(text=words("let_go", pledge=quoted), buttons=[my_pledges_button()])
    elif pledge.status == PLEDGE_IN_PROGRESS:
        following = result.next_check_in or pledge.next_check_in
        if following is None:
            dispatcher.utter_message(text=words("in_progress_no_date", pledge=quoted))
        else:
            day = say_day(following.due_at, time_zone, at)
            dispatcher.utter_message(text=words("in_progress", pledge=quoted, day=day), buttons=next_buttons(following.id))
    elif pledge.status == PLEDGE_NEED_HELP:
        dispatcher.utter_message(text=words("need_help", pledge=quoted))
        # The same answer as "who is my engagement team?": the contact configured for their organisation.
        return await ActionEngagementTeam().run(dispatcher, tracker, domain)
    return []


class ActionCheckInAnswer(Action):
    """Record how a pledge is going: done, in progress, need help or let it go (tapped at a check-in, or typed)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_check_in_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Find the check-in (or pledge) the answer is about, record it, and reply."""
        answer = entity(tracker, ANSWER_ENTITY)
        if answer not in CHECK_IN_ANSWERS:
            answer = read_answer(typed_text(tracker), content())
        try:
            champion = champion_for(tracker)
            repo = repository()
            at = now()
            time_zone = champion_zone(champion.time_zone, content())
            check_in_id, pledge_id = entity(tracker, CHECK_IN_ENTITY), entity(tracker, PLEDGE_ENTITY)
            if check_in_id is None and pledge_id is None:
                target = self._find_target(dispatcher, repo, champion.id, answer)
                if target is None:
                    return []
                check_in_id, pledge_id = target
            if answer is None:
                return self._ask_answer(dispatcher, repo, champion.id, check_in_id, pledge_id)
            if check_in_id is not None:
                result = repo.answer(champion.id, check_in_id, answer, at)
            else:
                result = repo.answer_pledge(champion.id, pledge_id, answer, at)
        except SQLAlchemyError:
            trouble(dispatcher)
            return []
        return await reply_to_answer(dispatcher, tracker, domain, result, time_zone, at)

    @staticmethod
    def _find_target(dispatcher: CollectingDispatcher, repo: CheckInRepository, champion_id: int, answer: Optional[str]):
        """(check-in id, pledge id) a typed answer is about: the latest check-in sent, or their one open pledge.

        With several open pledges, asks which (and returns None).
        """
        outstanding = repo.latest_outstanding(champion_id)
        if outstanding is not None:
            return outstanding.id, None
        pledges = repo.pledges(champion_id)
        open_ones = [p for p in pledges if not p.closed]
        if not open_ones:
            no_pledges(dispatcher, pledges)
            return None
        if len(open_ones) == 1:
            return None, open_ones[0].id
        limit = int(content()["buttons"]["max_pledge_buttons"])
        buttons = []
        for pledge in open_ones[:limit]:
            value = (payload("answer_pledge", pledge_id=pledge.id, answer=answer) if answer
                     else payload("pick_pledge", pledge_id=pledge.id))
            buttons.append({"title": title("pick", label=pledge_label(pledge)), "payload": value})
        dispatcher.utter_message(text=words("which_pledge_answer"), buttons=buttons)
        return None

    @staticmethod
    def _ask_answer(dispatcher: CollectingDispatcher, repo: CheckInRepository, champion_id: int,
                    check_in_id: Optional[str], pledge_id: Optional[str]) -> List[Dict[Text, Any]]:
        """"How is ... going?" with the four answers, when the message didn't say."""
        if check_in_id is not None:
            check_in = repo.check_in(champion_id, check_in_id)
            pledge = repo.pledge(champion_id, check_in.pledge_id) if check_in is not None else None
        else:
            check_in, pledge = None, repo.pledge(champion_id, pledge_id)
        if pledge is None:
            dispatcher.utter_message(text=words("not_found"), buttons=[my_pledges_button()])
            return []
        if pledge.closed:
            dispatcher.utter_message(text=words("closed", pledge=pledge_text(pledge), status=status_is(pledge.status)),
                                     buttons=[my_pledges_button()])
            return []
        buttons = answer_buttons(check_in_id=check_in.id) if check_in is not None else answer_buttons(pledge_id=pledge.id)
        dispatcher.utter_message(text=words("ask_answer", pledge=pledge_text(pledge)), buttons=buttons)
        return []


# --- choosing the next check-in ------------------------------------------------------------------


def next_check_in_time(text: str, at: datetime, time_zone: str) -> Any:
    """When a typed or tapped choice puts the next check-in: a UTC datetime, a list of days to choose from, or a reply key."""
    choice = text if text in content()["timing"]["choices"] else read_when_choice(text, content())
    if choice is not None:
        return check_in_due(choice, at, time_zone, content())
    try:
        return check_in_on(date.fromisoformat(text), time_zone, content())
    except ValueError:
        pass
    parsed = parse_when(text, at, time_zone, vague_ok=True)
    if parsed.status == OK:
        return parsed.when_utc
    if parsed.status == PAST:
        return "next_past"
    if parsed.status == AMBIGUOUS and parsed.days:
        if len(parsed.days) == 1:
            return check_in_on(parsed.days[0], time_zone, content())
        return list(parsed.days)
    return "next_not_understood"


class ActionCheckInWhen(Action):
    """Move the next check-in: "In 2 weeks", "In a month", or a date ("check in with me on 5 January")."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_check_in_when"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """Re-time the check-in the button names, or the one added most recently."""
        said = entity(tracker, WHEN_ENTITY) or typed_text(tracker)
        try:
            champion = champion_for(tracker)
            repo = repository()
            at = now()
            time_zone = champion_zone(champion.time_zone, content())
            named = entity(tracker, CHECK_IN_ENTITY)
            check_in = repo.check_in(champion.id, named) if named is not None else repo.latest_pending(champion.id)
            if check_in is None or check_in.status != CHECK_IN_PENDING:
                key = "not_found" if named is not None else "next_none"
                dispatcher.utter_message(text=words(key), buttons=[my_pledges_button()])
                return []
            pledge = repo.pledge(champion.id, check_in.pledge_id)
            if pledge is None or pledge.closed:
                dispatcher.utter_message(text=words("not_found"), buttons=[my_pledges_button()])
                return []
            when = next_check_in_time(said, at, time_zone) if said else "next_not_understood"
            if isinstance(when, list):
                buttons = [{"title": say_day(check_in_on(day, time_zone, content()), time_zone, at),
                            "payload": payload("next", check_in_id=check_in.id, choice=day.isoformat())} for day in when]
                dispatcher.utter_message(text=words("next_which_day"), buttons=buttons)
                return []
            if isinstance(when, datetime) and when <= at:
                when = "next_past"
            if isinstance(when, datetime) and when > at + timedelta(days=int(content()["timing"]["max_days_ahead"])):
                when = "next_too_far"
            if isinstance(when, str):
                dispatcher.utter_message(text=words(when), buttons=next_buttons(check_in.id))
                return []
            moved = repo.reschedule(champion.id, check_in.id, when, at)
        except SQLAlchemyError:
            trouble(dispatcher)
            return []
        if moved is None:
            dispatcher.utter_message(text=words("not_found"), buttons=[my_pledges_button()])
            return []
        dispatcher.utter_message(text=words("next_set", pledge=pledge_text(pledge), day=say_day(moved.due_at, time_zone, at)))
        return []


# --- listing and marking done --------------------------------------------------------------------


def _list_order(pledge: PledgeView) -> tuple:
    """Open pledges first (soonest check-in first), then done (latest first), then let go."""
    far = datetime.max.replace(tzinfo=timezone.utc)
    if not pledge.closed:
        return (0, pledge.next_check_in.due_at if pledge.next_check_in else far, pledge.id)
    if pledge.status == PLEDGE_DONE:
        return (1, far - (pledge.done_at or pledge.created_at), pledge.id)
    return (2, far, pledge.id)


class ActionListPledges(Action):
    """"What were my pledges?": each pledge with its status in words and its next check-in, and buttons to mark one done."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_list_pledges"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """One short line per pledge, open ones first."""
        try:
            champion = champion_for(tracker)
            pledges = repository().pledges(champion.id)
        except SQLAlchemyError:
            trouble(dispatcher)
            return []
        if not pledges:
            no_pledges(dispatcher, pledges)
            return []
        at = now()
        time_zone = champion_zone(champion.time_zone, content())
        replies = content()["replies"]
        limit = int(replies["list_pledge_chars"])
        ordered = sorted(pledges, key=_list_order)
        shown = ordered[: int(replies["list_max"])]
        lines = [words("listing")]
        for pledge in shown:
            quoted = shorten(pledge.text, limit)
            if pledge.status == PLEDGE_DONE and pledge.done_at is not None:
                lines.append(words("list_item_done", pledge=quoted, day=say_day(pledge.done_at, time_zone, at)))
            elif not pledge.closed and pledge.next_check_in is not None:
                lines.append(words("list_item_next", pledge=quoted, status=status_words(pledge.status),
                                   day=say_day(pledge.next_check_in.due_at, time_zone, at)))
            else:
                lines.append(words("list_item", pledge=quoted, status=status_words(pledge.status)))
        if len(ordered) > len(shown):
            lines.append(words("list_more", count=len(ordered) - len(shown)))
        open_ones = [p for p in ordered if not p.closed][: int(content()["buttons"]["max_pledge_buttons"])]
        buttons = [{"title": title("mark_done", label=pledge_label(p)), "payload": payload("done", pledge_id=p.id)}
                   for p in open_ones]
        dispatcher.utter_message(text="\n".join(lines), buttons=buttons)
        return []


class ActionPledgeDone(Action):
    """"I've done my pledge": which one (buttons when several), confirm, and mark it done."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_pledge_done"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[Text, Any]]:
        """A button naming the pledge marks it; a typed message asks which one, or to confirm."""
        try:
            champion = champion_for(tracker)
            repo = repository()
            at = now()
            named = entity(tracker, PLEDGE_ENTITY)
            if named is not None:
                result = repo.mark_done(champion.id, named, at)
                time_zone = champion_zone(champion.time_zone, content())
                return await reply_to_answer(dispatcher, tracker, domain, result, time_zone, at)
            pledges = repo.pledges(champion.id)
        except SQLAlchemyError:
            trouble(dispatcher)
            return []
        open_ones = [p for p in pledges if not p.closed]
        if not open_ones:
            no_pledges(dispatcher, pledges)
        elif len(open_ones) == 1:
            pledge = open_ones[0]
            dispatcher.utter_message(
                text=words("done_confirm", pledge=pledge_text(pledge)),
                buttons=[{"title": title("yes_done"), "payload": payload("done", pledge_id=pledge.id)},
                         {"title": title("not_yet"), "payload": payload("not_yet")}],
            )
        else:
            limit = int(content()["buttons"]["max_pledge_buttons"])
            buttons = [{"title": title("pick", label=pledge_label(p)), "payload": payload("done", pledge_id=p.id)}
                       for p in open_ones[:limit]]
            dispatcher.utter_message(text=words("done_which"), buttons=buttons + [my_pledges_button()])
        return []
