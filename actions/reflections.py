"""Reflecting after a session or meeting, and making pledges, by chat: `reflection_form`.

"I want to reflect on today" (intent `reflect`), the "Reflect now" button of the
after-meeting prompt (`/reflect{"rf_meeting": "12"}`) and "can I make a pledge"
(intent `make_pledge`) start the form through `action_start_reflection`.
`validate_reflection_form` takes every later message: which session it was (the
champion's recent meetings, "a training session", or a name typed), one thing
they'll take away, up to three pledges each with its first check-in ("In 2
weeks", "In a month", a day they pick), how it went (1 to 5) and what would have
made it better, and whether the engagement team may see their answers. Making a
pledge asks only which session, the pledges and the sharing question.

Each answer is saved in the app database the moment it is given
(bot/reflections.py): a pledge is stored at once with a check-in in two weeks,
moved when the champion picks another day. "Stop" (or "later") ends the form and
keeps everything; "reflect" again offers to carry on. A crisis message gets the
crisis reply first; a knowledge question is answered and the question asked
again. `action_ask_rf_answer` asks the current question; `action_reflection_end`
tidies up. The conversation's position is in the `rf_state` slot. All wording is
in knowledge/reflections.yml.
"""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Text, Tuple

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.clock import now
from actions.db import get_sessions
from actions.forms import (
    Message, Outcome, get_state, join, normalise, read_message, readable, say_trouble, sender_of, setting_action,
)
from bot.plans import PlanRepository, fill, shorten
from bot.reflection_models import SHARING_ANONYMOUS, SHARING_NAMED, SHARING_PRIVATE
from bot.reflections import (
    DAY_CHOOSE,
    DAY_OK,
    DAY_PAST,
    DAY_TOO_FAR,
    RecentMeeting,
    ReflectionRepository,
    ReflectionView,
    check_in_at,
    check_in_day,
    load_content,
    local_today,
    read_check_in_day,
)
from bot.reminder_times import say_day, zone

log = logging.getLogger(__name__)

ANSWER_SLOT = "rf_answer"
STATE_SLOT = "rf_state"
REQUESTED_SLOT = "requested_slot"
MEETING_ENTITY = "rf_meeting"
REFLECT_INTENT = "reflect"
PLEDGE_INTENT = "make_pledge"
CRISIS_INTENT = "crisis"
CRISIS_RESPONSE = "utter_crisis"
GLOSSARY_INTENT = "ask_acronym"
# Short messages with these intents stop the form ("bye", "let's stop there").
STOP_INTENTS = ("goodbye", "pause_walkthrough")
# Short messages with these intents are greetings or thanks, not answers: the question is asked again.
ASIDE_INTENTS = ("greet", "thank", "help", "bot_challenge")
# Button payloads that are answers, not requests to do something else.
ANSWER_PAYLOADS = ("affirm", "deny")
COMMAND_CONFIDENCE = 0.8

MODE_REFLECT, MODE_PLEDGE = "reflect", "pledge"
# Stages (rf_state["stage"]).
RESUME, SESSION, TAKEAWAY, PLEDGE, CHECK_IN, CHECK_IN_DATE, CHECK_IN_PICK, RATING, IMPROVE, SHARING = (
    "resume", "session", "takeaway", "pledge", "check_in", "check_in_date", "check_in_pick", "rating", "improve", "sharing",
)
# The questions of each way in, in order (a pledge's check-in belongs to PLEDGE).
STEPS = {
    MODE_REFLECT: (SESSION, TAKEAWAY, PLEDGE, RATING, IMPROVE, SHARING),
    MODE_PLEDGE: (SESSION, PLEDGE, SHARING),
}
CHECK_IN_STAGES = (CHECK_IN, CHECK_IN_DATE, CHECK_IN_PICK)
# Why the form stopped.
STOP_DONE, STOP_PAUSED, STOP_CRISIS, STOP_TROUBLE, STOP_OTHER, STOP_NOTHING = (
    "done", "paused", "crisis", "trouble", "other", "nothing",
)
SHARING_BUTTONS = {"named": SHARING_NAMED, "anonymous": SHARING_ANONYMOUS, "private": SHARING_PRIVATE}


# --- the database (opened on first use by actions.db) --------------------------------------------


