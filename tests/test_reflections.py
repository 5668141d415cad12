"""Reflections and pledges: the repository on SQLite and PostgreSQL, and reflection_form driven the way Rasa drives it."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select

from actions.db import use_sessions
from actions import reflections as rf
from tests.champion_data import opted_out
from tests.form_chat import ActionChat, actions_database, nlu_result
from bot.db import make_engine, make_session_factory
from bot.models import Champion
from bot.plans import PlanRepository
from bot.reflection_models import PledgeCheckIn, Reflection
from bot.reflections import (
    DAY_CHOOSE,
    DAY_OK,
    DAY_PAST,
    DAY_TOO_FAR,
    DAY_UNKNOWN,
    ReflectionRepository,
    check_in_at,
    check_in_day,
    read_check_in_day,
)
from bot.reminder_scheduler import ReminderDispatcher
from bot.reminders import ReminderRepository

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT.parent / "shared" / "seeds"
UTC = timezone.utc
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # Monday 23 November 2026, 6pm in London
SENDER = "web-5e1f-champion"


# --- the repository, on SQLite and PostgreSQL ----------------------------------------------------


def _champion(sessions, organisation: Optional[str] = "leeds", time_zone: Optional[str] = None) -> int:
    """A champion row; returns its id."""
    with sessions() as session:
        champion = Champion(channel="web", external_id=f"c{datetime.now().timestamp()}", organisation=organisation,
                            time_zone=time_zone)
        session.add(champion)
        session.commit()
        return champion.id


def _meeting(sessions, champion_id: int, description: str, starts_at: datetime) -> int:
    """A meeting that has already started (stored directly: the reminder repository refuses past ones)."""
    repo = ReminderRepository(sessions)
    view = repo.create_meeting(champion_id, description, starts_at, offsets=[], after_meeting=False,
                               now=starts_at - timedelta(hours=1))
    return view.id


def test_answers_are_saved_one_by_one(engine):
    """Each answer is stored the moment it is given; the organisation comes from the champion; completing sets completed_at."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    champion = _champion(sessions)
    view = repo.start(champion, session_label="  the  PRG meeting ", now=NOW)
    assert (view.session_label, view.organisation, view.completed_at) == ("the PRG meeting", "leeds", None)
    assert repo.save_takeaway(champion, view.id, "Ask for the papers early", now=NOW)
    assert repo.save_rating(champion, view.id, "4", now=NOW)
    assert repo.save_improvement(champion, view.id, "Shorter papers", now=NOW)
    assert repo.save_sharing(champion, view.id, "anonymous", now=NOW)
    saved = repo.get(champion, view.id)
    assert (saved.takeaway, saved.rating, saved.improvement, saved.sharing) == (
        "Ask for the papers early", 4, "Shorter papers", "anonymous")
    assert repo.unfinished(champion).id == view.id
    assert repo.complete(champion, view.id, now=NOW + timedelta(minutes=5))
    assert repo.get(champion, view.id).completed_at == NOW + timedelta(minutes=5)
    assert repo.unfinished(champion) is None
    assert not repo.complete(champion, view.id, now=NOW)  # the first completion stands


def test_bad_answers_are_refused(engine):
    """Ratings outside 1-5, unknown sharing choices and empty or huge texts are refused."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    champion = _champion(sessions)
    view = repo.start(champion, now=NOW)
    for rating in (0, 6, "4.5", "five", None, True):
        with pytest.raises(ValueError):
            repo.save_rating(champion, view.id, rating)
    with pytest.raises(ValueError):
        repo.save_sharing(champion, view.id, "public")
    with pytest.raises(ValueError):
        repo.save_takeaway(champion, view.id, "   ")
    with pytest.raises(ValueError):
        repo.save_takeaway(champion, view.id, "x" * 2001)
    with pytest.raises(ValueError):
        repo.add_pledge(champion, view.id, "y" * 501, NOW + timedelta(days=1), now=NOW)


def test_a_reflection_is_only_its_champions(engine):
    """Someone else's reflection can't be read or changed."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    mine, theirs = _champion(sessions), _champion(sessions)
    view = repo.start(mine, now=NOW)
    assert repo.get(theirs, view.id) is None
    assert not repo.save_takeaway(theirs, view.id, "sneaky")
    with pytest.raises(LookupError):
        repo.add_pledge(theirs, view.id, "sneaky", NOW + timedelta(days=1), now=NOW)
    assert repo.get(mine, view.id).takeaway is None


