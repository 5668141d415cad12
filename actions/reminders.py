"""Meeting reminders by chat: set one, confirm or fix it, list, cancel, change the time, snooze, "can't make it".

Setting (or re-timing) a reminder runs `reminder_form`: `action_set_reminder`
reads the first message ("remind me about the PRG meeting on Thursday at 2pm")
with bot.reminder_times, and `validate_reminder_form` takes every later message
until the champion confirms, asking about whatever is missing or ambiguous
(no time, "at 2" morning or afternoon, "next Thursday", a time the clocks skip
or repeat, a time already gone, which project). Nothing is stored until they
confirm. `action_ask_rm_answer` asks the current question; `action_reminder_end`
tidies up when the form stops. The conversation's progress is in the `rm_state`
slot; meetings and reminders are in the app database (bot/reminders.py). All
wording is in knowledge/reminders.yml.
"""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Text, Tuple

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.exc import SQLAlchemyError

from actions.clock import now
from actions.db import get_sessions
from actions.forms import Message, Outcome, get_state, join, read_message, say_trouble, sender_of, setting_action
from bot.plans import PlanRepository, fill, shorten
from bot.reminder_times import (
    AMBIGUOUS,
    OK,
    PAST,
    UNPARSEABLE,
    Offset,
    ParsedTime,
    load_content,
    parse_meeting,
    say_confirmation,
    say_day,
    say_offsets,
    say_relative_day,
    say_time,
    say_when,
    snooze_until,
)
from bot.reminder_models import MEETING_DESCRIPTION_MAX
from bot.reminders import MeetingView, ReminderRepository
from bot.time_zones import champion_zone, time_label

log = logging.getLogger(__name__)

ANSWER_SLOT = "rm_answer"
STATE_SLOT = "rm_state"
REQUESTED_SLOT = "requested_slot"
CRISIS_INTENT = "crisis"
CRISIS_RESPONSE = "utter_crisis"

# Stages of setting a reminder (rm_state["stage"]).
WHAT, DESCRIBE, WHEN, TIME, CHOOSE, PROJECT, CONFIRM, FIX, OFFSETS, PICK_MEETING = (
    "what", "describe", "when", "time", "choose", "project", "confirm", "fix", "offsets", "pick_meeting",
)
NEW, CHANGE = "new", "change"
# Why the form stopped (read by action_reminder_end).
STOP_DONE, STOP_CANCELLED, STOP_CRISIS, STOP_TROUBLE, STOP_NOTHING = "done", "cancelled", "crisis", "trouble", "nothing"
MAX_MEETING_BUTTONS = 6
MAX_PROJECT_BUTTONS = 6


# --- the database (opened on first use by actions.db) --------------------------------------------


def get_repositories() -> Tuple[PlanRepository, ReminderRepository]:
    """(plans, reminders) on the action server's app database (actions.db)."""
    sessions = get_sessions()
    return PlanRepository(sessions), ReminderRepository(sessions)


def content() -> Mapping[str, Any]:
    """knowledge/reminders.yml."""
    return load_content()


def words(key: str, /, **values: Any) -> str:
    """The conversation wording called key, placeholders filled."""
    return fill(str(content()["conversation"][key]).strip(), **values)


def button(key: str, /, **values: Any) -> Dict[str, str]:
    """A button from the conversation wording: {"title": ..., "payload": ...}."""
    spec = content()["conversation"]["buttons"][key]
    return {"title": fill(spec["title"], **values), "payload": fill(spec["payload"], **values)}


def phrases(key: str) -> set:
    """A set of exact phrases (normalised) from the conversation wording."""
    return {normalise(p) for p in content()["conversation"][key]}


def time_zone() -> str:
    """The default time zone (knowledge/reminders.yml), for champions who have not chosen one."""
    return str(content()["timing"]["time_zone"])


def home_zone(champion: Any) -> str:
    """The champion's own zone (champions.time_zone, set by chat: actions/time_zones.py), or the default."""
    return champion_zone(getattr(champion, "time_zone", None))


# --- reading a message ---------------------------------------------------------------------------

_PUNCTUATION = re.compile(r"[^\w\s:./'-]+")


def normalise(text: Any) -> str:
    """Lower case, single spaces, no surrounding punctuation: "Yes, set it!" -> "yes set it"."""
    text = str(text or "").casefold().replace("’", "'")
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(text.split()).strip(" .,'")


class ReminderMessage(Message):
    """A message whose plain form keeps what times are written with ("2:30", "p.m.")."""

    @property
    def plain(self) -> str:
        """The normalised text."""
        return normalise(self.text)


def _instant(value: Optional[str]) -> Optional[datetime]:
    """A datetime from its ISO form in the state."""
    return datetime.fromisoformat(value) if value else None


