"""Champions' time zones: reading places, saving the zone by chat, and reminders read and said in it."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from sqlalchemy import select

from actions import reminders as ra
from actions import time_zones as tza
from actions.clock import set_clock
from tests.form_chat import ActionChat, actions_database, nlu_result
from actions.db import use_sessions
from bot.db import make_engine, make_session_factory
from bot.delivery_models import OutboundMessage
from bot.models import Champion
from bot.reminder_scheduler import ReminderDispatcher
from bot.reminder_times import AMBIGUOUS, OK, parse_meeting, say_confirmation
from bot.repository import ChatRepository
from bot.time_zones import (
    CHOOSE,
    FOUND,
    MAYBE,
    NONE,
    UNKNOWN,
    TimeZoneRepository,
    champion_zone,
    label,
    load_content,
    read_place,
    time_label,
    valid_zone,
)
from test_reminders import Chat as ReminderChat
from test_reminders import tap, texts, titles

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # Monday 23 November 2026: 10:00am in London, 11:00am in Paris
SENDER = "web-7d1c-champion"  # the same champion as test_reminders.Chat
DOMAIN: Dict[str, Any] = {
    "forms": {"time_zone_form": {"required_slots": ["tz_answer"]}},
    "slots": {
        "tz_answer": {"type": "text", "mappings": [{"type": "from_text", "conditions": [{"active_loop": "time_zone_form", "requested_slot": "tz_answer"}]}]},
        "tz_state": {"type": "any", "mappings": [{"type": "custom"}]},
    },
    "responses": {"utter_crisis": [{"text": "crisis"}]},
}


# --- reading a place ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, zone",
    [
        ("my time zone is Europe/Paris", "Europe/Paris"),
        ("america/new_york", "America/New_York"),
        ("I live in Spain now", "Europe/Madrid"),
        ("I'm in New York", "America/New_York"),
        ("we live in Tenerife now", "Atlantic/Canary"),
        ("I'm in the U.K.!", "Europe/London"),
        ("keep UK time", "Europe/London"),
        ("BST", "Europe/London"),
        ("PST", "America/Los_Angeles"),
        ("CET", "CET"),
        ("UTC", "UTC"),
        ("New York, USA", "America/New_York"),
        ("I live in New South Wales", "Australia/Sydney"),
        ("<b>Paris</b>", "Europe/Paris"),
        ("Paris 🇫🇷", "Europe/Paris"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ],
)
def test_places_and_zones_people_type(text, zone):
    """IANA names, countries, cities and abbreviations are read as one zone."""
    reading = read_place(text)
    assert (reading.status, reading.zones) == (FOUND, (zone,))


@pytest.mark.parametrize(
    "text, zones",
    [
        ("I'm in the USA", ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles")),
        ("IST", ("Europe/Dublin", "Asia/Kolkata", "Asia/Jerusalem")),
        ("GMT", ("Europe/London", "UTC")),
        ("Australia", ("Australia/Sydney", "Australia/Brisbane", "Australia/Adelaide", "Australia/Perth")),
        ("I moved from London to Paris", ("Europe/London", "Europe/Paris")),
    ],
)
def test_several_zones_are_a_question_never_a_guess(text, zones):
    """A country with several zones, an abbreviation used for several, or two places: the champion is asked."""
    reading = read_place(text)
    assert reading.status == CHOOSE and reading.zones == zones and reading.question


def test_near_spellings_are_offered_not_taken():
    """"Frnace" and "new yrok" are offered back as a question, never saved as they are."""
    assert (read_place("Frnace").status, read_place("Frnace").zones, read_place("Frnace").place) == (MAYBE, ("Europe/Paris",), "france")
    assert read_place("I'm in new yrok").zones == ("America/New_York",)
    assert read_place("I'm in new yrok").status == MAYBE


@pytest.mark.parametrize(
    "text",
    ["I live in Narnia", "Europe/Nowhere", "🇫🇷", "🙂🙂🙂", "Париж", "<script>alert(1)</script>",
     "'; DROP TABLE champions; --", "x" * 5000, "home"],
)
def test_unknown_places_and_junk_are_unknown(text):
    """Places we don't know, other scripts, emoji, markup, injection strings and huge messages name no zone."""
    assert read_place(text).status == UNKNOWN