def test_pledges_come_with_their_first_check_in(engine):
    """A pledge is stored with a pending check-in; picking another day moves it; a fourth pledge is refused."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    champion = _champion(sessions)
    view = repo.start(champion, now=NOW)
    due = check_in_at(date(2026, 12, 7), "Europe/London")
    pledge = repo.add_pledge(champion, view.id, "Read the papers before the PRG", due, now=NOW)
    assert (pledge.status, pledge.check_in_due_at) == ("open", datetime(2026, 12, 7, 10, 0, tzinfo=UTC))
    with sessions() as session:
        [row] = session.execute(select(PledgeCheckIn)).scalars().all()
        assert (row.status, row.pledge_id, row.champion_id) == ("pending", pledge.id, champion)
    moved = repo.move_check_in(champion, pledge.id, check_in_at(date(2026, 12, 23), "Europe/London"), now=NOW)
    assert moved.check_in_due_at == datetime(2026, 12, 23, 10, 0, tzinfo=UTC) and moved.check_in_id == pledge.check_in_id
    repo.add_pledge(champion, view.id, "Speak up about access", due, now=NOW)
    repo.add_pledge(champion, view.id, "Bring a carer's view", due, now=NOW)
    with pytest.raises(ValueError):
        repo.add_pledge(champion, view.id, "A fourth", due, now=NOW)
    with pytest.raises(ValueError):
        repo.move_check_in(champion, pledge.id, NOW - timedelta(days=1), now=NOW)
    assert [p.text for p in repo.get(champion, view.id).pledges] == [
        "Read the papers before the PRG", "Speak up about access", "Bring a carer's view"]


def test_recent_meetings_for_the_picker(engine):
    """Meetings that began in the last 14 days, newest first; not future, cancelled or already reflected on."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    reminders = ReminderRepository(sessions)
    champion = _champion(sessions)
    old = _meeting(sessions, champion, "old forum", NOW - timedelta(days=20))
    prg = _meeting(sessions, champion, "PRG meeting", NOW - timedelta(days=3))
    panel = _meeting(sessions, champion, "patient panel", NOW - timedelta(hours=4))
    cancelled = _meeting(sessions, champion, "cancelled group", NOW - timedelta(days=1))
    assert reminders.cancel_meeting(champion, cancelled, now=NOW)
    _meeting(sessions, champion, "next week", NOW + timedelta(days=7))
    assert [m.id for m in repo.recent_meetings(champion, NOW)] == [panel, prg]
    done = repo.start(champion, meeting_id=prg, now=NOW)
    assert done.session_label == "PRG meeting"
    repo.complete(champion, done.id, now=NOW)
    assert [m.id for m in repo.recent_meetings(champion, NOW)] == [panel]
    assert [m.id for m in repo.recent_meetings(champion, NOW, days=30)] == [panel, old]
    with pytest.raises(LookupError):
        repo.start(_champion(sessions), meeting_id=panel, now=NOW)  # someone else's meeting


