"""Setting and managing reminders by chat: the form and actions driven the way Rasa drives them, on a real SQLite file."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk.executor import CollectingDispatcher

from actions.clock import set_clock
from actions.db import use_sessions
from actions import reminders as ra
from tests.champion_data import opted_out
from tests.form_chat import ActionChat, actions_database, nlu_result
from bot.db import make_engine, make_session_factory
from bot.delivery_models import OutboundMessage
from bot.reminder_scheduler import ReminderDispatcher

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday 23 November 2026, 10am in London
DOMAIN: Dict[str, Any] = {
    "forms": {"reminder_form": {"required_slots": ["rm_answer"]}},
    "slots": {
        "rm_answer": {"type": "text", "mappings": [{"type": "from_text", "conditions": [{"active_loop": "reminder_form", "requested_slot": "rm_answer"}]}]},
        "rm_state": {"type": "any", "mappings": [{"type": "custom"}]},
    },
    "responses": {"utter_crisis": [{"text": "crisis"}]},
}
SENDER = "web-7d1c-champion"
FORM_INTENTS = ("set_reminder",)
SINGLE_ACTIONS = {
    "list_reminders": ra.ActionListReminders,
    "cancel_reminder": ra.ActionCancelReminder,
    "snooze_reminder": ra.ActionSnoozeReminder,
    "cant_attend": ra.ActionCantAttend,
}


@pytest.fixture
def db(tmp_path: Path):
    """A migrated SQLite app database used by the actions, with the clock pinned to NOW."""
    with actions_database(tmp_path, NOW) as sessions:
        yield sessions


def parse(text: str, intent: Optional[str], entities: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """What NLU would make of text (a button payload is certain)."""
    return nlu_result(text, intent, 0.9, entities)


class Chat(ActionChat):
    """One champion's conversation, run the way Rasa runs reminder_form and the reminder actions."""

    def __init__(self, sender: str = SENDER) -> None:
        """A conversation with no slots set yet."""
        super().__init__(sender, "reminder_form", DOMAIN, ["rm_answer", "rm_state"])

    async def send(self, text: str, intent: Optional[str] = None, **entities: str) -> List[Dict[str, Any]]:
        """The champion sends (or taps) text; returns every message the bot sends back."""
        latest = parse(text, intent, entities)
        name = latest["intent"]["name"]
        if not self.form_active:
            if name in FORM_INTENTS:
                said, events = await self.run(ra.ActionSetReminder(), latest)
                if any(e.get("event") == "followup" for e in events):
                    return said
                self.form_active = True
                # As the form starts, Rasa runs the validation with the emptied slot: it must change nothing.
                start_events = [{"event": "user", "text": text}, {"event": "action", "name": "action_set_reminder"}] + events
                dispatcher = CollectingDispatcher()
                validated = await ra.ValidateReminderForm().run(dispatcher, self.tracker(latest, start_events), DOMAIN)
                assert dispatcher.messages == [] and all(e.get("name") != "rm_state" for e in validated)
                asked, _ = await self.run(ra.ActionAskRmAnswer(), latest)
                return said + asked
            if name in SINGLE_ACTIONS:
                said, _ = await self.run(SINGLE_ACTIONS[name](), latest)
                return said
            raise AssertionError(f"no rule for {name} outside the form")
        return await self.form_turn(latest, "rm_answer", ra.ValidateReminderForm(), ra.ActionReminderEnd(),
                                    ra.ActionAskRmAnswer())


def texts(messages: List[Dict[str, Any]]) -> str:
    """Everything the bot said, as one string."""
    return "\n".join(m.get("text") or m.get("response") or "" for m in messages)


def buttons(messages: List[Dict[str, Any]]) -> List[Dict[str, str]]:
    """Every button offered."""
    return [b for m in messages for b in m.get("buttons") or []]


def titles(messages: List[Dict[str, Any]]) -> List[str]:
    """Every button title offered."""
    return [b["title"] for b in buttons(messages)]


def tap(messages: List[Dict[str, Any]], title: str) -> str:
    """The payload of the button called title."""
    found = [b["payload"] for b in buttons(messages) if b["title"] == title]
    assert found, (title, titles(messages))
    return found[0]


def stored(sessions) -> List[Any]:
    """The champion's upcoming meetings as stored."""
    plans, reminders = ra.get_repositories()
    return reminders.upcoming(plans.champion_for(SENDER).id, NOW)