def get_repositories() -> Tuple[PlanRepository, ReflectionRepository]:
    """(plans, reflections) on the action server's app database (actions.db)."""
    sessions = get_sessions()
    return PlanRepository(sessions), ReflectionRepository(sessions)


# --- wording ---------------------------------------------------------------------------------------


def content() -> Mapping[str, Any]:
    """knowledge/reflections.yml."""
    return load_content()


def words(key: str, /, **values: Any) -> str:
    """The message called key, placeholders filled."""
    return fill(str(content()["messages"][key]["text"]).strip(), **values)


def button(key: str, /, **values: Any) -> Dict[str, str]:
    """A button: {"title": ..., "payload": ...}."""
    spec = content()["buttons"][key]
    return {"title": fill(spec["title"], **values), "payload": fill(spec["payload"], **values)}


def phrases(key: str) -> set:
    """A set of exact phrases (normalised)."""
    return {normalise(p) for p in content()["phrases"][key]}


def limit(key: str) -> int:
    """A number from `limits`."""
    return int(content()["limits"][key])


def timing(key: str) -> Any:
    """A value from `timing`."""
    return content()["timing"][key]


# --- reading a message ---------------------------------------------------------------------------

_RATING = re.compile(r"^\s*([1-5])\s*(?:(?:/|out of|of)\s*5)?\s*(?:stars?)?\s*[.!]?\s*$", re.IGNORECASE)


def read_rating(message: Message) -> Optional[int]:
    """1 to 5 from "4", "4/5", "4 out of 5", "four"; None otherwise."""
    match = _RATING.match(message.text)
    if match:
        return int(match.group(1))
    named = content()["phrases"]["rating_words"]
    first = message.plain.split()[:1]
    if first and first[0] in named and len(message.plain.split()) <= 4:
        return int(named[first[0]])
    return None


def meeting_label(meeting: RecentMeeting) -> str:
    """A meeting on a button: "PRG meeting, Thu 26 Nov"."""
    labels = content()["labels"]
    local = meeting.starts_at.astimezone(zone(meeting.time_zone))
    return fill(
        labels["meeting"],
        description=shorten(meeting.description, int(labels["description_chars"])),
        weekday=local.strftime("%a"),
        day=local.day,
        month=local.strftime("%b"),
    )


# --- reflecting ----------------------------------------------------------------------------------