def test_deleting_a_champion_deletes_their_reflections(engine):
    """Reflections, pledges and check-ins go with the champion."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    champion = _champion(sessions)
    view = repo.start(champion, now=NOW)
    repo.add_pledge(champion, view.id, "Something", NOW + timedelta(days=14), now=NOW)
    with sessions() as session:
        session.delete(session.get(Champion, champion))
        session.commit()
    with sessions() as session:
        assert session.execute(select(Reflection)).scalars().all() == []
        assert session.execute(select(PledgeCheckIn)).scalars().all() == []


# --- check-in days --------------------------------------------------------------------------------


def test_check_in_days_and_times():
    """Two weeks and a month on the calendar, at 10am local time across the clock change."""
    assert check_in_day("two_weeks", date(2026, 11, 23)) == date(2026, 12, 7)
    assert check_in_day("month", date(2026, 11, 23)) == date(2026, 12, 23)
    assert check_in_day("month", date(2027, 1, 31)) == date(2027, 2, 28)
    assert check_in_at(date(2027, 4, 5), "Europe/London") == datetime(2027, 4, 5, 9, 0, tzinfo=UTC)  # BST
    assert check_in_at(date(2026, 12, 7), "America/New_York") == datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    assert check_in_at(date(2026, 12, 7), "Not/AZone") == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, status, days",
    [
        ("Friday", DAY_OK, (date(2026, 11, 27),)),
        ("12/12", DAY_OK, (date(2026, 12, 12),)),
        ("12 December", DAY_OK, (date(2026, 12, 12),)),
        ("in 3 weeks", DAY_OK, (date(2026, 12, 14),)),
        ("Friday at 3pm", DAY_OK, (date(2026, 11, 27),)),
        ("next friday", DAY_CHOOSE, (date(2026, 11, 27), date(2026, 12, 4))),
        ("today", DAY_PAST, ()),
        ("20/11", DAY_PAST, ()),
        ("1 January 2029", DAY_TOO_FAR, ()),
        ("whenever", DAY_UNKNOWN, ()),
        ("31/02", DAY_UNKNOWN, ()),
    ],
)
def test_typed_check_in_days(text, status, days):
    """A typed day is read in British order; today, past days and days over a year ahead are refused."""
    assert read_check_in_day(text, NOW, "Europe/London") == (status, days)


def test_wording_has_sources_and_quotes_the_seeds():
    """Every message and button names its source; quoted framing is in the seed it cites."""
    content = yaml.safe_load((ROOT / "knowledge" / "reflections.yml").read_text(encoding="utf-8"))
    seeds = {p.name for p in SEEDS.glob("*.txt")} if SEEDS.exists() else set()
    for group in ("messages", "buttons", "framing"):
        for key, entry in content[group].items():
            assert entry.get("source"), (group, key)
            assert entry["source"] == "none" or not seeds or entry["source"] in seeds, (group, key)
            if entry.get("quote") and SEEDS.exists():
                seed = " ".join((SEEDS / entry["source"]).read_text(encoding="utf-8").split())
                for part in entry["quote"].split(" #"):
                    assert " ".join(part.split()) in seed, (group, key)
    for key, entry in content["messages"].items():
        assert len(entry["text"].split()) <= 80, key


# --- the conversation --------------------------------------------------------------------------------

DOMAIN: Dict[str, Any] = {
    "forms": {"reflection_form": {"required_slots": ["rf_answer"]}},
    "slots": {
        "rf_answer": {"type": "text", "mappings": [{"type": "from_text", "conditions": [{"active_loop": "reflection_form", "requested_slot": "rf_answer"}]}]},
        "rf_state": {"type": "any", "mappings": [{"type": "custom"}]},
    },
    "responses": {"utter_crisis": [{"text": "crisis"}], "utter_tokenism": [{"text": "Tokenism is ..."}]},
}
FORM_INTENTS = ("reflect", "make_pledge")


@pytest.fixture
def db(tmp_path: Path):
    """A migrated SQLite app database used by the actions, with the clock pinned to NOW."""
    with actions_database(tmp_path, NOW) as sessions:
        yield sessions


def parse(text: str, intent: Optional[str], entities: Optional[Dict[str, str]], confidence: float = 0.9) -> Dict[str, Any]:
    """What NLU would make of text (a button payload is certain)."""
    return nlu_result(text, intent, confidence, entities)


class Chat(ActionChat):
    """One champion's conversation, run the way Rasa runs reflection_form."""

    def __init__(self, sender: str = SENDER) -> None:
        """A conversation with no slots set yet."""
        super().__init__(sender, "reflection_form", DOMAIN, ["rf_answer", "rf_state"])

    async def send(self, text: str, intent: Optional[str] = None, confidence: float = 0.9, **entities: str) -> List[Dict[str, Any]]:
        """The champion sends (or taps) text; returns every message the bot sends back."""
        latest = parse(text, intent, entities, confidence)
        name = latest["intent"]["name"]
        if not self.form_active:
            assert name in FORM_INTENTS, f"no rule for {name} outside the form"
            said, events = await self.run(rf.ActionStartReflection(), latest)
            if any(e.get("event") == "followup" for e in events):
                return said
            self.form_active = True
            dispatcher = CollectingDispatcher()
            validated = await rf.ValidateReflectionForm().run(dispatcher, self.tracker(latest, []), DOMAIN)
            assert dispatcher.messages == [] and all(e.get("name") != "rf_state" for e in validated)
            asked, _ = await self.run(rf.ActionAskRfAnswer(), latest)
            return said + asked
        return await self.form_turn(latest, "rf_answer", rf.ValidateReflectionForm(), rf.ActionReflectionEnd(),
                                    rf.ActionAskRfAnswer())