def meeting_label(meeting: MeetingView) -> str:
    """A meeting on a button: "PRG meeting, Thu 26 Nov 2:00pm"."""
    labels = content()["conversation"]["labels"]
    local = meeting.starts_at.astimezone(_zone(meeting.time_zone))
    short = fill(
        labels["short_when"],
        weekday=local.strftime("%a"),
        day=local.day,
        month=local.strftime("%b"),
        time=say_time(meeting.starts_at, meeting.time_zone),
    )
    return fill(labels["meeting"], description=shorten(meeting.description, 40), short=short)


def _zone(name: str):
    """ZoneInfo for name."""
    from bot.reminder_times import zone

    return zone(name)


def confirmation(meeting: MeetingView, at: datetime, home: Optional[str] = None) -> str:
    """"Thursday 27 November at 2:00pm: the PRG meeting", in the meeting's zone ("2:00pm Paris time" unless UK time in the UK)."""
    label = time_label(meeting.time_zone, home or time_zone())
    return say_confirmation(meeting.starts_at, meeting.description, meeting.time_zone, at, label=label)


def offsets_of(meeting: MeetingView) -> List[Offset]:
    """The before-the-meeting offsets of a meeting's pending reminders."""
    return [Offset(r.offset_minutes) for r in meeting.pending if r.offset_minutes > 0]


def match_meetings(meetings: Sequence[MeetingView], text: str) -> List[MeetingView]:
    """The meetings whose description shares the most words (of 3+ letters) with text."""
    asked = {w for w in re.findall(r"[a-z0-9]{3,}", normalise(text))} - {"the", "and", "meeting", "reminder", "reminders", "for", "about", "cancel", "change", "move", "time", "can't", "make", "attend"}
    if not asked:
        return []
    scored = []
    for meeting in meetings:
        have = set(re.findall(r"[a-z0-9]{3,}", normalise(meeting.description)))
        score = len(asked & have)
        if score:
            scored.append((score, meeting))
    if not scored:
        return []
    best = max(score for score, _ in scored)
    return [meeting for score, meeting in scored if score == best]


# --- setting a reminder --------------------------------------------------------------------------