# --- setting ------------------------------------------------------------------------------------


async def test_set_confirm_and_store(db):
    """One message with everything: the assistant confirms in words, and stores it only after "yes"."""
    chat = Chat()
    said = await chat.send("remind me about the PRG meeting on Thursday at 2pm", "set_reminder")
    assert "Thursday 26 November at 2:00pm: the PRG meeting" in texts(said)
    assert "a day before and an hour before" in texts(said)
    assert titles(said)[:2] == ["Yes, set it", "Change the time"]
    assert stored(db) == []
    said = await chat.send(tap(said, "Yes, set it"))
    assert "Reminder set: Thursday 26 November at 2:00pm: the PRG meeting" in texts(said)
    assert not chat.form_active and chat.slots["rm_state"] is None
    [meeting] = stored(db)
    assert meeting.starts_at == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    assert [r.kind for r in meeting.reminders] == ["day_before", "hour_before", "after_meeting"]


async def test_next_tuesday_is_asked_not_guessed(db):
    """"next tues 10.30" said on a Monday could be either Tuesday: both are offered, the champion picks."""
    chat = Chat()
    said = await chat.send("patient panel next tues 10.30", "set_reminder")
    assert '"Next Tuesday" could mean this week or next week' in texts(said)
    assert titles(said)[:2] == ["Tuesday 24 November at 10:30am", "Tuesday 1 December at 10:30am"]
    said = await chat.send(tap(said, "Tuesday 1 December at 10:30am"))
    assert "Tuesday 1 December at 10:30am: patient panel" in texts(said)
    await chat.send("yes", "affirm")
    assert stored(db)[0].starts_at == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


async def test_morning_or_afternoon_is_asked(db):
    """"at 2" gets "morning or afternoon?"; typing the answer works as well as tapping."""
    chat = Chat()
    said = await chat.send("PRG meeting Thursday at 2", "set_reminder")
    assert "morning or the afternoon" in texts(said)
    said = await chat.send("2pm")
    assert "Thursday 26 November at 2:00pm: PRG meeting" in texts(said)


async def test_missing_time_and_missing_name_are_asked_for(db):
    """A day without a time asks for the time on that day; a time without a name asks for the name."""
    chat = Chat()
    said = await chat.send("remind me about the stroke project meeting on Thursday", "set_reminder")
    assert "What time is the stroke project meeting on Thursday 26 November?" in texts(said)
    said = await chat.send("14:00")
    assert "Thursday 26 November at 2:00pm: the stroke project meeting" in texts(said)
    other = Chat("web-other")
    said = await other.send("remind me on Friday at 10am", "set_reminder")
    assert "What's the meeting called?" in texts(said)
    said = await other.send("Patient panel 😀")
    assert "Friday 27 November at 10:00am: Patient panel 😀" in texts(said)


async def test_the_set_a_reminder_button_asks_what_and_when(db):
    """"Set a reminder" with nothing else asks for the meeting and its time in one question."""
    chat = Chat()
    said = await chat.send("/set_reminder")
    assert "Which meeting, and when is it?" in texts(said)
    said = await chat.send("the first Monday of next month at 6pm carers forum")
    assert "Monday 7 December at 6:00pm: carers forum" in texts(said)
    typed = Chat("web-typed")
    said = await typed.send("set a reminder", "set_reminder")
    assert "Which meeting, and when is it?" in texts(said) and "couldn't find" not in texts(said)


async def test_a_time_in_the_past_gets_a_question(db):
    """A time already gone is said back, and the time is asked again."""
    chat = Chat()
    said = await chat.send("PRG meeting today at 9am", "set_reminder")
    assert "Monday 23 November at 9:00am has already gone." in texts(said)
    assert "When is PRG meeting?" in texts(said)
    said = await chat.send("tomorrow at 9am")
    assert "Tuesday 24 November at 9:00am: PRG meeting" in texts(said)


async def test_unreadable_answers_are_asked_again(db):
    """Junk, markup, emoji and huge messages get the question again, never an error."""
    chat = Chat()
    await chat.send("/set_reminder")
    await chat.send("patient panel")
    for junk in ["🙂🙂", "<script>alert(1)</script>", "x" * 5000, "'; DROP TABLE meetings; --"]:
        said = await chat.send(junk)
        assert "couldn't find a date and time" in texts(said) and chat.form_active
    said = await chat.send("Friday 10am")
    assert "Friday 27 November at 10:00am: patient panel" in texts(said)