def texts(messages: List[Dict[str, Any]]) -> str:
    """Everything the bot said, as one string."""
    return "\n".join(m.get("text") or m.get("response") or "" for m in messages)


def titles(messages: List[Dict[str, Any]]) -> List[str]:
    """Every button title offered."""
    return [b["title"] for m in messages for b in m.get("buttons") or []]


def tap(messages: List[Dict[str, Any]], title: str) -> str:
    """The payload of the button called title."""
    found = [b["payload"] for m in messages for b in m.get("buttons") or [] if b["title"] == title]
    assert found, (title, titles(messages))
    return found[0]


def saved(sessions):
    """The champion's reflections, newest first."""
    plans, reflections = rf.get_repositories()
    return reflections.reflections(plans.champion_for(SENDER).id)


def with_meetings(sessions) -> Dict[str, int]:
    """The champion (from Leeds) with two recent meetings and one next week."""
    plans, _ = rf.get_repositories()
    champion = plans.champion_for(SENDER)
    with sessions() as session:
        session.get(Champion, champion.id).organisation = "leeds"
        session.commit()
    return {
        "prg": _meeting(sessions, champion.id, "the PRG meeting", NOW - timedelta(days=2, hours=4)),
        "panel": _meeting(sessions, champion.id, "patient panel", NOW - timedelta(hours=5)),
        "future": _meeting(sessions, champion.id, "carers forum", NOW + timedelta(days=3)),
    }


async def test_a_whole_reflection_saves_each_answer_as_given(db):
    """Session from the recent meetings, take-away, two pledges with check-ins, rating, improvement, sharing, thanks."""
    ids = with_meetings(db)
    chat = Chat()
    said = await chat.send("I want to reflect on today", "reflect")
    assert "Which session or meeting" in texts(said)
    assert titles(said) == ["patient panel, Mon 23 Nov", "the PRG meeting, Sat 21 Nov", "A training session", "Stop for now"]
    said = await chat.send(tap(said, "patient panel, Mon 23 Nov"))
    assert "What's one thing you'll take away from patient panel?" in texts(said)
    [reflection] = saved(db)
    assert (reflection.meeting_id, reflection.session_label, reflection.organisation) == (ids["panel"], "patient panel", "leeds")
    said = await chat.send("Ask for the papers a week ahead")
    assert saved(db)[0].takeaway == "Ask for the papers a week ahead"
    assert "#3thingsNHS" in texts(said) and "No pledge this time" in titles(said)
    said = await chat.send("Read the papers before the next panel")
    assert titles(said) == ["In 2 weeks", "In a month", "Pick a date"]
    [pledge] = saved(db)[0].pledges  # saved at once, with a check-in in two weeks
    assert pledge.check_in_due_at == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    said = await chat.send(tap(said, "In a month"))
    assert "Pledge saved. I'll check in on Wednesday 23 December." in texts(said)
    assert "Another pledge?" in texts(said) and "(1 of 3 so far)" in texts(said)
    assert saved(db)[0].pledges[0].check_in_due_at == datetime(2026, 12, 23, 10, 0, tzinfo=UTC)
    said = await chat.send("Speak up when the papers are too technical")
    said = await chat.send(tap(said, "Pick a date"))
    assert 'For example "Friday"' in texts(said)
    said = await chat.send("12/12")
    assert "I'll check in on Saturday 12 December." in texts(said)
    said = await chat.send(tap(said, "That's all"))
    assert "from 1 (not well) to 5 (very well)" in texts(said)
    assert titles(said)[:5] == ["1", "2", "3", "4", "5"]
    said = await chat.send(tap(said, "4"))
    assert saved(db)[0].rating == 4
    assert "Please be honest" in texts(said)
    said = await chat.send("Papers sent earlier, and a break half way")
    assert "Share with my name: they see your answers and who you are." in texts(said)
    assert titles(said) == ["Share with my name", "Share anonymously", "Keep it private"]
    said = await chat.send(tap(said, "Share anonymously"))
    summary = texts(said)
    assert summary.startswith("Thank you for reflecting on patient panel.")
    assert "• Take-away: Ask for the papers a week ahead" in summary
    assert "• Pledge: Read the papers before the next panel (check-in Wednesday 23 December)" in summary
    assert "• How it went: 4 out of 5" in summary
    assert "without your name" in summary
    assert len(summary.split()) <= 90
    assert not chat.form_active and chat.slots["rf_state"] is None
    [done] = saved(db)
    assert (done.improvement, done.sharing, done.completed_at) == ("Papers sent earlier, and a break half way", "anonymous", NOW)
    assert [p.check_in_due_at for p in done.pledges] == [datetime(2026, 12, 23, 10, 0, tzinfo=UTC), datetime(2026, 12, 12, 10, 0, tzinfo=UTC)]