class Setting:
    """One champion setting (or re-timing) a reminder: what is known, and what to ask next."""

    def __init__(self, sender_id: str, state: Dict[str, Any]) -> None:
        """Look up the champion behind sender_id; state is rm_state."""
        self.plans, self.reminders = get_repositories()
        self.champion = self.plans.champion_for(sender_id)
        self.home = home_zone(self.champion)
        self.state = dict(state)
        self.now = now()

    # -- the state --

    @property
    def stage(self) -> Optional[str]:
        """The question being asked."""
        return self.state.get("stage")

    def go(self, stage: str, note: Optional[str] = None, **values: Any) -> None:
        """Ask `stage` next (with a note said before the question)."""
        self.state["stage"] = stage
        self.state["note"] = note
        self.state.update(values)

    @property
    def zone(self) -> str:
        """The zone times are read and said in: a re-timed meeting's own, otherwise the champion's."""
        return self.state.get("zone") or self.home

    @property
    def label(self) -> Optional[str]:
        """The zone's name said after a time ("Paris time"), or None for UK time to a champion in the UK."""
        return time_label(self.zone, self.home)

    @property
    def description(self) -> Optional[str]:
        """The meeting's name as the champion gave it."""
        return self.state.get("description")

    @property
    def when(self) -> Optional[datetime]:
        """The chosen instant (UTC), if any."""
        return _instant(self.state.get("when"))

    def offsets(self) -> Optional[List[Offset]]:
        """The reminders chosen (None: the defaults)."""
        chosen = self.state.get("offsets")
        return None if chosen is None else [Offset(int(m)) for m in chosen]

    # -- starting --

    def start(self, message: Message) -> None:
        """Begin from the message that asked for it: a new reminder, or a meeting's new time."""
        self.state = {"mode": NEW, "zone": self.home}
        if wants_change(message) and self.reminders.upcoming(self.champion.id, self.now):
            self.state["mode"] = CHANGE
            self._start_change(message)
            return
        if message.text.startswith("/"):  # the "Set a reminder" button: nothing said yet
            self.go(WHAT)
            return
        self.go(WHAT)
        self.read_time(message.text, take_description=True, quiet=True)
        self.advance()

    def _start_change(self, message: Message) -> None:
        """Find the meeting whose time changed, then read any new time in the message."""
        upcoming = self.reminders.upcoming(self.champion.id, self.now)
        chosen = self.reminders.meeting(self.champion.id, message.entities.get("rm_meeting"))
        if chosen is None and len(upcoming) == 1:
            chosen = upcoming[0]
        if chosen is None and not message.text.startswith("/"):
            matches = match_meetings(upcoming, message.text)
            chosen = matches[0] if len(matches) == 1 else None
        if chosen is None:
            self.go(PICK_MEETING, choices=[[meeting_label(m), m.id] for m in upcoming[:MAX_MEETING_BUTTONS]])
            self.state["pending_text"] = None if message.text.startswith("/") else message.text
            return
        self._pick(chosen)
        if not message.text.startswith("/"):
            self.read_time(message.text, take_description=False, quiet=True)
        self.advance()

    def _pick(self, meeting: MeetingView) -> None:
        """Re-time this meeting (a time alone keeps its day)."""
        day = meeting.starts_at.astimezone(_zone(meeting.time_zone)).date().isoformat()
        # A meeting keeps the zone it was set in: its new time is read in that zone too.
        self.state.update(meeting=meeting.id, description=meeting.description, project_done=True, prev_day=day,
                          zone=meeting.time_zone)

    def _local_day(self) -> Optional[str]:
        """The day of the time chosen so far, in the champion's zone (ISO), if any."""
        when = self.when
        return when.astimezone(_zone(self.zone)).date().isoformat() if when else None

    # -- reading times --

    def read_time(self, text: str, *, take_description: bool, on_day: Optional[date] = None, quiet: bool = False) -> ParsedTime:
        """Read a meeting time (and maybe a description and offsets) from text; set the stage it calls for."""
        parsed = parse_meeting(text, self.now, self.zone, on_day=on_day, content=content())
        if take_description and parsed.description and not self.description:
            self.state["description"] = parsed.description[:MEETING_DESCRIPTION_MAX]
        if parsed.offsets_given:
            self.state["offsets"] = [o.minutes for o in parsed.chosen_offsets(content())]
        self.apply(parsed, quiet=quiet)
        return parsed

    def apply(self, parsed: ParsedTime, quiet: bool = False) -> None:
        """Take a parsed time: the instant, or the question it calls for."""
        self.state["time_stage"] = None
        if parsed.status == OK:
            self.state["when"] = parsed.when_utc.isoformat()
            self.state["note"] = None
            return
        self.state["when"] = None
        if parsed.status == PAST:
            self.state.update(time_stage=WHEN, note=words("past", when=say_when(parsed.when, self.zone, self.now, label=self.label)))
        elif parsed.status == AMBIGUOUS and parsed.reason == "no_time" and parsed.days:
            self.state.update(time_stage=TIME, day=parsed.days[0].isoformat(), note=None)
        elif parsed.status == AMBIGUOUS and parsed.candidates:
            choices = [[say_when(c, self.zone, self.now), c.astimezone(timezone.utc).isoformat()] for c in parsed.candidates]
            weekday = _weekday_said(parsed)
            reason = content()["conversation"]["choice_reasons"].get(parsed.reason) or words("ask_choice")
            days = {c.astimezone(_zone(self.zone)).date() for c in parsed.candidates}
            choice_day = days.pop().isoformat() if len(days) == 1 else None
            self.state.update(time_stage=CHOOSE, choices=choices, choice_day=choice_day, note=fill(reason, weekday=weekday))
        elif parsed.status == AMBIGUOUS:
            self.state.update(time_stage=WHEN, note=words("no_day") if parsed.reason == "no_day" else None)
        elif parsed.reason in ("no_such_date", "bad_time", "too_far"):
            self.state.update(time_stage=WHEN, note=words(parsed.reason))
        else:  # no time words at all
            self.state.update(time_stage=WHEN, note=None if quiet else words("not_understood"))

    def advance(self) -> None:
        """Move to the next thing to ask: name, time, project, then the confirmation."""
        note = self.state.get("note")
        nothing_yet = self.stage == WHAT and not self.description and not self.when
        if nothing_yet and self.state.get("time_stage") in (None, WHEN):
            self.go(WHAT, note=note)  # neither a name nor a time: ask for both at once
        elif not self.description:
            self.go(DESCRIBE, note=None if nothing_yet else note)
        elif not self.when:
            self.go(self.state.get("time_stage") or WHEN, note=note)
        elif self.state.get("mode") == NEW and not self.state.get("project_done"):
            projects = self.plans.projects(self.champion.id)
            if len(projects) > 1:
                self.go(PROJECT, note=note, choices=[[p.name, p.id] for p in projects[:MAX_PROJECT_BUTTONS]])
            else:
                self.state.update(project=projects[0].id if projects else None, project_done=True)
                self.go(CONFIRM, note=note)
        else:
            self.go(CONFIRM, note=note)

    # -- asking --

    def ask(self, outcome: Outcome) -> None:
        """Say the note (if any) and the question for the current stage."""
        stage = self.stage
        note = self.state.pop("note", None)
        description = self.description or ""
        stop = button("stop")
        if stage == WHAT:
            outcome.say(join(note, words("ask_what")), [stop])
        elif stage == DESCRIBE:
            outcome.say(join(note, words("ask_description")), [stop])
        elif stage == WHEN:
            key = "ask_new_when" if self.state.get("mode") == CHANGE else "ask_when"
            outcome.say(join(note, words(key, description=description)), [stop])
        elif stage == TIME:
            day = say_day(date.fromisoformat(self.state["day"]), self.now)
            outcome.say(join(note, words("ask_time", description=description, day=day)), [stop])
        elif stage == CHOOSE:
            buttons = [{"title": title, "payload": title} for title, _ in self.state.get("choices") or []]
            outcome.say(note or words("ask_choice"), buttons + [button("something_else"), stop])
        elif stage == PROJECT:
            buttons = [{"title": title, "payload": title} for title, _ in self.state.get("choices") or []]
            outcome.say(join(note, words("ask_project", description=description)), buttons + [button("no_project"), stop])
        elif stage == PICK_MEETING:
            buttons = [{"title": title, "payload": title} for title, _ in self.state.get("choices") or []]
            outcome.say(join(note, words("ask_meeting_to_change")), buttons + [button("new_meeting"), stop])
        elif stage == FIX:
            outcome.say(words("ask_fix"), self._fix_buttons() + [stop])
        elif stage == OFFSETS:
            outcome.say(join(note, words("ask_offsets")), [stop])
        else:
            self._ask_confirm(outcome, note)

    def _fix_buttons(self) -> List[Dict[str, str]]:
        """What can be changed before confirming."""
        if self.state.get("mode") == CHANGE:
            return [button("fix_time")]
        buttons = [button("fix_time"), button("fix_name"), button("fix_reminders")]
        if len(self.plans.projects(self.champion.id)) > 1:
            buttons.append(button("fix_project"))
        return buttons

    def _planned_offsets(self) -> List[Offset]:
        """The before-the-meeting reminders that would be set (those still ahead of now)."""
        from bot.reminder_times import default_offsets, due_at

        offsets = self.offsets()
        offsets = list(default_offsets(content()) if offsets is None else offsets)
        return [o for o in offsets if due_at(self.when, o, self.zone) > self.now]

    def _ask_confirm(self, outcome: Outcome, note: Optional[str]) -> None:
        """"Thursday 27 November at 2:00pm: the PRG meeting. I'll remind you ... Shall I set that?"."""
        said = say_confirmation(self.when, self.description, self.zone, self.now, label=self.label)
        if self.state.get("mode") == CHANGE:
            outcome.say(join(note, words("confirm_change", confirmation=said)), [button("change_it"), button("fix_time"), button("stop")])
            return
        planned = self._planned_offsets()
        if planned:
            text = words("confirm", confirmation=said, offsets=say_offsets(planned))
        else:
            text = words("confirm_no_reminders", confirmation=said)
        project = self.plans.project(self.champion.id, self.state.get("project"))
        if project is not None:
            text += "\n" + words("confirm_project", project=project.name)
        outcome.say(join(note, text), [button("set_it")] + self._fix_buttons() + [button("stop")])

    # -- handling a message --

    def handle(self, message: Message) -> Outcome:
        """Deal with one message given to the form."""
        outcome = Outcome()
        plain = message.plain
        if plain in phrases("stop_phrases") or (message.intent == "deny" and self.stage not in (CONFIRM, FIX, CHOOSE)):
            return self._stop(outcome, STOP_CANCELLED)
        setting = setting_action(message)
        if setting is not None:  # "stop messages from the team": done at once, then the same question
            outcome.delegates.append(setting)
            return outcome
        stage = self.stage
        if stage == WHAT:
            self.read_time(message.text, take_description=True)
        elif stage == DESCRIBE:
            self._describe(message)
        elif stage in (WHEN, OFFSETS):
            if stage == OFFSETS and not self._offsets(message):
                self.state["note"] = words("not_understood")
                return outcome
            if stage == WHEN:
                previous = self.state.get("prev_day")
                self.read_time(message.text, take_description=not self.description,
                               on_day=date.fromisoformat(previous) if previous else None)
        elif stage == TIME:
            self.read_time(message.text, take_description=not self.description, on_day=date.fromisoformat(self.state["day"]))
        elif stage == CHOOSE:
            self._choose(message)
        elif stage == PROJECT:
            self._project(message)
        elif stage == PICK_MEETING:
            if not self._pick_meeting(message):
                self.state["note"] = words("not_understood")
                return outcome
        elif stage in (CONFIRM, FIX):
            if self._confirm(message, outcome):
                return outcome
            if self.state.pop("stage_set", None):
                return outcome
        self.advance()
        return outcome

    def _describe(self, message: Message) -> None:
        """The meeting's name; one that also holds a time is read for both."""
        parsed = parse_meeting(message.text, self.now, self.zone, content=content())
        if parsed.status != UNPARSEABLE or parsed.reason != "no_time_words":
            self.read_time(message.text, take_description=True)
            if self.description:
                return
        name = " ".join(message.text.split())[:MEETING_DESCRIPTION_MAX]
        if sum(ch.isalnum() for ch in name) >= 2 and not message.text.startswith("/"):
            self.state["description"] = name
        else:
            self.state["note"] = words("ask_description")

    def _offsets(self, message: Message) -> bool:
        """New reminder offsets ("2 hours before"); False when none were found."""
        parsed = parse_meeting(message.text, self.now, self.zone, content=content())
        if not parsed.offsets_given:
            return False
        self.state["offsets"] = [o.minutes for o in parsed.chosen_offsets(content())]
        return True

    def _choose(self, message: Message) -> None:
        """One of the offered readings, "something else", or a new time typed in."""
        for title, value in self.state.get("choices") or []:
            if message.plain == normalise(title):
                self.state.update(when=value, choices=None, note=None, time_stage=None)
                return
        if message.plain in phrases("something_else_phrases"):
            self.state.update(when=None, time_stage=WHEN, note=None)
            return
        # A time typed instead ("2pm") is on the day the readings share, if they do.
        day = self.state.get("choice_day")
        self.read_time(message.text, take_description=False, on_day=date.fromisoformat(day) if day else None)

    def _project(self, message: Message) -> None:
        """Which project the meeting is for (or none)."""
        for title, value in self.state.get("choices") or []:
            if message.plain == normalise(title):
                self.state.update(project=value, project_done=True)
                return
        if message.plain in phrases("something_else_phrases"):
            self.state.update(project=None, project_done=True)
            return
        self.state["note"] = None  # asked again

    def _pick_meeting(self, message: Message) -> bool:
        """Which meeting is being re-timed ("something else": a new reminder); False if the answer matched none."""
        upcoming = {m.id: m for m in self.reminders.upcoming(self.champion.id, self.now)}
        if message.plain in phrases("something_else_phrases"):
            pending = self.state.pop("pending_text", None)
            self.state = {"mode": NEW}
            self.go(WHAT)
            if pending:
                self.read_time(pending, take_description=True)
            return True
        for title, value in self.state.get("choices") or []:
            if message.plain == normalise(title) and value in upcoming:
                self._pick(upcoming[value])
                pending = self.state.pop("pending_text", None)
                if pending:
                    self.read_time(pending, take_description=False, quiet=True)
                return True
        matches = match_meetings(list(upcoming.values()), message.text)
        if len(matches) == 1:
            self._pick(matches[0])
            self.read_time(message.text, take_description=False, quiet=True)
            return True
        return False

    def _confirm(self, message: Message, outcome: Outcome) -> bool:
        """Yes (store it), no (what to change), a fix, or a new time; True once stored or stopped."""
        plain = message.plain
        if message.intent == "affirm" or plain in phrases("yes_phrases"):
            if self.stage == CONFIRM:
                return self._save(outcome)
        fixes = {
            normalise(button("fix_time")["payload"]): WHEN,
            normalise(button("fix_name")["payload"]): DESCRIBE,
            normalise(button("fix_reminders")["payload"]): OFFSETS,
            normalise(button("fix_project")["payload"]): PROJECT,
        }
        if plain in fixes:
            target = fixes[plain]
            if target == WHEN:
                self.state.update(when=None, time_stage=WHEN, prev_day=self._local_day())
                self.go(WHEN)
            elif target == DESCRIBE:
                self.state["description"] = None
                self.go(DESCRIBE)
            elif target == PROJECT:
                self.state["project_done"] = False
                self.advance()
            else:
                self.go(OFFSETS)
            self.state["stage_set"] = True
            return False
        parsed = parse_meeting(message.text, self.now, self.zone, content=content())
        said_a_time = not (parsed.status == UNPARSEABLE and parsed.reason == "no_time_words")
        if parsed.offsets_given and not said_a_time:
            self.state["offsets"] = [o.minutes for o in parsed.chosen_offsets(content())]
            return False
        if said_a_time:  # "no, it's at 3pm": the fix itself (a time alone keeps the day)
            day = self._local_day()
            self.read_time(message.text, take_description=False, on_day=date.fromisoformat(day) if day else None)
            if parsed.offsets_given:
                self.state["offsets"] = [o.minutes for o in parsed.chosen_offsets(content())]
            return False
        if message.intent == "deny" or plain in phrases("no_phrases"):
            self.go(FIX)
            self.state["stage_set"] = True
            return False
        self.go(self.stage, note=words("not_understood"))
        self.state["stage_set"] = True
        return False

    def _save(self, outcome: Outcome) -> bool:
        """Store the meeting (or its new time) and say so; a time that has passed meanwhile is asked again."""
        when = self.when
        if when is None or when <= self.now:
            self.state.update(when=None, time_stage=WHEN)
            self.go(WHEN, note=words("past", when=say_when(when, self.zone, self.now, label=self.label)) if when else None)
            self.state["stage_set"] = True
            return False
        if self.state.get("mode") == CHANGE:
            meeting = self.reminders.reschedule(self.champion.id, self.state.get("meeting"), when, now=self.now)
            if meeting is None:
                outcome.say(words("stopped_change"))
                return self._stop(outcome, STOP_NOTHING) is not None
            outcome.say(words("done_change", confirmation=confirmation(meeting, self.now, self.home)), [button("my_reminders")])
            self._stop(outcome, STOP_DONE)
            return True
        meeting = self.reminders.create_meeting(
            self.champion.id,
            self.description,
            when,
            time_zone=self.zone,
            offsets=self.offsets(),
            project_id=self.state.get("project"),
            now=self.now,
        )
        planned = offsets_of(meeting)
        said = confirmation(meeting, self.now, self.home)
        if planned:
            outcome.say(words("done", confirmation=said, offsets=say_offsets(planned)), [button("my_reminders")])
        else:
            outcome.say(words("done_after_only", confirmation=said), [button("my_reminders")])
        self._stop(outcome, STOP_DONE)
        return True

    def _stop(self, outcome: Outcome, reason: str) -> Outcome:
        """End the form for reason."""
        self.state["stop"] = reason
        outcome.stop = reason
        return outcome