def test_no_place_named():
    """"change my time zone" asks to change it; "what time zone am I in?" only asks what it is."""
    assert read_place("change my time zone").status == NONE and read_place("change my time zone").wants_change
    assert read_place("what time zone am I in?").status == NONE and not read_place("what time zone am I in?").wants_change
    assert read_place("").status == NONE


def test_the_content_file_names_only_real_zones():
    """Every zone in knowledge/time_zones.yml is one zoneinfo knows; labels fall back to the zone's own name."""
    content = load_content()
    assert content.default == "Europe/London"
    zones = set(content.places.values()) | {z for a in content.ambiguous.values() for z in a.zones} | {z for _, z in content.common}
    assert all(valid_zone(z) == z for z in zones)
    assert label("Europe/Paris") == "Paris time" and label("Europe/London") == "UK time"
    assert label("America/Argentina/Buenos_Aires") == "Buenos Aires time"
    assert valid_zone("europe/paris") == "Europe/Paris"
    assert valid_zone("../../etc/passwd") is None and valid_zone("Europe") is None and valid_zone("x" * 100) is None
    assert champion_zone(None) == champion_zone("Not/AZone") == "Europe/London"
    assert time_label("Europe/London", "Europe/London") is None
    assert time_label("Europe/London", "Europe/Paris") == "UK time"
    assert time_label("Europe/Paris", "Europe/Paris") == "Paris time"


# --- the same words in two zones ----------------------------------------------------------------


def test_the_same_words_mean_different_instants_in_different_zones():
    """"Thursday at 2pm" is 2pm where the champion is: 14:00 UTC in London, 13:00 UTC in Paris, 19:00 UTC in New York."""
    london = parse_meeting("PRG meeting Thursday at 2pm", NOW, "Europe/London")
    paris = parse_meeting("PRG meeting Thursday at 2pm", NOW, "Europe/Paris")
    new_york = parse_meeting("PRG meeting Thursday at 2pm", NOW, "America/New_York")
    assert london.when_utc == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    assert paris.when_utc == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    assert new_york.when_utc == datetime(2026, 11, 26, 19, 0, tzinfo=UTC)
    assert paris.time_zone == "Europe/Paris"


def test_when_the_us_and_the_uk_change_their_clocks_on_different_dates():
    """March 2027: New York goes forward on 14 March, the UK and France on 28 March, so the gap is 5, 4, then 5 hours."""
    now = datetime(2027, 3, 8, 12, 0, tzinfo=UTC)  # Monday 8 March 2027
    expected = {
        # day: (London UTC hour, New York UTC hour, Paris UTC hour) for 2pm local
        "Friday 12 March at 2pm": (14, 19, 13),
        "Monday 15 March at 2pm": (14, 18, 13),
        "Monday 29 March at 2pm": (13, 18, 12),
    }
    for words, (london, new_york, paris) in expected.items():
        got = [parse_meeting(words, now, z).when_utc.hour for z in ("Europe/London", "America/New_York", "Europe/Paris")]
        assert got == [london, new_york, paris], words
    # 2:30am on 14 March doesn't happen in New York (the clocks skip it), but does in London.
    assert parse_meeting("14/3 at 2.30am", now, "America/New_York").status == AMBIGUOUS
    assert parse_meeting("14/3 at 2.30am", now, "America/New_York").reason == "clock_gap"
    assert parse_meeting("14/3 at 2.30am", now, "Europe/London").status == OK
    # and 1:30am on 28 March doesn't happen in London, but does in New York.
    assert parse_meeting("28/3 at 1.30am", now, "Europe/London").reason == "clock_gap"
    assert parse_meeting("28/3 at 1.30am", now, "America/New_York").when_utc == datetime(2027, 3, 28, 5, 30, tzinfo=UTC)


def test_confirmation_names_the_zone_when_given_a_label():
    """"Thursday 26 November at 2:00pm Paris time: the PRG meeting"."""
    instant = datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    said = say_confirmation(instant, "the PRG meeting", "Europe/Paris", NOW, label="Paris time")
    assert said == "Thursday 26 November at 2:00pm Paris time: the PRG meeting"


# --- the database -------------------------------------------------------------------------------