@pytest.mark.parametrize(
    "choice, stored, said",
    [("Share with my name", "named", "with your name"), ("Share anonymously", "anonymous", "without your name"),
     ("Keep it private", "private", "only you see it")],
)
async def test_each_sharing_choice_is_stored(db, choice, stored, said):
    """The sharing answer is stored as the champion chose and said back in the summary."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("A training session")
    await chat.send("skip")
    await chat.send("That's all")
    await chat.send("skip")
    await chat.send("skip")
    reply = await chat.send(choice)
    assert said in texts(reply)
    [reflection] = saved(db)
    assert (reflection.sharing, reflection.session_label) == (stored, "the training session")
    assert reflection.completed_at is not None


async def test_typed_session_names_and_sharing_in_words(db):
    """With no meetings, the session is typed; "anonymous" typed works like the button."""
    chat = Chat()
    said = await chat.send("reflect", "reflect")
    assert titles(said) == ["A training session", "Stop for now"]
    said = await chat.send("Stroke prevention workshop")
    assert "take away from Stroke prevention workshop?" in texts(said)
    await chat.send("skip")
    await chat.send("no")
    said = await chat.send("five")
    assert saved(db)[0].rating == 5
    await chat.send("nothing")
    said = await chat.send("yes")
    assert "Please tap one of the three choices." in texts(said)
    said = await chat.send("anonymous")
    assert saved(db)[0].sharing == "anonymous"


async def test_stopping_half_way_keeps_what_was_said_and_carries_on_later(db):
    """"Stop" keeps every answer; "reflect" later offers to carry on at the next question."""
    with_meetings(db)
    chat = Chat()
    said = await chat.send("/reflect")
    said = await chat.send(tap(said, "the PRG meeting, Sat 21 Nov"))
    await chat.send("Agree the level of co-production early")
    said = await chat.send("later")
    assert "I've saved everything you told me" in texts(said) and not chat.form_active
    [reflection] = saved(db)
    assert reflection.takeaway == "Agree the level of co-production early" and reflection.completed_at is None
    said = await chat.send("I want to reflect", "reflect")
    assert "You started reflecting on the PRG meeting earlier" in texts(said)
    said = await chat.send(tap(said, "Carry on"))
    assert "Would you like to make a pledge" in texts(said)
    said = await chat.send("Ask about the budget")
    said = await chat.send("Stop")  # the check-in keeps its two-week default
    assert "I'll check in on your latest pledge on Monday 7 December." in texts(said)
    said = await chat.send("reflect", "reflect")
    said = await chat.send("Carry on")
    assert "Another pledge?" in texts(said) and "(1 of 3 so far)" in texts(said)
    said = await chat.send("That's all")
    assert "How did the PRG meeting go" in texts(said)
    assert len(saved(db)) == 1


async def test_stop_team_messages_mid_reflection_is_done_and_nothing_is_taken_as_an_answer(db):
    """"Stop messages from the team" while reflecting stops them at once; it is not saved as the takeaway."""
    with_meetings(db)
    chat = Chat()
    said = await chat.send("/reflect")
    asked = await chat.send(tap(said, "the PRG meeting, Sat 21 Nov"))
    said = await chat.send("stop messages from the team", "opt_out_messages", 0.95)
    assert [m.get("response") for m in said if m.get("response")] == ["utter_opted_out"]
    assert opted_out(SENDER) and chat.form_active
    assert texts(asked).split("\n")[-1] in texts(said)  # the same question again
    await chat.send("Agree the level of co-production early")
    [reflection] = saved(db)
    assert reflection.takeaway == "Agree the level of co-production early"


async def test_start_a_new_one_instead_of_carrying_on(db):
    """"Start a new one" leaves the unfinished reflection as it was and begins another."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("Monday forum")
    await chat.send("stop")
    said = await chat.send("/reflect")
    said = await chat.send(tap(said, "Start a new one"))
    assert "Which session or meeting" in texts(said)
    await chat.send("Tuesday panel")
    assert [r.session_label for r in saved(db)] == ["Tuesday panel", "Monday forum"]