class Reflecting:
    """One champion reflecting (or making a pledge): where they are, what to ask, and saving each answer."""

    def __init__(self, sender_id: str, state: Dict[str, Any], domain: Optional[DomainDict] = None) -> None:
        """Look up the champion behind sender_id; state is rf_state."""
        self.plans, self.repo = get_repositories()
        self.champion = self.plans.champion_for(sender_id)
        self.state = dict(state)
        self.now = now()
        self.responses = set((domain or {}).get("responses") or {})
        self._zone: Optional[str] = None

    # -- the state --

    @property
    def stage(self) -> Optional[str]:
        """The question being asked."""
        return self.state.get("stage")

    @property
    def mode(self) -> str:
        """Reflecting (every question) or making a pledge (session, pledges, sharing)."""
        return self.state.get("mode") or MODE_REFLECT

    @property
    def time_zone(self) -> str:
        """The champion's zone."""
        if self._zone is None:
            self._zone = self.repo.champion_time_zone(self.champion.id)
        return self._zone

    @property
    def today(self) -> date:
        """Today in the champion's zone."""
        return local_today(self.now, self.time_zone)

    def go(self, stage: str, note: Optional[str] = None, **values: Any) -> None:
        """Ask `stage` next (with a note said before the question)."""
        self.state["stage"] = stage
        self.state["note"] = note
        self.state.update(values)

    def add_note(self, note: str) -> None:
        """Say note before the next question (after any note already there)."""
        before = self.state.get("note")
        self.state["note"] = f"{before}\n{note}" if before else note

    def session_name(self) -> str:
        """The session as said in questions: "the PRG meeting", or "the session" when they skipped it."""
        return self.state.get("session") or content()["labels"]["no_session"]

    def _next(self, stage: str) -> Optional[str]:
        """The question after stage in this mode (None: the end)."""
        steps = STEPS[self.mode]
        if stage in CHECK_IN_STAGES:
            stage = PLEDGE
        index = steps.index(stage) if stage in steps else -1
        return steps[index + 1] if index + 1 < len(steps) else None

    def advance(self, outcome: "Outcome", after: str) -> None:
        """Move to the question after `after` (and skip the sharing question when nothing was saved)."""
        nxt = self._next(after)
        if nxt == SHARING and not self.state.get("reflection"):
            outcome.say(words("stopped_nothing"))
            self._stop(outcome, STOP_NOTHING)
            return
        if nxt is None:
            self._finish(outcome)
            return
        self.go(nxt, note=self.state.get("note"))

    # -- starting --

    def start(self, message: Message) -> None:
        """Begin from the message that asked: reflect (maybe about a meeting, maybe carrying on) or make a pledge."""
        meeting = self.repo.meeting(self.champion.id, message.entities.get(MEETING_ENTITY))
        if message.intent == PLEDGE_INTENT:
            self.state = {"mode": MODE_PLEDGE, "count": 0}
            if meeting is not None:
                self.state.update(meeting=meeting.id, session=meeting.description)
                self.go(PLEDGE)
            else:
                self.go(SESSION)
            return
        if meeting is not None:
            unfinished = self.repo.unfinished(self.champion.id, meeting_id=meeting.id)
            if unfinished is not None:
                self.resume(unfinished)
                return
            self.state = {"mode": MODE_REFLECT, "count": 0, "meeting": meeting.id, "session": meeting.description}
            self.go(TAKEAWAY)
            return
        since = self.now - timedelta(hours=float(timing("resume_within_hours")))
        unfinished = self.repo.unfinished(self.champion.id, since=since)
        self.state = {"mode": MODE_REFLECT, "count": 0}
        if unfinished is not None:
            self.go(RESUME, resume=unfinished.id, session=unfinished.session_label)
        else:
            self.go(SESSION)

    def resume(self, view: ReflectionView) -> None:
        """Carry on a saved reflection at the question after the last one answered."""
        self.state = {
            "mode": MODE_REFLECT,
            "reflection": view.id,
            "meeting": view.meeting_id,
            "session": view.session_label,
            "count": len(view.pledges),
        }
        answered = [
            (SESSION, bool(view.session_label or view.meeting_id)),
            (TAKEAWAY, view.takeaway is not None),
            (PLEDGE, bool(view.pledges)),
            (RATING, view.rating is not None),
            (IMPROVE, view.improvement is not None),
            (SHARING, view.sharing is not None),
        ]
        last = max((i for i, (_, done) in enumerate(answered) if done), default=-1)
        if last < 0:
            self.go(SESSION)
        elif answered[last][0] == PLEDGE and len(view.pledges) < limit("max_pledges"):
            self.go(PLEDGE)
        else:
            self.go(STEPS[MODE_REFLECT][min(last + 1, len(STEPS[MODE_REFLECT]) - 1)])

    # -- saving --

    def ensure(self) -> int:
        """The reflection being filled in, created (with the session said so far) on the first saved answer."""
        if not self.state.get("reflection"):
            try:
                view = self.repo.start(
                    self.champion.id, meeting_id=self.state.get("meeting"), session_label=self.state.get("session"), now=self.now
                )
            except LookupError:  # the meeting was deleted meanwhile: keep its name
                self.state["meeting"] = None
                view = self.repo.start(self.champion.id, session_label=self.state.get("session"), now=self.now)
            self.state["reflection"] = view.id
        return int(self.state["reflection"])

    def save(self, method: Callable[..., bool], *args: Any) -> None:
        """Save one answer with a repository method (starting a new reflection if the old one has gone)."""
        if method(self.champion.id, self.ensure(), *args, now=self.now):
            return
        self.state["reflection"] = None  # deleted meanwhile: keep this answer in a new one
        method(self.champion.id, self.ensure(), *args, now=self.now)

    # -- asking --

    def ask(self, outcome: Outcome) -> None:
        """Say the note (if any) and the question for the current stage, with its buttons."""
        stage = self.stage
        note = self.state.pop("note", None)
        stop = button("stop")
        session = self.session_name()
        if stage == RESUME:
            outcome.say(join(note, words("ask_resume", session=session)), [button("carry_on"), button("start_new"), stop])
        elif stage == SESSION:
            meetings = self.repo.recent_meetings(
                self.champion.id, self.now, days=int(timing("recent_meeting_days")), limit=int(timing("max_meeting_buttons"))
            )
            choices = [[meeting_label(m), m.id] for m in meetings]
            self.state["choices"] = choices
            buttons = [{"title": title, "payload": title} for title, _ in choices] + [button("training_session")]
            if self.mode == MODE_PLEDGE:
                outcome.say(join(note, words("ask_session_pledge")), buttons + [button("skip"), stop])
            else:
                outcome.say(join(note, words("ask_session")), buttons + [stop])
        elif stage == TAKEAWAY:
            outcome.say(join(note, words("ask_takeaway", session=session)), [button("skip"), stop])
        elif stage == PLEDGE:
            count = int(self.state.get("count") or 0)
            if count:
                text = words("ask_another_pledge", count=count, max=limit("max_pledges"))
                outcome.say(join(note, text), [button("thats_all"), stop])
            elif self.mode == MODE_PLEDGE and not self.state.get("session"):
                outcome.say(join(note, words("ask_pledge_only")), [stop])
            else:
                outcome.say(join(note, words("ask_pledge", session=session)), [button("no_pledge"), stop])
        elif stage == CHECK_IN:
            outcome.say(join(note, words("ask_check_in")), [button("two_weeks"), button("month"), button("pick_date")])
        elif stage == CHECK_IN_DATE:
            outcome.say(join(note, words("ask_check_in_date")), [button("two_weeks"), button("month")])
        elif stage == CHECK_IN_PICK:
            days = [date.fromisoformat(d) for d in self.state.get("days") or []]
            buttons = [{"title": say_day(d, self.now), "payload": say_day(d, self.now)} for d in days]
            outcome.say(join(note, words("ask_check_in_which")), buttons + [button("pick_date")])
        elif stage == RATING:
            ratings = [button("rating", n=n) for n in range(1, 6)]
            outcome.say(join(note, words("ask_rating", session=session)), ratings + [button("skip"), stop])
        elif stage == IMPROVE:
            outcome.say(join(note, words("ask_improvement")), [button("skip"), stop])
        elif stage == SHARING:
            outcome.say(join(note, words("ask_sharing")), [button("named"), button("anonymous"), button("private")])

    # -- handling a message --

    def handle(self, message: Message, outcome: Optional[Outcome] = None) -> Outcome:
        """Deal with one message given to the form."""
        outcome = outcome or Outcome()
        plain = message.plain
        if message.is_payload:
            if message.intent in (REFLECT_INTENT, PLEDGE_INTENT):
                self.start(message)  # a "Reflect now" tap or the menu mid-way: begin again as asked
                return outcome
            if self._knowledge(message, outcome):
                return outcome
            if message.intent not in ANSWER_PAYLOADS:
                outcome.say(words("paused_for_other") if self.state.get("reflection") else words("stopped_nothing"))
                return self._stop(outcome, STOP_OTHER)
        if plain in phrases("stop") or self._command(message, STOP_INTENTS):
            return self._pause(outcome)
        setting = setting_action(message)
        if setting is not None:  # "stop messages from the team": done at once, then the same question
            outcome.delegates.append(setting)
            return outcome
        if self._knowledge(message, outcome):
            return outcome
        if self._command(message, ASIDE_INTENTS) and self.stage not in (SESSION,):
            return outcome  # the question is asked again
        handler = {
            RESUME: self._resume,
            SESSION: self._session,
            TAKEAWAY: self._takeaway,
            PLEDGE: self._pledge,
            CHECK_IN: self._check_in,
            CHECK_IN_DATE: self._check_in,
            CHECK_IN_PICK: self._check_in,
            RATING: self._rating,
            IMPROVE: self._improve,
            SHARING: self._sharing,
        }.get(self.stage or "", self._session)
        handler(message, outcome)
        return outcome

    def _command(self, message: Message, intents: Sequence[str]) -> bool:
        """True for a short message NLU is sure has one of these intents."""
        return (
            message.intent in intents
            and message.confidence >= COMMAND_CONFIDENCE
            and message.words <= limit("max_command_words")
        )

    def _knowledge(self, message: Message, outcome: Outcome) -> bool:
        """Answer a knowledge question asked mid-way (True if one was answered); the question is asked again."""
        intent = message.intent or ""
        if not intent.startswith("ask_"):
            return False
        if not message.is_payload:
            if message.confidence * 100 < limit("question_confidence"):
                return False
            first = message.plain.split()[:1]
            if not (message.text.rstrip().endswith("?") or (first and first[0] in phrases("question_starts"))):
                return False
        if intent == GLOSSARY_INTENT:
            try:
                from actions.glossary import ActionExplainAcronym
            except ImportError:  # pragma: no cover - the glossary is part of the project
                return False
            outcome.delegates.append(ActionExplainAcronym())
            return True
        response = "utter_" + intent[len("ask_"):]
        if response not in self.responses:
            return False
        outcome.say(response=response)
        return True

    def _pause(self, outcome: Outcome) -> Outcome:
        """"Stop" / "later": everything said is saved already; say so."""
        if not self.state.get("reflection") and self.stage != RESUME:
            outcome.say(words("stopped_nothing"))
            return self._stop(outcome, STOP_NOTHING)
        text = words("stopped")
        if self.stage in CHECK_IN_STAGES and self.state.get("pledge"):
            pledge = self.repo.pledge(self.champion.id, self.state["pledge"])
            if pledge is not None and pledge.check_in_due_at is not None:
                text += "\n" + words("stopped_check_in", day=self._say_day(pledge.check_in_due_at))
        outcome.say(text)
        return self._stop(outcome, STOP_PAUSED)

    def _stop(self, outcome: Outcome, reason: str) -> Outcome:
        """End the form for reason."""
        self.state["stop"] = reason
        outcome.stop = reason
        return outcome

    def _say_day(self, instant: datetime) -> str:
        """"Monday 7 December": the day of instant in the champion's zone."""
        return say_day(instant.astimezone(zone(self.time_zone)).date(), self.now)

    def _text_answer(self, message: Message, maximum: int) -> Optional[str]:
        """The message as a free-text answer, or None after noting why it can't be used."""
        text = message.text.strip()
        if message.is_payload or not readable(text):
            self.add_note(words("no_words"))
            return None
        if len(text) > maximum:
            self.add_note(words("too_long", max=f"{maximum:,}"))
            return None
        return text

    # -- each question --

    def _resume(self, message: Message, outcome: Outcome) -> None:
        """Carry on the saved reflection, or start a new one (a name typed here starts one about it)."""
        plain = message.plain
        if plain == normalise(button("carry_on")["title"]) or plain in phrases("agree") or message.intent == "affirm":
            view = self.repo.get(self.champion.id, self.state.get("resume"))
            if view is not None and not view.finished:
                self.resume(view)
                return
        self.state = {"mode": MODE_REFLECT, "count": 0}
        self.go(SESSION)
        starts_new = (normalise(button("start_new")["title"]), normalise(button("carry_on")["title"]), "no", "new", "new one")
        if plain in starts_new or message.intent in ("affirm", "deny"):
            return
        self._session(message, outcome)

    def _session(self, message: Message, outcome: Outcome) -> None:
        """Which session: a recent meeting, "a training session", a name typed, or skipped."""
        plain = message.plain
        training = content()["buttons"]["training_session"]
        if plain == normalise(training["title"]):
            self.state.update(meeting=None, session=training["label"])
        elif plain in phrases("skip"):
            self.advance(outcome, SESSION)
            return
        else:
            chosen = None
            for title, meeting_id in self.state.get("choices") or []:
                if plain == normalise(title):
                    chosen = self.repo.meeting(self.champion.id, meeting_id)
                    break
            if chosen is not None:
                self.state.update(meeting=chosen.id, session=chosen.description)
            else:
                name = " ".join(message.text.split())
                if message.is_payload or not readable(name, 2):
                    self.go(SESSION, note=words("no_words"))
                    return
                self.state.update(meeting=None, session=name[: limit("session_max")])
        if self.state.get("reflection"):
            self.save(lambda cid, rid, now: self.repo.set_session(
                cid, rid, meeting_id=self.state.get("meeting"), session_label=self.state.get("session"), now=now))
        else:
            self.ensure()
        self.state.pop("choices", None)
        self.advance(outcome, SESSION)

    def _takeaway(self, message: Message, outcome: Outcome) -> None:
        """One thing they'll take away (or skip)."""
        if message.plain in phrases("skip"):
            self.advance(outcome, TAKEAWAY)
            return
        text = self._text_answer(message, limit("answer_max"))
        if text is None:
            return
        self.save(self.repo.save_takeaway, text)
        self.advance(outcome, TAKEAWAY)

    def _pledge(self, message: Message, outcome: Outcome) -> None:
        """A pledge (saved at once, with a check-in in two weeks until they pick), or "that's all"."""
        plain = message.plain
        count = int(self.state.get("count") or 0)
        done = plain in phrases("thats_all") or plain in phrases("skip") or self._command(message, ("deny",))
        if done:
            if count == 0 and self.mode == MODE_PLEDGE:
                outcome.say(words("no_pledge"))
                self._stop(outcome, STOP_NOTHING)
                return
            self.advance(outcome, PLEDGE)
            return
        text = self._text_answer(message, limit("pledge_max"))
        if text is None:
            return
        due = check_in_at(check_in_day(str(timing("default_check_in")), self.today), self.time_zone)
        try:
            pledge = self.repo.add_pledge(self.champion.id, self.ensure(), text, due, now=self.now)
        except ValueError:  # already three (saved in an earlier visit): move on
            self.advance(outcome, PLEDGE)
            return
        self.state["count"] = count + 1
        self.go(CHECK_IN, pledge=pledge.id)

    def _check_in(self, message: Message, outcome: Outcome) -> None:
        """When to check in: in 2 weeks, in a month, or a day they pick (typed, or tapped from readings)."""
        plain = message.plain
        day: Optional[date] = None
        choices = {"two_weeks": "two_weeks", "month": "month"}
        for key, choice in choices.items():
            if plain == normalise(button(key)["title"]) or plain in phrases(key):
                day = check_in_day(choice, self.today)
        if day is None and plain == normalise(button("pick_date")["title"]):
            self.go(CHECK_IN_DATE)
            return
        if day is None and self.stage == CHECK_IN_PICK:
            for iso in self.state.get("days") or []:
                if plain == normalise(say_day(date.fromisoformat(iso), self.now)):
                    day = date.fromisoformat(iso)
        if day is None:
            status, days = read_check_in_day(message.text, self.now, self.time_zone)
            if status == DAY_OK:
                day = days[0]
            elif status == DAY_CHOOSE:
                self.go(CHECK_IN_PICK, days=[d.isoformat() for d in days[:3]])
                return
            else:
                key = {DAY_PAST: "date_gone", DAY_TOO_FAR: "date_too_far"}.get(status, "date_not_understood")
                self.go(self.stage if self.stage != CHECK_IN_PICK else CHECK_IN_DATE, note=words(key))
                return
        pledge = self.repo.move_check_in(self.champion.id, self.state.get("pledge"), check_in_at(day, self.time_zone), now=self.now)
        said = say_day(day, self.now)
        self.state.update(note=words("pledge_saved", day=said) if pledge is not None else None, days=None)
        if int(self.state.get("count") or 0) >= limit("max_pledges"):
            self.add_note(words("three_pledges"))
            self.advance(outcome, PLEDGE)
        else:
            self.go(PLEDGE, note=self.state.get("note"))

    def _rating(self, message: Message, outcome: Outcome) -> None:
        """How it went, 1 to 5 (or skip)."""
        if message.plain in phrases("skip") or message.plain in phrases("nothing"):
            self.advance(outcome, RATING)
            return
        rating = read_rating(message)
        if rating is None:
            self.add_note(words("bad_rating"))
            return
        self.save(self.repo.save_rating, rating)
        self.advance(outcome, RATING)

    def _improve(self, message: Message, outcome: Outcome) -> None:
        """What would have made it better (or skip / "nothing")."""
        if message.plain in phrases("skip") or message.plain in phrases("nothing"):
            self.advance(outcome, IMPROVE)
            return
        text = self._text_answer(message, limit("answer_max"))
        if text is None:
            return
        self.save(self.repo.save_improvement, text)
        self.advance(outcome, IMPROVE)

    def _sharing(self, message: Message, outcome: Outcome) -> None:
        """Share with their name, anonymously, or keep it private; then the thank-you."""
        plain = message.plain
        chosen = None
        for key, value in SHARING_BUTTONS.items():
            if plain == normalise(button(key)["title"]) or plain in phrases(key):
                chosen = value
                break
        if chosen is None:
            self.add_note(words("bad_sharing"))
            return
        self.save(self.repo.save_sharing, chosen)
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        """Mark the reflection complete and thank them with a short summary."""
        reflection_id = self.state.get("reflection")
        if not reflection_id:
            outcome.say(words("stopped_nothing"))
            self._stop(outcome, STOP_NOTHING)
            return
        self.repo.complete(self.champion.id, reflection_id, now=self.now)
        view = self.repo.get(self.champion.id, reflection_id)
        outcome.say(self.summary(view) if view is not None else words("thanks_pledge"))
        self._stop(outcome, STOP_DONE)

    def summary(self, view: ReflectionView) -> str:
        """"Thank you for reflecting on ... Here's what I saved:" and one short line per answer."""
        size = limit("summary_chars")
        if self.mode == MODE_REFLECT and view.session_label:
            lines = [words("thanks", session=view.session_label)]
        else:
            lines = [words("thanks_pledge")]
        if view.takeaway:
            lines.append(words("summary_takeaway", text=shorten(view.takeaway, size)))
        for pledge in view.pledges:
            day = self._say_day(pledge.check_in_due_at) if pledge.check_in_due_at else ""
            lines.append(words("summary_pledge", text=shorten(pledge.text, size), day=day))
        if view.rating:
            lines.append(words("summary_rating", rating=view.rating))
        if view.improvement:
            lines.append(words("summary_improvement", text=shorten(view.improvement, size)))
        sharing = {SHARING_NAMED: "sharing_named", SHARING_ANONYMOUS: "sharing_anonymous"}.get(view.sharing or "", "sharing_private")
        lines.append(words("summary_sharing", sharing=words(sharing)))
        return "\n".join(lines)