async def test_fixing_before_confirming(db):
    """"No, it's at 3pm" fixes the time; "Change the name" and "also a week before" fix the rest."""
    chat = Chat()
    await chat.send("PRG meeting 10/12 at 2pm", "set_reminder")
    said = await chat.send("no, it's at 3pm", "deny")
    assert "Thursday 10 December at 3:00pm: PRG meeting" in texts(said)
    said = await chat.send("Change the name")
    assert "What's the meeting called?" in texts(said)
    said = await chat.send("the Patient Reference Group")
    assert "Thursday 10 December at 3:00pm: the Patient Reference Group" in texts(said)
    said = await chat.send("also a week before")
    assert "I'll remind you a week before and a day before and an hour before" in texts(said)
    said = await chat.send("no", "deny")
    assert "What would you like to change?" in texts(said)
    said = await chat.send("Change the reminders")
    assert "When shall I remind you?" in texts(said)
    said = await chat.send("2 hours before")
    assert "I'll remind you 2 hours before, and ask how it went afterwards" in texts(said)
    await chat.send("Yes, set it", "affirm")
    [meeting] = stored(db)
    assert meeting.description == "the Patient Reference Group"
    assert meeting.starts_at == datetime(2026, 12, 10, 15, 0, tzinfo=UTC)
    assert [(r.kind, r.offset_minutes) for r in meeting.reminders] == [("custom", 120), ("after_meeting", -180)]


async def test_chosen_offsets_in_the_first_message(db):
    """"remind me 2 hours before" / "also a week before" in the first message are kept."""
    chat = Chat()
    said = await chat.send("patient panel on Friday at 10am, also a week before", "set_reminder")
    # A week before Friday 27 November is already gone (today is the 23rd): only the others are set.
    assert "I'll remind you a day before and an hour before" in texts(said)
    chat = Chat("web-two")
    said = await chat.send("remind me about the PRG meeting on 10/12 at 2pm, remind me 2 hours before", "set_reminder")
    assert "Thursday 10 December at 2:00pm: the PRG meeting" in texts(said) and "2 hours before" in texts(said)


async def test_which_project_is_asked_when_there_are_several(db):
    """With two projects the assistant asks which one; the day-before reminder will recall its role and aim."""
    plans, _ = ra.get_repositories()
    champion = plans.champion_for(SENDER).id
    plans.create_project(champion, "Stroke clinic", "parts")
    plans.create_project(champion, "Maternity voices", "parts")
    chat = Chat()
    said = await chat.send("stroke project meeting 30/11 at 14:00", "set_reminder")
    assert "Which of your projects is stroke project meeting for?" in texts(said)
    assert {"Stroke clinic", "Maternity voices", "None of these"} <= set(titles(said))
    said = await chat.send("Stroke clinic")
    assert 'your project "Stroke clinic"' in texts(said)
    await chat.send("yes", "affirm")
    assert plans.project(champion, stored(db)[0].project_id).name == "Stroke clinic"


async def test_cancel_midway_and_crisis_stop_the_form(db):
    """"Cancel" stops without storing anything; a crisis message gets the crisis reply at once."""
    chat = Chat()
    await chat.send("PRG meeting Thursday at 2", "set_reminder")
    said = await chat.send("Cancel")
    assert "OK, I haven't set a reminder." in texts(said) and not chat.form_active
    await chat.send("PRG meeting Thursday at 2pm", "set_reminder")
    said = await chat.send("I want to end my life", "crisis")
    assert [m.get("response") for m in said if m.get("response")] == ["utter_crisis"] and not chat.form_active
    assert stored(db) == []


async def test_stop_team_messages_mid_reminder_is_done_and_the_question_comes_again(db):
    """"Stop messages from the team" while setting a reminder stops them at once; the reminder carries on."""
    chat = Chat()
    asked = await chat.send("PRG meeting Thursday", "set_reminder")
    said = await chat.send("stop messages from the team", "opt_out_messages")
    assert [m.get("response") for m in said if m.get("response")] == ["utter_opted_out"]
    assert opted_out(SENDER) and chat.form_active
    assert texts(said).endswith(texts(asked).split("\n")[-1])  # the same question again
    said = await chat.send("2pm")
    assert "Thursday 26 November at 2:00pm: PRG meeting" in texts(said)  # not "stop messages from the team"