async def test_stopping_before_any_answer_saves_nothing(db):
    """Stopping at the first question says nothing was saved, and nothing is."""
    chat = Chat()
    await chat.send("/reflect")
    said = await chat.send("not now")
    assert "nothing saved" in texts(said) and not chat.form_active
    assert saved(db) == []


async def test_make_a_pledge_asks_session_pledges_and_sharing_only(db):
    """"Can I make a pledge": which session (or skip), pledges with check-ins, sharing; no rating."""
    chat = Chat()
    said = await chat.send("can I make a pledge", "make_pledge")
    assert "Is your pledge about a session or meeting?" in texts(said) and "Skip" in titles(said)
    said = await chat.send(tap(said, "Skip"))
    assert "What's your pledge" in texts(said)
    said = await chat.send("Contact the engagement team about a buddy")
    said = await chat.send("In 2 weeks")
    assert "I'll check in on Monday 7 December." in texts(said)
    said = await chat.send("That's all")
    assert "May I share your answers" in texts(said)
    said = await chat.send("Keep it private")
    assert texts(said).startswith("Thank you. Here's what I saved:")
    assert "How it went" not in texts(said)
    [reflection] = saved(db)
    assert (reflection.session_label, reflection.rating, reflection.sharing) == (None, None, "private")
    assert [p.text for p in reflection.pledges] == ["Contact the engagement team about a buddy"]
    assert reflection.completed_at is not None


async def test_make_a_pledge_then_none_saves_nothing(db):
    """Making a pledge and then "that's all" before any: nothing is stored."""
    chat = Chat()
    await chat.send("/make_pledge")
    await chat.send("skip")
    said = await chat.send("That's all")
    assert "no pledge this time" in texts(said) and not chat.form_active
    assert saved(db) == []


async def test_three_pledges_at_most(db):
    """After the third pledge the form moves on by itself."""
    chat = Chat()
    await chat.send("/make_pledge")
    await chat.send("skip")
    for n in range(3):
        await chat.send(f"Pledge number {n + 1}")
        said = await chat.send("In a month")
    assert "That's three pledges: well done." in texts(said) and "May I share" in texts(said)
    assert len(saved(db)[0].pledges) == 3