def test_repository_saves_and_reads_the_zone(engine):
    """A champion's zone is the default until set; only real zones are saved (SQLite and PostgreSQL)."""
    sessions = make_session_factory(engine)
    champion = ChatRepository(sessions).get_or_create_champion("web", "tz-1")
    zones = TimeZoneRepository(sessions)
    assert zones.get(champion.id) == "Europe/London"
    assert zones.set(champion.id, "europe/paris") == "Europe/Paris"
    assert zones.get(champion.id) == "Europe/Paris"
    with pytest.raises(ValueError):
        zones.set(champion.id, "Mars/Olympus_Mons")
    with pytest.raises(LookupError):
        zones.set(champion.id + 999, "Europe/Paris")
    assert zones.get(champion.id) == "Europe/Paris"


# --- setting it by chat -------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path):
    """A migrated SQLite app database used by the time zone and reminder actions, with the clock pinned to NOW."""
    with actions_database(tmp_path, NOW) as sessions:
        yield sessions


def parse(text: str, intent: Optional[str], entities: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """What NLU would make of text (a button payload is certain)."""
    return nlu_result(text, intent, 0.9, entities)


class ZoneChat(ActionChat):
    """One champion's conversation, run the way Rasa runs time_zone_form."""

    def __init__(self, sender: str = SENDER) -> None:
        """No slots set yet."""
        super().__init__(sender, "time_zone_form", DOMAIN, ["tz_answer", "tz_state"])

    async def send(self, text: str, intent: Optional[str] = None, **entities: str) -> List[Dict[str, Any]]:
        """The champion sends (or taps) text; returns every message sent back."""
        latest = parse(text, intent, entities)
        if not self.form_active:
            assert latest["intent"]["name"] == "set_time_zone", "outside the form only set_time_zone starts it"
        else:
            self.slots["tz_answer"] = text
        said = await self.said(tza.ValidateTimeZoneForm(), latest)
        if self.slots["requested_slot"] is None and (self.form_active or self.slots["tz_state"].get("stop")):
            self.form_active = False
            return said + await self.said(tza.ActionTimeZoneEnd(), latest)
        self.form_active = True
        self.slots["requested_slot"] = "tz_answer"
        return said + await self.said(tza.ActionAskTzAnswer(), latest)


def saved_zone(sessions, sender: str = SENDER) -> Optional[str]:
    """What champions.time_zone holds for the champion."""
    with sessions() as session:
        return session.execute(select(Champion.time_zone).where(Champion.external_id == sender.split("-", 1)[1])).scalar_one_or_none()


async def test_a_zone_in_the_first_message_is_saved_and_confirmed_with_the_time_there(db):
    """"my time zone is Europe/Paris": saved at once, confirmed in words with the time in Paris now."""
    chat = ZoneChat()
    said = await chat.send("my time zone is Europe/Paris", "set_time_zone")
    assert texts(said) == "Done: I'll use Paris time (it's 11:00am there now)."
    assert not chat.form_active and chat.slots["tz_state"] is None
    assert saved_zone(db) == "Europe/Paris"
    said = await chat.send("I'm in New York", "set_time_zone")
    assert "I'll use New York time (it's 5:00am there now)" in texts(said)
    assert saved_zone(db) == "America/New_York"


async def test_change_without_a_place_asks_with_buttons_then_a_tap_saves(db):
    """"change my time zone" shows the zone in use and asks where, with common choices and "Keep UK time"."""
    chat = ZoneChat()
    said = await chat.send("change my time zone", "set_time_zone")
    assert "I'm using UK time at the moment (it's 10:00am there now). Which country or city are you in?" in texts(said)
    assert titles(said) == ["Keep UK time", "Ireland", "Spain", "France", "Portugal", "Poland"]
    assert chat.form_active
    said = await chat.send(tap(said, "Spain"))
    assert texts(said) == "Done: I'll use Spanish time (it's 11:00am there now)."
    assert saved_zone(db) == "Europe/Madrid" and not chat.form_active
    said = await chat.send("set my timezone", "set_time_zone")
    assert titles(said)[:2] == ["Keep Spanish time", "UK"]
    said = await chat.send(tap(said, "Keep Spanish time"))
    assert texts(said) == "OK, I'll keep using Spanish time (it's 11:00am there now)."


async def test_what_time_zone_am_i_in_only_shows_it(db):
    """A question shows the zone in use and how to change it; nothing changes and the form doesn't wait."""
    chat = ZoneChat()
    said = await chat.send("what time zone am I in?", "set_time_zone")
    assert "I'm using UK time for your reminders (it's 10:00am there now)" in texts(said)
    assert "Somewhere else" in titles(said) and not chat.form_active
    assert saved_zone(db) is None
    said = await chat.send(tap(said, "Somewhere else"))
    assert "Which country or city are you in?" in texts(said) and chat.form_active
    said = await chat.send("Lisbon")
    assert "I'll use Portugal time (it's 10:00am there now)" in texts(said)


async def test_several_zones_are_asked_about_and_a_typed_city_answers(db):
    """"I'm in the USA" asks which zone (a button each); typing a city answers it."""
    chat = ZoneChat()
    said = await chat.send("I'm in the USA", "set_time_zone")
    assert "The USA has several time zones" in texts(said)
    assert titles(said) == ["New York time", "Chicago time", "Denver time", "Arizona time", "Los Angeles time", "Keep UK time"]
    assert saved_zone(db) is None
    said = await chat.send("Chicago")
    assert "I'll use Chicago time (it's 4:00am there now)" in texts(said)
    assert saved_zone(db) == "America/Chicago"


async def test_a_near_spelling_is_checked_first(db):
    """"Frnace" gets "Did you mean France (Paris time)?"; yes saves it, no asks where instead."""
    chat = ZoneChat()
    said = await chat.send("I live in Frnace", "set_time_zone")
    assert "Did you mean France (Paris time)?" in texts(said) and saved_zone(db) is None
    said = await chat.send("yes", "affirm")
    assert "I'll use Paris time" in texts(said) and saved_zone(db) == "Europe/Paris"
    other = ZoneChat("web-other")
    await other.send("my time zone is pairs", "set_time_zone")
    said = await other.send("no", "deny")
    assert "Which country or city are you in?" in texts(said) and other.form_active


async def test_unknown_places_get_a_clear_question_then_the_zone_is_kept(db):
    """A place we don't know is never guessed: asked again once, then the zone in use stays."""
    chat = ZoneChat()
    said = await chat.send("I live in Narnia now", "set_time_zone")
    assert "I don't know the time zone for that" in texts(said) and chat.form_active
    assert "Keep UK time" in titles(said)
    said = await chat.send("Narnia")
    assert "I've left it as UK time" in texts(said) and not chat.form_active
    assert saved_zone(db) is None


@pytest.mark.parametrize("junk", ["🇫🇷", "   ", "x" * 5000, "<script>alert(1)</script>", "'; DROP TABLE champions; --", "Париж"])
async def test_junk_replies_are_asked_again_and_nothing_breaks(db, junk):
    """Emoji, empty, huge, markup, injection strings and other scripts: the question again, nothing saved."""
    chat = ZoneChat()
    await chat.send("change my time zone", "set_time_zone")
    said = await chat.send(junk)
    assert "Which country or city are you in?" in texts(said) and chat.form_active
    said = await chat.send("Dublin")
    assert "I'll use Irish time" in texts(said)
    assert saved_zone(db) == "Europe/Dublin"


async def test_cancel_and_crisis_stop_the_question(db):
    """"cancel" keeps the zone in use; a crisis message gets the crisis reply first."""
    chat = ZoneChat()
    await chat.send("change my time zone", "set_time_zone")
    said = await chat.send("cancel", "deny")
    assert texts(said) == "OK, I've left it as UK time." and not chat.form_active
    await chat.send("change my time zone", "set_time_zone")
    said = await chat.send("I want to end my life", "crisis")
    assert said[0].get("response") == "utter_crisis" and not chat.form_active
    assert saved_zone(db) is None


async def test_trouble_with_the_database_is_said_kindly(db, tmp_path):
    """If the app database can't be reached, the champion hears so and the form stops."""
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}?mode=ro")
    use_sessions(make_session_factory(broken))
    chat = ZoneChat()
    said = await chat.send("my time zone is Europe/Paris", "set_time_zone")
    assert "couldn't save that just now" in texts(said) and not chat.form_active