async def test_clocks_going_back_asks_which_half_past_one(db):
    """1:30am on the night the clocks go back happens twice: both are offered with their zones."""
    set_clock(lambda: datetime(2026, 10, 23, 11, 0, tzinfo=UTC))
    chat = Chat()
    said = await chat.send("night shift forum Sunday at 1:30am", "set_reminder")
    assert "the clocks go back" in texts(said).lower()
    assert titles(said)[:2] == ["Sunday 25 October at 1:30am BST", "Sunday 25 October at 1:30am GMT"]
    said = await chat.send(tap(said, "Sunday 25 October at 1:30am GMT"))
    assert "Sunday 25 October at 1:30am GMT: night shift forum" in texts(said)


# --- listing, cancelling, changing --------------------------------------------------------------


async def set_two(chat: Chat) -> None:
    """Set the PRG meeting (Thursday 2pm) and the patient panel (Friday 10am)."""
    for text in ("PRG meeting Thursday at 2pm", "patient panel Friday at 10am"):
        await chat.send(text, "set_reminder")
        await chat.send("yes", "affirm")


async def test_list_upcoming_reminders(db):
    """The list names each meeting in words with its reminders, soonest first, with buttons to change or cancel."""
    chat = Chat()
    said = await chat.send("/list_reminders")
    assert "You have no reminders set" in texts(said)
    await set_two(chat)
    said = await chat.send("/list_reminders")
    lines = texts(said).splitlines()
    assert lines[1] == "• Thursday 26 November at 2:00pm: PRG meeting (reminders: a day before and an hour before)"
    assert lines[2].startswith("• Friday 27 November at 10:00am: patient panel")
    assert "Cancel: PRG meeting, Thu 26 Nov 2:00pm" in titles(said) and "Cancel them all" in titles(said)


async def test_cancel_one_by_button_or_by_name_and_all(db):
    """A button cancels at once; typed requests are checked first; "all" asks before cancelling everything."""
    chat = Chat()
    await set_two(chat)
    said = await chat.send("cancel the reminder for the PRG meeting", "cancel_reminder")
    assert "Cancel the reminders for Thursday 26 November at 2:00pm: PRG meeting?" in texts(said)
    said = await chat.send(tap(said, "Yes, cancel it"))
    assert "Cancelled the reminders for Thursday 26 November at 2:00pm: PRG meeting." in texts(said)
    assert [m.description for m in stored(db)] == ["patient panel"]
    await chat.send("PRG meeting Thursday at 2pm", "set_reminder")
    await chat.send("yes", "affirm")
    said = await chat.send("cancel all my reminders", "cancel_reminder")
    assert "all 2 of your upcoming meetings" in texts(said)
    said = await chat.send(tap(said, "Yes, cancel them all"))
    assert "Cancelled the reminders for all your upcoming meetings (2)." in texts(said)
    assert stored(db) == []


async def test_nobody_cancels_someone_elses_reminders(db):
    """A button payload naming another champion's meeting cancels nothing."""
    owner = Chat()
    await set_two(owner)
    meeting_id = stored(db)[0].id
    intruder = Chat("tg-999")
    said = await intruder.send(f'/cancel_reminder{{"rm_meeting": "{meeting_id}", "rm_scope": "confirmed"}}')
    assert "nothing to cancel" in texts(said)
    assert len(stored(db)) == 2


async def test_change_the_time(db):
    """The "New time" button asks for the new time; a typed "has moved to" goes straight to the check."""
    chat = Chat()
    await set_two(chat)
    said = await chat.send(tap(await chat.send("/list_reminders"), "New time: PRG meeting, Thu 26 Nov 2:00pm"))
    assert "When is PRG meeting now?" in texts(said)
    said = await chat.send("Friday at 3pm")
    assert "Friday 27 November at 3:00pm: PRG meeting" in texts(said) and "Your reminders will move with it" in texts(said)
    said = await chat.send("Yes, change it", "affirm")
    assert "Changed: Friday 27 November at 3:00pm: PRG meeting." in texts(said)
    said = await chat.send("the patient panel has moved to Monday 30/11 at 11am", "set_reminder")
    assert "Monday 30 November at 11:00am: patient panel" in texts(said)
    await chat.send("yes", "affirm")
    panel = [m for m in stored(db) if m.description == "patient panel"][0]
    assert panel.starts_at == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)
    assert panel.reminders[0].due_at == datetime(2026, 11, 29, 11, 0, tzinfo=UTC)