async def test_check_in_days_that_cant_be_used(db):
    """A past day, a day too far ahead and nonsense are asked again; "next Friday" offers both Fridays."""
    chat = Chat()
    await chat.send("/make_pledge")
    await chat.send("skip")
    await chat.send("Ask for large-print papers")
    await chat.send("Pick a date")
    said = await chat.send("20/11")
    assert "That day has already gone" in texts(said)
    said = await chat.send("1 January 2029")
    assert "within the next year" in texts(said)
    said = await chat.send("whenever")
    assert "couldn't find a day" in texts(said)
    said = await chat.send("next friday")
    assert titles(said)[:2] == ["Friday 27 November", "Friday 4 December"]
    said = await chat.send("Friday 4 December")
    assert "I'll check in on Friday 4 December." in texts(said)
    assert saved(db)[0].pledges[0].check_in_due_at == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


async def test_bad_input_gets_a_clear_reply_and_nothing_is_lost(db):
    """Emoji alone, huge text and a rating that isn't 1-5 are asked again; markup is kept as typed."""
    chat = Chat()
    await chat.send("/reflect")
    said = await chat.send("🙂🙂")
    assert "couldn't find any words" in texts(said)
    await chat.send("Training day")
    said = await chat.send("x" * 2500)
    assert "2,000 characters at most" in texts(said)
    assert saved(db)[0].takeaway is None
    markup = "<b>Listen</b> first'; DROP TABLE reflections; --"
    await chat.send(markup)
    assert saved(db)[0].takeaway == markup
    said = await chat.send("y" * 600)
    assert "500 characters at most" in texts(said)
    said = await chat.send("学习更多")  # other scripts are words too
    assert titles(said) == ["In 2 weeks", "In a month", "Pick a date"]
    assert saved(db)[0].pledges[0].text == "学习更多"
    await chat.send("In 2 weeks")
    await chat.send("That's all")
    said = await chat.send("7")
    assert "Please tap a number from 1 to 5" in texts(said)
    said = await chat.send("3/5")
    assert saved(db)[0].rating == 3


async def test_reflect_now_button_after_a_meeting(db):
    """The after-meeting prompt's button starts the form for that meeting, skipping "which session"."""
    plans, _ = rf.get_repositories()
    champion = plans.champion_for(SENDER)
    reminders = ReminderRepository(db)
    meeting = reminders.create_meeting(champion.id, "the stroke project meeting", NOW + timedelta(hours=1),
                                       offsets=[], now=NOW)
    ReminderDispatcher(db).run_once(meeting.reminders[0].due_at + timedelta(seconds=1))
    from bot.delivery_models import OutboundMessage

    with db() as session:
        [prompt] = session.execute(select(OutboundMessage)).scalars().all()
    assert prompt.buttons == [{"title": "Reflect now", "payload": f'/reflect{{"rf_meeting": "{meeting.id}"}}'}]
    chat = Chat()
    said = await chat.send(prompt.buttons[0]["payload"])
    assert "What's one thing you'll take away from the stroke project meeting?" in texts(said)
    await chat.send("Bring the stroke survivors' view")
    [reflection] = saved(db)
    assert reflection.meeting_id == meeting.id and reflection.session_label == "the stroke project meeting"
    await chat.send("stop")
    said = await chat.send(prompt.buttons[0]["payload"])  # tapped again: carries on that reflection
    assert "Would you like to make a pledge" in texts(said)
    assert len(saved(db)) == 1


async def test_someone_elses_meeting_in_a_payload_is_ignored(db):
    """A meeting id that isn't the champion's starts an ordinary reflection."""
    other = PlanRepository(db).champion_for("web-someone-else")
    meeting = ReminderRepository(db).create_meeting(other.id, "private meeting", NOW + timedelta(hours=1), offsets=[], now=NOW)
    chat = Chat()
    said = await chat.send(f'/reflect{{"rf_meeting": "{meeting.id}"}}')
    assert "Which session or meeting" in texts(said) and "private meeting" not in texts(said)


async def test_crisis_mid_form_gets_the_crisis_reply_first(db):
    """A crisis message gets the crisis reply at once; what was said stays saved."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("PRG")
    said = await chat.send("I don't want to be here any more", "crisis")
    assert said[0].get("response") == "utter_crisis"
    assert "Your reflection so far is saved" in texts(said) and not chat.form_active
    assert saved(db)[0].session_label == "PRG"


async def test_a_question_mid_form_is_answered_and_the_question_asked_again(db):
    """"What is tokenism?" gets the answer, then the same question; a plain answer is saved."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("PRG")
    said = await chat.send("what is tokenism?", "ask_tokenism", confidence=0.95)
    assert said[0].get("response") == "utter_tokenism"
    assert "take away from PRG" in texts(said) and saved(db)[0].takeaway is None
    await chat.send("Tokenism is easy to spot", "ask_tokenism", confidence=0.95)
    assert saved(db)[0].takeaway == "Tokenism is easy to spot"