# --- reminders in the champion's zone -----------------------------------------------------------


async def test_a_reminder_set_after_changing_zone_is_read_stored_and_said_in_that_zone(db):
    """After "I live in France now", "Thursday at 2pm" is 2pm Paris time, stored with its zone and said so."""
    await ZoneChat().send("I live in France now", "set_time_zone")
    chat = ReminderChat()
    said = await chat.send("remind me about the PRG meeting on Thursday at 2pm", "set_reminder")
    assert "Thursday 26 November at 2:00pm Paris time: the PRG meeting" in texts(said)
    said = await chat.send(tap(said, "Yes, set it"))
    assert "Reminder set: Thursday 26 November at 2:00pm Paris time: the PRG meeting" in texts(said)
    plans, reminders = ra.get_repositories()
    [meeting] = reminders.upcoming(plans.champion_for(SENDER).id, NOW)
    assert meeting.time_zone == "Europe/Paris"
    assert meeting.starts_at == datetime(2026, 11, 26, 13, 0, tzinfo=UTC)
    # The day before counts on the Paris calendar: 2pm Paris time on Wednesday.
    assert meeting.reminders[0].due_at == datetime(2026, 11, 25, 13, 0, tzinfo=UTC)


async def test_a_meeting_keeps_its_zone_when_the_champion_moves(db):
    """A meeting set in UK time stays there after a move to Paris: listed, re-timed and reminded in UK time, named."""
    chat = ReminderChat()
    await chat.send("remind me about the PRG meeting on Thursday at 2pm", "set_reminder")
    said = await chat.send("yes", "affirm")
    assert "Thursday 26 November at 2:00pm: the PRG meeting" in texts(said)  # UK time to a champion in the UK
    said = await ZoneChat().send("my time zone is Europe/Paris", "set_time_zone")
    assert "Meetings you've already set keep the times you gave, in UK time." in texts(said)
    said = await chat.send("/list_reminders")
    assert "Thursday 26 November at 2:00pm UK time: the PRG meeting" in texts(said)
    said = await chat.send("the PRG meeting has moved to Friday at 3pm", "set_reminder")
    assert "Friday 27 November at 3:00pm UK time: the PRG meeting" in texts(said)
    said = await chat.send("yes", "affirm")
    assert "Changed: Friday 27 November at 3:00pm UK time" in texts(said)
    plans, reminders = ra.get_repositories()
    [meeting] = reminders.upcoming(plans.champion_for(SENDER).id, NOW)
    assert meeting.time_zone == "Europe/London" and meeting.starts_at == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    # A new meeting now uses Paris time.
    await chat.send("remind me about the patient panel on Monday at 9am", "set_reminder")
    said = await chat.send("yes", "affirm")
    assert "Monday 30 November at 9:00am Paris time: the patient panel" in texts(said)