async def test_a_moved_meeting_with_nothing_set_is_a_new_reminder(db):
    """"The PRG meeting has moved to Friday at 3pm" with nothing set yet simply sets a reminder."""
    chat = Chat()
    said = await chat.send("the PRG meeting has moved to Friday at 3pm", "set_reminder")
    assert "Friday 27 November at 3:00pm" in texts(said) and "Shall I set that?" in texts(said)


async def test_change_which_meeting_or_another_one(db):
    """With several meetings and no clue which moved, the champion picks one, or says it's another meeting."""
    chat = Chat()
    await set_two(chat)
    said = await chat.send("my meeting has been rescheduled to Wednesday at 4pm", "set_reminder")
    assert "Which meeting has changed?" in texts(said)
    assert titles(said)[:3] == ["PRG meeting, Thu 26 Nov 2:00pm", "patient panel, Fri 27 Nov 10:00am", "It's another meeting"]
    said = await chat.send("patient panel, Fri 27 Nov 10:00am")
    assert "Wednesday 25 November at 4:00pm: patient panel" in texts(said) and "move with it" in texts(said)
    await chat.send("Cancel")
    said = await chat.send("the board meeting has been moved to Tuesday at 9am", "set_reminder")
    said = await chat.send(tap(said, "It's another meeting"))
    assert "Tuesday 24 November at 9:00am" in texts(said) and "Shall I set that?" in texts(said)


# --- snoozing and "can't make it" -------------------------------------------------------------


async def test_snooze_a_reminder_by_a_tap_or_by_typing(db):
    """The reminder's own button snoozes it; "remind me again in an hour" snoozes the latest one."""
    chat = Chat()
    await chat.send("PRG meeting Thursday at 2pm", "set_reminder")
    await chat.send("yes", "affirm")
    _, reminders = ra.get_repositories()
    wednesday = datetime(2026, 11, 25, 14, 0, 5, tzinfo=UTC)
    ReminderDispatcher(db).run_once(wednesday)
    with db() as session:
        sent = session.query(OutboundMessage).one()
    set_clock(lambda: wednesday)
    said = await chat.send(tap([{"buttons": sent.buttons}], "Remind me in 1 hour"))
    assert "OK, I'll remind you again today at 3:00pm." in texts(said)
    meeting = stored(db)[0]
    assert meeting.reminders[0].status == "pending" and meeting.reminders[0].generation == 1
    ReminderDispatcher(db).run_once(wednesday + timedelta(hours=1))
    set_clock(lambda: wednesday + timedelta(hours=1))
    said = await chat.send("remind me again in 2 hours", "snooze_reminder")
    assert "OK, I'll remind you again today at 5:00pm." in texts(said)
    ReminderDispatcher(db).run_once(wednesday + timedelta(hours=3))
    said = await chat.send("remind me again on Friday at 9am", "snooze_reminder")
    assert "That would be after PRG meeting starts (Thursday 26 November at 2:00pm)" in texts(said)
    said = await chat.send("snooze", "snooze_reminder")
    assert "When shall I remind you again?" in texts(said)
    assert titles(said) == ["Remind me in 1 hour", "Remind me tomorrow morning"]


async def test_cant_make_it_helps_send_apologies(db):
    """The reminder's "I can't make it" button: why apologies matter, a draft to send, and an offer to cancel."""
    chat = Chat()
    await chat.send("PRG meeting Thursday at 2pm", "set_reminder")
    await chat.send("yes", "affirm")
    meeting = stored(db)[0]
    said = await chat.send(f'/cant_attend{{"rm_meeting": "{meeting.id}"}}')
    assert "giving your apologies" in texts(said)
    assert "I can't attend PRG meeting on Thursday 26 November at 2:00pm" in texts(said)
    said = await chat.send(tap(said, "Cancel its reminders"))
    assert "Cancelled the reminders" in texts(said)
    said = await chat.send("I can't make the panel", "cant_attend")
    assert "let the meeting's organiser or your project lead know" in texts(said).lower()


async def test_trouble_with_the_database_is_said_kindly(db, tmp_path):
    """If the app database can't be reached, the champion hears so and nothing breaks."""
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}?mode=ro")
    sessions = make_session_factory(broken)
    use_sessions(sessions)
    chat = Chat()
    said = await chat.send("/list_reminders")
    assert "can't reach your reminders" in texts(said)
    broken.dispose()