def _trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that reflections can't be saved just now (the database is down)."""
    say_trouble(dispatcher, words("trouble"))


# --- the form's actions --------------------------------------------------------------------------


class ActionStartReflection(Action):
    """Get ready to reflect or make a pledge (about the meeting a button names), before reflection_form runs."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_start_reflection"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Choose the first question from the intent (and any meeting in the payload)."""
        message = read_message(tracker)
        try:
            reflecting = Reflecting(sender_of(tracker), {}, domain)
            reflecting.start(message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return [FollowupAction("action_listen")]  # don't start the form without the database
        return [SlotSet(ANSWER_SLOT, None), SlotSet(REQUESTED_SLOT, None), SlotSet(STATE_SLOT, reflecting.state)]


class ActionAskRfAnswer(Action):
    """Ask the next question of the reflection (reflection_form calls this whenever it needs rf_answer)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_ask_rf_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Send the question for the current stage, with its buttons."""
        try:
            reflecting = Reflecting(sender_of(tracker), get_state(tracker, STATE_SLOT), domain)
            outcome = Outcome()
            reflecting.ask(outcome)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        await outcome.send_all(dispatcher, tracker, domain)
        return [SlotSet(STATE_SLOT, reflecting.state)]


class ValidateReflectionForm(FormValidationAction):
    """Take each message given to reflection_form: save answers, pledges and check-in days; stop, skip, crisis."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "validate_reflection_form"

    async def validate_rf_answer(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        """Handle one message; keep the form going (rf_answer empty) or stop it (requested_slot None)."""
        if not isinstance(slot_value, str):
            return {}  # the form starting, with action_start_reflection's emptied slot: nothing to do
        message = read_message(tracker, slot_value)
        state = get_state(tracker, STATE_SLOT)
        if message.intent == CRISIS_INTENT:  # first, and even if the database is down
            dispatcher.utter_message(response=CRISIS_RESPONSE)
            if state.get("reflection"):
                dispatcher.utter_message(text=words("crisis_saved"))
            return {ANSWER_SLOT: None, STATE_SLOT: dict(state, stop=STOP_CRISIS), REQUESTED_SLOT: None}
        try:
            reflecting = Reflecting(sender_of(tracker), state, domain)
            outcome = reflecting.handle(message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return {ANSWER_SLOT: None, STATE_SLOT: dict(state, stop=STOP_TROUBLE), REQUESTED_SLOT: None}
        await outcome.send_all(dispatcher, tracker, domain)
        slots: Dict[Text, Any] = {ANSWER_SLOT: None, STATE_SLOT: reflecting.state}
        if outcome.stop:
            slots[REQUESTED_SLOT] = None
        return slots


class ActionReflectionEnd(Action):
    """After reflection_form stops: forget the conversation's state (everything said is in the database)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_reflection_end"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Clear rf_state and rf_answer."""
        return [SlotSet(STATE_SLOT, None), SlotSet(ANSWER_SLOT, None)]