async def test_the_scheduler_and_snoozes_use_the_champions_zone(db):
    """The day-before reminder names the meeting's zone; "tomorrow morning" is 9am where the champion is."""
    await ZoneChat().send("my time zone is America/New_York", "set_time_zone")
    chat = ReminderChat()
    await chat.send("remind me about the PRG meeting on Thursday at 2pm", "set_reminder")
    said = await chat.send("yes", "affirm")
    assert "Thursday 26 November at 2:00pm New York time: the PRG meeting" in texts(said)
    wednesday = datetime(2026, 11, 25, 19, 0, 5, tzinfo=UTC)  # 2pm in New York, the day before
    ReminderDispatcher(db).run_once(wednesday)
    with db() as session:
        sent = session.query(OutboundMessage).one()
    assert "Reminder: the PRG meeting is tomorrow, Thursday 26 November at 2:00pm New York time." in sent.text
    set_clock(lambda: wednesday)
    said = await chat.send(tap([{"buttons": sent.buttons}], "Remind me tomorrow morning"))
    # Not 9am in London (before the meeting, but the wrong morning): 9am in New York.
    assert "OK, I'll remind you again tomorrow, Thursday 26 November at 9:00am New York time." in texts(said)
    plans, reminders = ra.get_repositories()
    [meeting] = reminders.upcoming(plans.champion_for(SENDER).id, wednesday)
    assert meeting.reminders[0].due_at == datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    said = await chat.send(f'/cant_attend{{"rm_meeting": "{meeting.id}"}}')
    assert "on Thursday 26 November at 2:00pm New York time" in texts(said)