_CHANGE_WORDS = re.compile(
    r"\b(?:moved?|re-?schedul\w*|chang(?:e|ed|ing)|shift(?:ed)?|postponed|put\s+back|brought\s+forward"
    r"|now\s+(?:on|at|in)|instead)\b",
    re.IGNORECASE,
)


def wants_change(message: Message) -> bool:
    """True when the message re-times a meeting ("the PRG meeting has moved to Friday", the "New time" button)."""
    if message.entities.get("rm_scope") == "change":
        return True
    return not message.text.startswith("/") and bool(_CHANGE_WORDS.search(message.text))


def _weekday_said(parsed: ParsedTime) -> str:
    """The weekday a "next Thursday" or mismatched-weekday question is about."""
    when = parsed.candidates[0] if parsed.candidates else None
    return when.strftime("%A") if when else ""


def _trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that reminders can't be reached (the database is down)."""
    say_trouble(dispatcher, words("trouble"))


# --- the form's actions --------------------------------------------------------------------------


class ActionSetReminder(Action):
    """Get ready to set (or re-time) a reminder from the message that asked, before reminder_form runs."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_set_reminder"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Read the message; the form then asks whatever is missing."""
        message = read_message(tracker, kind=ReminderMessage)
        try:
            setting = Setting(sender_of(tracker), {})
            setting.start(message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return [FollowupAction("action_listen")]
        if setting.state.get("stop") == STOP_NOTHING:
            dispatcher.utter_message(text=words("list_empty"), buttons=[button("set_one")])
            return [SlotSet(STATE_SLOT, None), FollowupAction("action_listen")]
        return [SlotSet(ANSWER_SLOT, None), SlotSet(REQUESTED_SLOT, None), SlotSet(STATE_SLOT, setting.state)]


class ActionAskRmAnswer(Action):
    """Ask the next question about the reminder (reminder_form calls this whenever it needs rm_answer)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_ask_rm_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Send the question for the current stage, with its buttons."""
        try:
            setting = Setting(sender_of(tracker), get_state(tracker, STATE_SLOT))
            outcome = Outcome()
            setting.ask(outcome)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        outcome.send(dispatcher)
        return [SlotSet(STATE_SLOT, setting.state)]


class ValidateReminderForm(FormValidationAction):
    """Take each message given to reminder_form: answers, choices, fixes, yes, and stopping."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "validate_reminder_form"

    async def validate_rm_answer(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        """Handle one message; keep the form going (rm_answer empty) or stop it (requested_slot None)."""
        if not isinstance(slot_value, str):
            return {}  # the form starting, with action_set_reminder's emptied slot: nothing to do
        message = read_message(tracker, slot_value, kind=ReminderMessage)
        if message.intent == CRISIS_INTENT:  # first, and even if the database is down
            dispatcher.utter_message(response=CRISIS_RESPONSE)
            return {ANSWER_SLOT: None, STATE_SLOT: dict(get_state(tracker, STATE_SLOT), stop=STOP_CRISIS), REQUESTED_SLOT: None}
        try:
            setting = Setting(sender_of(tracker), get_state(tracker, STATE_SLOT))
            outcome = setting.handle(message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return {ANSWER_SLOT: None, STATE_SLOT: dict(get_state(tracker, STATE_SLOT), stop=STOP_TROUBLE), REQUESTED_SLOT: None}
        await outcome.send_all(dispatcher, tracker, domain)
        slots: Dict[Text, Any] = {ANSWER_SLOT: None, STATE_SLOT: setting.state}
        if outcome.stop:
            slots[REQUESTED_SLOT] = None
        return slots


class ActionReminderEnd(Action):
    """After reminder_form stops: "OK, I haven't set a reminder" when they stopped, and a clean state."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_reminder_end"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Say how it ended if nothing has yet, and forget the conversation's state."""
        state = get_state(tracker, STATE_SLOT)
        if state.get("stop") == STOP_CANCELLED:
            key = "stopped_change" if state.get("mode") == CHANGE else "stopped"
            dispatcher.utter_message(text=words(key), buttons=[button("my_reminders")])
        return [SlotSet(STATE_SLOT, None), SlotSet(ANSWER_SLOT, None)]


# --- managing reminders --------------------------------------------------------------------------


def _champion(tracker: Tracker):
    """(champion, reminders repository) for the conversation."""
    plans, reminders = get_repositories()
    return plans.champion_for(sender_of(tracker)), reminders


class ActionListReminders(Action):
    """List the champion's upcoming meetings and their reminders, with buttons to cancel or re-time each."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_list_reminders"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """One line per meeting, soonest first."""
        try:
            champion, reminders = _champion(tracker)
            at = now()
            upcoming = reminders.upcoming(champion.id, at)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        if not upcoming:
            dispatcher.utter_message(text=words("list_empty"), buttons=[button("set_one")])
            return []
        home = home_zone(champion)
        lines = [words("listing")]
        buttons = []
        for meeting in upcoming:
            planned = offsets_of(meeting)
            if planned:
                lines.append(words("list_item", confirmation=confirmation(meeting, at, home), offsets=say_offsets(planned)))
            else:
                lines.append(words("list_item_after_only", confirmation=confirmation(meeting, at, home)))
        for meeting in upcoming[:MAX_MEETING_BUTTONS]:
            label = meeting_label(meeting)
            buttons += [button("change_meeting", label=label, meeting_id=meeting.id),
                        button("cancel_meeting", label=label, meeting_id=meeting.id)]
        if len(upcoming) > 1:
            buttons.append(button("cancel_all"))
        buttons.append(button("set_one"))
        dispatcher.utter_message(text="\n".join(lines), buttons=buttons)
        return []


class ActionCancelReminder(Action):
    """Cancel one meeting's reminders (after checking which) or all of them (after asking)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_cancel_reminder"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Cancel what the button named; for typed requests, check first."""
        message = read_message(tracker, kind=ReminderMessage)
        try:
            champion, reminders = _champion(tracker)
            self._cancel(dispatcher, message, champion.id, reminders, now(), home_zone(champion))
        except SQLAlchemyError:
            _trouble(dispatcher)
        return []

    @staticmethod
    def _cancel(
        dispatcher: CollectingDispatcher,
        message: Message,
        champion_id: int,
        reminders: ReminderRepository,
        at: datetime,
        home: Optional[str] = None,
    ) -> None:
        """The cancelling itself (home: the champion's zone, for naming other zones)."""
        scope = str(message.entities.get("rm_scope") or "")
        upcoming = reminders.upcoming(champion_id, at)
        if scope == "all_confirmed":
            count = reminders.cancel_all(champion_id, at)
            dispatcher.utter_message(text=words("cancelled_all", count=count), buttons=[button("set_one")])
            return
        if not upcoming:
            dispatcher.utter_message(text=words("cancel_none"), buttons=[button("set_one")])
            return
        wants_all = scope == "all" or (not message.text.startswith("/") and re.search(r"\b(all|every|everything)\b", message.plain))
        if wants_all:
            dispatcher.utter_message(text=words("cancel_all_confirm", count=len(upcoming)),
                                     buttons=[button("cancel_all_yes"), button("keep")])
            return
        chosen = reminders.meeting(champion_id, message.entities.get("rm_meeting"))
        if chosen is not None and (scope == "confirmed" or message.text.startswith("/")):
            if reminders.cancel_meeting(champion_id, chosen.id, at):
                dispatcher.utter_message(text=words("cancelled", confirmation=confirmation(chosen, at, home)), buttons=[button("my_reminders")])
            else:
                dispatcher.utter_message(text=words("cancel_none"), buttons=[button("my_reminders")])
            return
        candidates = match_meetings(upcoming, message.text) if not message.text.startswith("/") else []
        if chosen is None and len(candidates) == 1:
            chosen = candidates[0]
        if chosen is None and len(upcoming) == 1:
            chosen = upcoming[0]
        if chosen is not None:
            dispatcher.utter_message(text=words("cancel_confirm", confirmation=confirmation(chosen, at, home)),
                                     buttons=[button("cancel_yes", meeting_id=chosen.id), button("keep")])
            return
        buttons = [button("cancel_meeting", label=meeting_label(m), meeting_id=m.id) for m in upcoming[:MAX_MEETING_BUTTONS]]
        dispatcher.utter_message(text=words("cancel_which"), buttons=buttons + [button("cancel_all"), button("keep")])


class ActionSnoozeReminder(Action):
    """Send a reminder again later: "in 1 hour", "tomorrow morning" (a button, or typed about the latest one)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_snooze_reminder"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Snooze the reminder the button names, or the one sent most recently."""
        message = read_message(tracker, kind=ReminderMessage)
        try:
            champion, reminders = _champion(tracker)
            at = now()
            found = reminders.reminder(champion.id, message.entities.get("rm_reminder")) or reminders.last_handed(champion.id)
            if found is None:
                dispatcher.utter_message(text=words("snooze_none"), buttons=[button("my_reminders")])
                return []
            meeting, reminder = found
            home = home_zone(champion)  # "tomorrow morning" is morning where the champion is now
            said = message.entities.get("rm_snooze") or ("" if message.text.startswith("/") else message.text)
            until = snooze_until(str(said), at, home, content()) if said else None
            if until is None:
                buttons = [
                    button("snooze", title=spec["title"], reminder_id=reminder.id, snooze=spec["snooze"])
                    for spec in (content()["buttons"]["snooze_hour"], content()["buttons"]["snooze_morning"])
                ]
                dispatcher.utter_message(text=words("snooze_when"), buttons=buttons)
                return []
            try:
                reminders.snooze(champion.id, reminder.id, until, now=at)
            except ValueError:
                if until <= at:
                    dispatcher.utter_message(text=words("snooze_gone"))
                else:
                    dispatcher.utter_message(text=words(
                        "snooze_after_start", description=meeting.description,
                        when=say_when(meeting.starts_at, meeting.time_zone, at,
                                      label=time_label(meeting.time_zone, home))))
                return []
            dispatcher.utter_message(text=words("snoozed", day=say_relative_day(until, at, home, label=time_label(home, home))))
        except SQLAlchemyError:
            _trouble(dispatcher)
        return []


class ActionCantAttend(Action):
    """"I can't make it": help the champion give their apologies, and offer to cancel the meeting's reminders."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_cant_attend"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """The apology advice and a draft for the meeting the button (or the message) names."""
        message = read_message(tracker, kind=ReminderMessage)
        try:
            champion, reminders = _champion(tracker)
            at = now()
            chosen = reminders.meeting(champion.id, message.entities.get("rm_meeting"))
            upcoming = reminders.upcoming(champion.id, at)
            if chosen is None and not message.text.startswith("/"):
                matches = match_meetings(upcoming, message.text)
                chosen = matches[0] if len(matches) == 1 else None
            if chosen is None and len(upcoming) == 1:
                chosen = upcoming[0]
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        if chosen is None and upcoming:
            buttons = [
                {"title": meeting_label(m), "payload": f'/cant_attend{{"rm_meeting": "{m.id}"}}'}
                for m in upcoming[:MAX_MEETING_BUTTONS]
            ]
            dispatcher.utter_message(text=words("cant_attend_which"), buttons=buttons)
            return []
        if chosen is None:
            dispatcher.utter_message(text=words("cant_attend_none"))
            return []
        when = say_when(chosen.starts_at, chosen.time_zone, at, label=time_label(chosen.time_zone, home_zone(champion)))
        text = words("cant_attend") + "\n\n" + words("apology_draft", description=chosen.description, when=when)
        buttons = [button("cancel_for_meeting", meeting_id=chosen.id), button("keep")] if chosen.pending else []
        dispatcher.utter_message(text=text, buttons=buttons)
        return []