async def test_another_button_mid_form_pauses_it(db):
    """Tapping another feature's button mid-way stops the form, keeping the answers."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("PRG")
    said = await chat.send("/list_reminders")
    assert "Tap that again" in texts(said) and not chat.form_active


async def test_trouble_with_the_database_is_said_kindly(db, tmp_path):
    """If the app database can't be reached, the champion hears so and the form doesn't start."""
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}?mode=ro")
    sessions = make_session_factory(broken)
    use_sessions(sessions)
    chat = Chat()
    said = await chat.send("/reflect")
    assert "can't save your reflection just now" in texts(said) and not chat.form_active
    broken.dispose()


async def test_trouble_mid_form_stops_it_kindly(db, tmp_path):
    """The database going away mid-way: a kind message and the form stops."""
    chat = Chat()
    await chat.send("/reflect")
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}?mode=ro")
    sessions = make_session_factory(broken)
    use_sessions(sessions)
    said = await chat.send("PRG")
    assert "can't save your reflection just now" in texts(said) and not chat.form_active
    broken.dispose()


async def test_check_ins_follow_the_champions_time_zone(db):
    """A champion in New York gets their check-in at 10am New York time."""
    plans, _ = rf.get_repositories()
    champion = plans.champion_for(SENDER)
    with db() as session:
        session.get(Champion, champion.id).time_zone = "America/New_York"
        session.commit()
    chat = Chat()
    await chat.send("/make_pledge")
    await chat.send("skip")
    await chat.send("Ask a question at every meeting")
    await chat.send("In 2 weeks")
    assert saved(db)[0].pledges[0].check_in_due_at == datetime(2026, 12, 7, 15, 0, tzinfo=UTC)


async def test_stop_at_the_carry_on_question_keeps_the_saved_reflection(db):
    """"Stop" when asked whether to carry on says the earlier answers are saved (they are)."""
    chat = Chat()
    await chat.send("/reflect")
    await chat.send("Monday forum")
    await chat.send("stop")
    said = await chat.send("/reflect")
    assert "Carry on" in titles(said)
    said = await chat.send("stop")
    assert "I've saved everything you told me" in texts(said) and not chat.form_active
    assert [r.session_label for r in saved(db)] == ["Monday forum"]


async def test_hostile_ids_in_a_payload_start_an_ordinary_reflection(db):
    """A meeting id that is huge, negative or not a number finds no meeting, and nothing crashes."""
    for value in ("99999999999999999999999", "-3", "abc", "1e400"):
        chat = Chat()
        said = await chat.send(f'/reflect{{"rf_meeting": "{value}"}}')
        assert "Which session or meeting" in texts(said)
        await chat.send("stop")
    _, repo = rf.get_repositories()
    assert repo.get(1, "99999999999999999999999") is None and repo.pledge(1, 2**40) is None
    assert not repo.save_takeaway(1, 2**40, "x")


def test_control_characters_are_not_stored(engine):
    """NULs and other control characters are dropped (PostgreSQL refuses NUL in text); line breaks stay."""
    sessions = make_session_factory(engine)
    repo = ReflectionRepository(sessions)
    champion = _champion(sessions)
    view = repo.start(champion, session_label="PRG\x00 meeting", now=NOW)
    repo.save_takeaway(champion, view.id, "Listen\x00 first\x07\nthen speak", now=NOW)
    saved_view = repo.get(champion, view.id)
    assert (saved_view.session_label, saved_view.takeaway) == ("PRG meeting", "Listen first\nthen speak")
    with pytest.raises(ValueError):
        repo.add_pledge(champion, view.id, "\x00\x01", NOW + timedelta(days=1), now=NOW)
