"""Pledges that are followed up: check-ins fire once through the outbox (clock moved, not waited for), each answer is recorded, list and mark done.

Repository and dispatcher tests run on SQLite and PostgreSQL (`engine`); the
actions are run the way Rasa runs them (Tracker + CollectingDispatcher) on a
real app database.
"""
from __future__ import annotations

import json
import textwrap
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select, update

from actions.clock import set_clock
from tests.form_chat import actions_database, nlu_result
from actions import checkins as ac
from actions.db import use_sessions
from actions.settings import reset_settings
from bot.checkins import (
    ALREADY_ANSWERED,
    CLOSED,
    NOT_FOUND,
    RECORDED,
    CheckInDispatcher,
    CheckInRepository,
    check_in_due,
    load_content,
    read_answer,
    read_when_choice,
)
from bot.db import make_session_factory
from bot.delivery_models import OutboundMessage
from bot.models import Champion
from bot.outbox import OutboxRepository
from bot.reflection_models import Pledge, PledgeCheckIn, Reflection, check_in_source_key
from bot.reminder_scheduler import ReminderScheduler
from bot.repository import ChatRepository

ROOT = Path(__file__).resolve().parent.parent
UTC = timezone.utc
# Monday 23 November 2026, 10am in London (GMT).
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CONTENT = load_content()

ORGANISATIONS = """
organisations:
  - key: leeds
    name: Leeds
    engagement_contact: "The Leeds engagement team: team@example.org"
  - key: south-tyneside
    name: South Tyneside
choices:
  other: Not listed
  skip: Not now
"""


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated database (SQLite and PostgreSQL)."""
    return make_session_factory(engine)


@pytest.fixture
def repo(sessions):
    """A CheckInRepository on the migrated database."""
    return CheckInRepository(sessions)


def new_champion(sessions, external: Optional[str] = None, **values: Any) -> int:
    """A web champion's id (with extra column values such as organisation or time_zone)."""
    champion = ChatRepository(sessions).get_or_create_champion("web", external or uuid.uuid4().hex[:12])
    if values:
        with sessions() as session:
            session.execute(update(Champion).where(Champion.id == champion.id).values(**values))
            session.commit()
    return champion.id


def make_pledge(sessions, champion_id: int, text: str, due_at: Optional[datetime] = None,
                made_at: datetime = NOW - timedelta(days=14)) -> Dict[str, int]:
    """A pledge (in a reflection, as the reflection form makes it) with its first check-in at due_at."""
    with sessions() as session:
        reflection = Reflection(champion_id=champion_id, session_label="Patient champion training",
                                created_at=made_at, updated_at=made_at)
        session.add(reflection)
        session.flush()
        pledge = Pledge(reflection_id=reflection.id, champion_id=champion_id, text=text, status="open",
                        created_at=made_at, updated_at=made_at)
        session.add(pledge)
        session.flush()
        ids = {"pledge": pledge.id}
        if due_at is not None:
            check_in = PledgeCheckIn(pledge_id=pledge.id, champion_id=champion_id, due_at=due_at,
                                     status="pending", created_at=made_at, updated_at=made_at)
            session.add(check_in)
            session.flush()
            ids["check_in"] = check_in.id
        session.commit()
        return ids


def check_in_row(sessions, check_in_id: int) -> PledgeCheckIn:
    """The check-in as stored now."""
    with sessions() as session:
        return session.get(PledgeCheckIn, check_in_id)


def pledge_row(sessions, pledge_id: int) -> Pledge:
    """The pledge as stored now."""
    with sessions() as session:
        return session.get(Pledge, pledge_id)


def check_ins_of(sessions, pledge_id: int) -> List[PledgeCheckIn]:
    """Every check-in of a pledge, in the order they were added."""
    with sessions() as session:
        return list(session.execute(
            select(PledgeCheckIn).where(PledgeCheckIn.pledge_id == pledge_id).order_by(PledgeCheckIn.id)
        ).scalars())


def outbox_rows(sessions) -> List[OutboundMessage]:
    """Every outbox row, oldest first."""
    with sessions() as session:
        return list(session.execute(select(OutboundMessage).order_by(OutboundMessage.id)).scalars())


def london(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    """A London wall-clock time as UTC."""
    from zoneinfo import ZoneInfo

    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Europe/London")).astimezone(UTC)


# --- a check-in fires, once ----------------------------------------------------------------------


def test_a_check_in_fires_once_when_the_clock_reaches_it(sessions):
    """Nothing before its time; at its time one outbox message with the four answers; never a second one."""
    champion = new_champion(sessions)
    due = NOW + timedelta(days=14)
    ids = make_pledge(sessions, champion, "Speak up at the PRG about waiting times", due)
    dispatcher = CheckInDispatcher(sessions)

    assert dispatcher.run_once(NOW).queued == 0
    assert dispatcher.run_once(due - timedelta(seconds=1)).queued == 0
    assert outbox_rows(sessions) == []

    result = dispatcher.run_once(due + timedelta(seconds=1))
    assert result.queued == 1 and result.late == 0
    [message] = outbox_rows(sessions)
    assert message.kind == "checkin" and message.champion_id == champion
    assert message.source_key == check_in_source_key(ids["check_in"])
    assert '"Speak up at the PRG about waiting times"' in message.text
    assert "How is it going?" in message.text and "Monday 9 November" in message.text  # the day it was made
    assert [b["title"] for b in message.buttons] == ["Done", "In progress", "Need help", "Let it go"]
    payloads = [b["payload"] for b in message.buttons]
    assert payloads[0] == f'/check_in_answer{{"ci_id": "{ids["check_in"]}", "ci_answer": "done"}}'
    assert [json.loads(p[len("/check_in_answer"):])["ci_answer"] for p in payloads] == [
        "done", "in_progress", "need_help", "let_go"]

    row = check_in_row(sessions, ids["check_in"])
    assert row.status == "queued" and row.outbound_id == message.id and row.handled_at is not None

    for later in (due + timedelta(seconds=2), due + timedelta(days=3)):
        assert dispatcher.run_once(later).queued == 0
    assert len(outbox_rows(sessions)) == 1


async def test_the_scheduler_tick_hands_over_check_ins(sessions, tmp_path):
    """The reminder scheduler's tick (with a chosen now) also sends due check-ins, once."""
    champion = new_champion(sessions)
    due = NOW + timedelta(days=30)
    ids = make_pledge(sessions, champion, "Ask for the papers a week early", due)
    scheduler = ReminderScheduler(sessions, data_dir=tmp_path)  # ticked by hand: never started
    await scheduler.tick(now=NOW)
    assert outbox_rows(sessions) == []
    await scheduler.tick(now=due + timedelta(minutes=1))
    await scheduler.tick(now=due + timedelta(minutes=2))
    [message] = outbox_rows(sessions)
    assert message.source_key == f"checkin:{ids['check_in']}"
    assert scheduler.check_ins_queued == 1 and scheduler.ticks == 3


async def test_a_failing_check_in_pass_does_not_stop_the_reminders(sessions, tmp_path, caplog):
    """A check-in failure is logged on its own; the reminder pass still runs."""
    scheduler = ReminderScheduler(sessions, data_dir=tmp_path)

    def broken(now=None):
        raise RuntimeError("database hiccup")

    scheduler.check_in_dispatcher.run_once = broken
    await scheduler.tick(now=NOW)
    assert scheduler.ticks == 1
    assert "check-in pass failed" in caplog.text


def test_a_crash_between_outbox_and_marking_sends_once(sessions):
    """Stored in the outbox but not marked (the process died): the next pass marks it and adds nothing."""
    champion = new_champion(sessions)
    ids = make_pledge(sessions, champion, "Read the papers before each meeting", NOW)
    outbound = OutboxRepository(sessions).enqueue(champion, "earlier copy", kind="checkin",
                                                  source_key=check_in_source_key(ids["check_in"]))
    assert CheckInDispatcher(sessions).run_once(NOW + timedelta(seconds=1)).queued == 1
    assert [m.id for m in outbox_rows(sessions)] == [outbound]
    assert check_in_row(sessions, ids["check_in"]).outbound_id == outbound


def test_a_late_check_in_is_simply_sent_late(sessions):
    """The service was down over its time: it still goes, with no "missed"."""
    champion = new_champion(sessions)
    ids = make_pledge(sessions, champion, "Bring a carer's view to the panel", NOW - timedelta(days=3))
    result = CheckInDispatcher(sessions).run_once(NOW)
    assert result.queued == 1 and result.late == 1
    assert check_in_row(sessions, ids["check_in"]).status == "queued"
    assert "How is it going?" in outbox_rows(sessions)[0].text


def test_no_check_in_for_champions_being_erased_or_finished_pledges(sessions, repo):
    """Champions who asked for their data to be deleted get nothing; a done pledge's check-ins never go."""
    erased = new_champion(sessions, erasure_requested_at=NOW - timedelta(hours=1))
    make_pledge(sessions, erased, "Erased champion's pledge", NOW - timedelta(minutes=5))
    champion = new_champion(sessions)
    finished = make_pledge(sessions, champion, "Already done", NOW - timedelta(minutes=5))
    with sessions() as session:  # closed by hand, its check-in left pending
        session.execute(update(Pledge).where(Pledge.id == finished["pledge"]).values(status="done"))
        session.commit()
    kept = make_pledge(sessions, champion, "Still going", NOW - timedelta(minutes=5))
    assert [d.id for d in repo.due(NOW)] == [kept["check_in"]]
    assert CheckInDispatcher(sessions).run_once(NOW).queued == 1
    assert [m.source_key for m in outbox_rows(sessions)] == [check_in_source_key(kept["check_in"])]


def test_many_due_check_ins_go_in_batches(sessions):
    """More check-ins than one batch all go in a single pass, one message each."""
    champions = [new_champion(sessions) for _ in range(5)]
    for number, champion in enumerate(champions):
        make_pledge(sessions, champion, f"Pledge {number}", NOW - timedelta(minutes=number))
    result = CheckInDispatcher(sessions, batch_size=2).run_once(NOW)
    assert result.queued == 5
    assert sorted(m.champion_id for m in outbox_rows(sessions)) == sorted(champions)


# --- recording each answer -----------------------------------------------------------------------


def sent_check_in(sessions, champion: int, text: str = "Speak up at the PRG") -> Dict[str, int]:
    """A pledge whose first check-in has just been sent, plus a second check-in still to go."""
    ids = make_pledge(sessions, champion, text, NOW - timedelta(minutes=1))
    CheckInDispatcher(sessions).run_once(NOW)
    ids["later"] = CheckInRepository(sessions).add_check_in(champion, ids["pledge"], NOW + timedelta(days=60), NOW).id
    return ids


def test_done_marks_the_pledge_done_and_cancels_the_rest(sessions, repo):
    """"Done": the pledge is done (with when), the check-in answered, its other check-ins cancelled."""
    champion = new_champion(sessions)
    ids = sent_check_in(sessions, champion)
    result = repo.answer(champion, ids["check_in"], "done", NOW)
    assert result.outcome == RECORDED and result.pledge.status == "done" and result.next_check_in is None
    pledge = pledge_row(sessions, ids["pledge"])
    assert pledge.status == "done" and pledge.done_at is not None
    answered = check_in_row(sessions, ids["check_in"])
    assert (answered.status, answered.answer) == ("answered", "done") and answered.answered_at is not None
    assert check_in_row(sessions, ids["later"]).status == "cancelled"
    # Tapped again (or a second button): already answered, nothing changes.
    again = repo.answer(champion, ids["check_in"], "let_go", NOW)
    assert again.outcome == ALREADY_ANSWERED and pledge_row(sessions, ids["pledge"]).status == "done"


def test_in_progress_schedules_the_next_check_in(sessions, repo):
    """"In progress": recorded, and a new check-in two weeks on at 10am London time (the default)."""
    champion = new_champion(sessions)
    ids = make_pledge(sessions, champion, "Join the carers forum", NOW - timedelta(minutes=1))
    CheckInDispatcher(sessions).run_once(NOW)
    result = repo.answer(champion, ids["check_in"], "in_progress", NOW)
    assert result.outcome == RECORDED and result.pledge.status == "in_progress"
    assert result.next_check_in.due_at == london(2026, 12, 7)  # Monday 7 December, 10am
    rows = check_ins_of(sessions, ids["pledge"])
    assert [(r.status, r.answer) for r in rows] == [("answered", "in_progress"), ("pending", None)]
    # The new check-in fires in its turn.
    assert CheckInDispatcher(sessions).run_once(london(2026, 12, 7, 10, 1)).queued == 1
    assert check_in_row(sessions, rows[1].id).status == "queued"


def test_need_help_and_let_go(sessions, repo):
    """"Need help" is recorded (no new check-in); "let it go" closes the pledge and cancels what was still to go."""
    champion = new_champion(sessions)
    helped = make_pledge(sessions, champion, "Find a mentor", NOW - timedelta(minutes=1))
    dropped = sent_check_in(sessions, champion, "Start a newsletter")
    result = repo.answer(champion, helped["check_in"], "need_help", NOW)
    assert result.outcome == RECORDED and pledge_row(sessions, helped["pledge"]).status == "need_help"
    assert len(check_ins_of(sessions, helped["pledge"])) == 1
    result = repo.answer(champion, dropped["check_in"], "let_go", NOW)
    pledge = pledge_row(sessions, dropped["pledge"])
    assert result.outcome == RECORDED and pledge.status == "let_go" and pledge.done_at is None
    assert check_in_row(sessions, dropped["later"]).status == "cancelled"


def test_answers_to_someone_elses_or_unknown_check_ins_are_refused(sessions, repo):
    """Another champion's check-in, an unknown id and nonsense ids are "not found"; nothing changes."""
    owner, other = new_champion(sessions), new_champion(sessions)
    ids = sent_check_in(sessions, owner)
    for champion, check_in_id in ((other, ids["check_in"]), (owner, 999999), (owner, "abc"), (owner, "-3"),
                                  (owner, "1" * 40), (owner, None)):
        assert repo.answer(champion, check_in_id, "done", NOW).outcome == NOT_FOUND
    assert repo.answer_pledge(other, ids["pledge"], "done", NOW).outcome == NOT_FOUND
    assert repo.reschedule(other, ids["later"], NOW + timedelta(days=3), NOW) is None
    assert pledge_row(sessions, ids["pledge"]).status == "open"
    with pytest.raises(ValueError):
        repo.answer(owner, ids["check_in"], "maybe", NOW)


def test_mark_done_at_any_time(sessions, repo):
    """Marked done without a check-in: the check-in waiting for an answer is answered, later ones cancelled."""
    champion = new_champion(sessions)
    ids = sent_check_in(sessions, champion)
    result = repo.mark_done(champion, ids["pledge"], NOW)
    assert result.outcome == RECORDED and result.pledge.status == "done"
    assert check_in_row(sessions, ids["check_in"]).answer == "done"
    assert check_in_row(sessions, ids["later"]).status == "cancelled"
    assert repo.mark_done(champion, ids["pledge"], NOW).outcome == CLOSED
    assert repo.answer(champion, ids["check_in"], "in_progress", NOW).outcome == ALREADY_ANSWERED


def test_in_progress_keeps_a_check_in_already_coming(sessions, repo):
    """"In progress" when a check-in is already planned adds no second one."""
    champion = new_champion(sessions)
    ids = sent_check_in(sessions, champion)
    result = repo.answer(champion, ids["check_in"], "in_progress", NOW)
    assert result.next_check_in.id == ids["later"]
    assert [r.status for r in check_ins_of(sessions, ids["pledge"])] == ["answered", "pending"]


def test_list_pledges_with_next_check_in(sessions, repo):
    """The champion's pledges, each with its status and soonest check-in still to go; nobody else's."""
    champion, other = new_champion(sessions), new_champion(sessions)
    first = make_pledge(sessions, champion, "First", NOW + timedelta(days=3))
    second = make_pledge(sessions, champion, "Second")
    make_pledge(sessions, other, "Not mine", NOW)
    pledges = repo.pledges(champion)
    assert [p.text for p in pledges] == ["First", "Second"]
    assert pledges[0].next_check_in.id == first["check_in"] and pledges[1].next_check_in is None
    assert repo.pledge(other, second["pledge"]) is None


# --- dates ---------------------------------------------------------------------------------------


def test_next_check_in_dates():
    """Two weeks and a month on, at 10am local time, across month ends, the clocks and other zones."""
    assert check_in_due("two_weeks", NOW) == london(2026, 12, 7)
    assert check_in_due("month", NOW) == london(2026, 12, 23)
    assert check_in_due("month", london(2027, 1, 31, 22)) == london(2027, 2, 28)  # February is shorter
    assert check_in_due("two_weeks", london(2027, 3, 20, 9)) == datetime(2027, 4, 3, 9, 0, tzinfo=UTC)  # BST
    assert check_in_due("two_weeks", NOW, "America/New_York") == datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    assert check_in_due("two_weeks", NOW, "Not/AZone") == london(2026, 12, 7)
    with pytest.raises(ValueError):
        check_in_due("never", NOW)


@pytest.mark.parametrize("text,answer", [
    ("still working on it", "in_progress"),
    ("It's not done yet", "in_progress"),
    ("i need some help with my pledge", "need_help"),
    ("I'm stuck", "need_help"),
    ("I want to let it go", "let_go"),
    ("I'm dropping that pledge", "let_go"),
    ("finished it last week!", "done"),
    ("hello", None),
    ("", None),
    ("/check_in_answer", None),
])
def test_typed_answers_are_read(text, answer):
    """Typed answers map to the four check-in answers (or none)."""
    assert read_answer(text) == answer


def test_typed_next_check_in_choices_are_read():
    """"in a month", "a fortnight" name the choices; other text doesn't."""
    assert read_when_choice("check in again in a month") == "month"
    assert read_when_choice("in a fortnight please") == "two_weeks"
    assert read_when_choice("5 January") is None


# --- the actions ---------------------------------------------------------------------------------


@pytest.fixture
def organisations_file(tmp_path, monkeypatch):
    """An organisations file where Leeds has a contact and South Tyneside has none."""
    path = tmp_path / "organisations.yml"
    path.write_text(textwrap.dedent(ORGANISATIONS), encoding="utf-8")
    monkeypatch.setenv("ORGANISATIONS_FILE", str(path))
    reset_settings()
    yield path
    reset_settings()


@pytest.fixture
def action_sessions(sessions, organisations_file):
    """The actions use the test database (SQLite and PostgreSQL) with the clock pinned to NOW."""
    use_sessions(sessions)
    set_clock(lambda: NOW)
    yield sessions
    set_clock(None)
    use_sessions(None)


@pytest.fixture
def sqlite_sessions(tmp_path, organisations_file):
    """The actions on a migrated SQLite file (where the database kind doesn't matter)."""
    with actions_database(tmp_path, NOW) as factory:
        yield factory


def parse(text: str, intent: str) -> Dict[str, Any]:
    """What NLU makes of text (a button payload is certain)."""
    return nlu_result(text, intent, 0.9, None)


ACTIONS = {
    "check_in_answer": ac.ActionCheckInAnswer,
    "check_in_when": ac.ActionCheckInWhen,
    "list_pledges": ac.ActionListPledges,
    "pledge_done": ac.ActionPledgeDone,
    "deny": None,
}


class Champ:
    """One champion chatting: each message runs the action its intent's rule runs."""

    def __init__(self, sessions, **values: Any) -> None:
        """A new web champion (with extra column values such as organisation)."""
        external = uuid.uuid4().hex[:12]
        self.sender = f"web-{external}"
        self.id = new_champion(sessions, external, **values)

    async def send(self, text: str, intent: str = "nlu_fallback") -> List[Dict[str, Any]]:
        """The champion types or taps text; returns the messages the action sent."""
        latest = parse(text, intent)
        action = ACTIONS[latest["intent"]["name"]]
        tracker = Tracker(self.sender, {}, latest, [{"event": "user", "text": text, "parse_data": latest}],
                          False, None, {}, "action_listen")
        dispatcher = CollectingDispatcher()
        await action().run(dispatcher, tracker, {"responses": {}})
        return dispatcher.messages

    async def tap(self, messages: List[Dict[str, Any]], title: str) -> List[Dict[str, Any]]:
        """Tap the button with this title in messages."""
        payload = next(b["payload"] for m in messages for b in m.get("buttons") or [] if b["title"] == title)
        return await self.send(payload)


def text_of(messages: List[Dict[str, Any]]) -> str:
    """Everything said, as one string (responses by name)."""
    return "\n".join(m.get("text") or m.get("response") or "" for m in messages)


def titles(messages: List[Dict[str, Any]]) -> List[str]:
    """Every button title offered."""
    return [b["title"] for m in messages for b in m.get("buttons") or []]


def the_check_in_message(sessions, champion_id: int) -> List[Dict[str, Any]]:
    """The latest check-in message sent to the champion, as the chat shows it (text and buttons)."""
    rows = [m for m in outbox_rows(sessions) if m.champion_id == champion_id and m.kind == "checkin"]
    return [{"text": rows[-1].text, "buttons": rows[-1].buttons}]


async def test_follow_a_pledge_through_its_check_ins(action_sessions):
    """In progress (then "In a month"), the next check-in fires a month on, need help gives the team's contact, then done."""
    sessions = action_sessions
    champ = Champ(sessions, organisation="leeds")
    ids = make_pledge(sessions, champ.id, "Speak up at the PRG about waiting times", NOW + timedelta(days=14))
    dispatcher = CheckInDispatcher(sessions)
    first_due = NOW + timedelta(days=14, minutes=1)
    assert dispatcher.run_once(first_due).queued == 1
    set_clock(lambda: first_due)  # the champion answers when it arrives

    said = await champ.tap(the_check_in_message(sessions, champ.id), "In progress")
    assert "is in progress" in text_of(said) and "Monday 21 December" in text_of(said)
    assert titles(said) == ["In 2 weeks", "In a month"]
    said = await champ.tap(said, "In a month")
    assert text_of(said) == 'OK, I\'ll check in about "Speak up at the PRG about waiting times" on Thursday 7 January 2027.'

    assert dispatcher.run_once(first_due + timedelta(days=20)).queued == 0
    assert dispatcher.run_once(london(2027, 1, 7, 10, 1)).queued == 1
    set_clock(lambda: london(2027, 1, 7, 10, 5))
    said = await champ.tap(the_check_in_message(sessions, champ.id), "Need help")
    assert "you'd like some help" in text_of(said)
    contact = [m for m in said if m.get("response") == "utter_engagement_contact"]
    assert contact and contact[0]["contact"] == "The Leeds engagement team: team@example.org"
    assert pledge_row(sessions, ids["pledge"]).status == "need_help"

    said = await champ.send("/list_pledges")
    assert '"Speak up at the PRG about waiting times": needs help' in text_of(said)
    said = await champ.tap(said, "Done: Speak up at the PRG about…")
    assert "Well done!" in text_of(said)
    assert pledge_row(sessions, ids["pledge"]).status == "done"
    assert [r.answer for r in check_ins_of(sessions, ids["pledge"])] == ["in_progress", "need_help"]


async def test_each_tapped_answer_is_recorded(sqlite_sessions):
    """Done, in progress, need help, let it go: each tapped at a check-in is saved and answered in words."""
    sessions = sqlite_sessions
    replies = {"Done": "Well done!", "In progress": "is in progress", "Need help": "you'd like some help",
               "Let it go": "plans change"}
    statuses = {"Done": "done", "In progress": "in_progress", "Need help": "need_help", "Let it go": "let_go"}
    for button, words in replies.items():
        champ = Champ(sessions, organisation="south-tyneside")
        ids = make_pledge(sessions, champ.id, f"Pledge for {button}", NOW - timedelta(minutes=1))
        CheckInDispatcher(sessions).run_once(NOW)
        said = await champ.tap(the_check_in_message(sessions, champ.id), button)
        assert words in text_of(said)
        assert pledge_row(sessions, ids["pledge"]).status == statuses[button]
        assert check_in_row(sessions, ids["check_in"]).answer == statuses[button]
        if button == "Need help":  # South Tyneside has no details configured: said plainly
            assert [m.get("response") for m in said][1:] == ["utter_engagement_no_details"]
        # A second tap on the same message changes nothing and says so.
        again = await champ.tap(the_check_in_message(sessions, champ.id), "Done")
        assert "already answered" in text_of(again) and titles(again) == ["My pledges"]
        assert pledge_row(sessions, ids["pledge"]).status == statuses[button]


async def test_need_help_before_choosing_an_organisation(sqlite_sessions):
    """Need help with no organisation saved: recorded, then the organisation question to find their team."""
    champ = Champ(sqlite_sessions)
    make_pledge(sqlite_sessions, champ.id, "Visit the ward", NOW - timedelta(minutes=1))
    CheckInDispatcher(sqlite_sessions).run_once(NOW)
    said = await champ.tap(the_check_in_message(sqlite_sessions, champ.id), "Need help")
    assert [m.get("response") for m in said][1:] == ["utter_engagement_need_organisation"]
    assert "Leeds" in titles(said)


async def test_stale_foreign_and_unknown_check_ins_get_a_clear_reply(sqlite_sessions):
    """Someone else's check-in, an unknown or garbled id, and a check-in of a pledge already done."""
    sessions = sqlite_sessions
    owner, other = Champ(sessions), Champ(sessions)
    ids = sent_check_in(sessions, owner.id)
    not_found = CONTENT["replies"]["not_found"]
    for payload in (f'/check_in_answer{{"ci_id": "{ids["check_in"]}", "ci_answer": "done"}}',
                    '/check_in_answer{"ci_id": "987654", "ci_answer": "done"}',
                    '/check_in_answer{"ci_id": "<script>", "ci_answer": "done"}',
                    '/check_in_answer{"ci_pledge": "DROP TABLE pledges", "ci_answer": "done"}',
                    f'/check_in_when{{"ci_id": "{ids["later"]}", "ci_when": "month"}}'):
        said = await other.send(payload)
        assert text_of(said) == not_found, payload
    assert pledge_row(sessions, ids["pledge"]).status == "open"
    await owner.send("/pledge_done" + json.dumps({"ci_pledge": str(ids["pledge"])}))
    said = await owner.send(f'/check_in_answer{{"ci_id": "{ids["check_in"]}", "ci_answer": "in_progress"}}')
    assert "already answered" in text_of(said)
    said = await owner.send(f'/check_in_when{{"ci_id": "{ids["later"]}", "ci_when": "month"}}')
    assert text_of(said) == not_found  # cancelled when it was marked done


async def test_typed_answers_find_the_latest_check_in(sqlite_sessions):
    """"I need some help with my pledge" answers the check-in just sent; an unclear one asks with buttons."""
    sessions = sqlite_sessions
    champ = Champ(sessions, organisation="leeds")
    ids = make_pledge(sessions, champ.id, "Talk to the practice manager", NOW - timedelta(minutes=1))
    CheckInDispatcher(sessions).run_once(NOW)
    said = await champ.send("about my pledge", "check_in_answer")
    assert 'How is "Talk to the practice manager" going?' in text_of(said)
    assert titles(said) == ["Done", "In progress", "Need help", "Let it go"]
    said = await champ.send("I need some help with my pledge", "check_in_answer")
    assert "utter_engagement_contact" in [m.get("response") for m in said]
    assert check_in_row(sessions, ids["check_in"]).answer == "need_help"


async def test_typed_answers_with_several_open_pledges_ask_which(sqlite_sessions):
    """No check-in waiting and two open pledges: "which one?" with buttons that carry the answer."""
    sessions = sqlite_sessions
    champ = Champ(sessions)
    make_pledge(sessions, champ.id, "Read the papers")
    second = make_pledge(sessions, champ.id, "Ask one question per meeting")
    said = await champ.send("still working on my pledge", "check_in_answer")
    assert text_of(said) == "Which pledge is that about?"
    assert titles(said) == ["Read the papers", "Ask one question per meeting"]
    said = await champ.tap(said, "Ask one question per meeting")
    assert "is in progress" in text_of(said)
    assert pledge_row(sessions, second["pledge"]).status == "in_progress"
    assert [r.status for r in check_ins_of(sessions, second["pledge"])] == ["pending"]


async def test_typed_next_check_in_date(sqlite_sessions):
    """"Check in with me on 5 January" moves the check-in just added; nonsense and past days ask again."""
    sessions = sqlite_sessions
    champ = Champ(sessions)
    ids = make_pledge(sessions, champ.id, "Join the PPG", NOW - timedelta(minutes=1))
    CheckInDispatcher(sessions).run_once(NOW)
    await champ.send("/check_in_answer" + json.dumps({"ci_id": str(ids["check_in"]), "ci_answer": "in_progress"}))
    said = await champ.send("check in with me on 5 January", "check_in_when")
    assert text_of(said) == 'OK, I\'ll check in about "Join the PPG" on Tuesday 5 January 2027.'
    assert check_ins_of(sessions, ids["pledge"])[-1].due_at.replace(tzinfo=UTC) == london(2027, 1, 5)
    said = await champ.send("check in whenever 🙂", "check_in_when")
    assert text_of(said).startswith("Sorry, I couldn't find a day") and titles(said) == ["In 2 weeks", "In a month"]
    said = await champ.send("check in on 1 November", "check_in_when")
    assert "already gone" in text_of(said)


async def test_list_pledges_in_the_champions_zone(action_sessions):
    """Status in words and the next check-in date in the champion's own time zone; done ones say when."""
    sessions = action_sessions
    champ = Champ(sessions, time_zone="America/New_York")
    # 3am on Tuesday 8 December in London is still Monday 7 December in New York.
    waiting = make_pledge(sessions, champ.id, "Speak up at the PRG", datetime(2026, 12, 8, 3, 0, tzinfo=UTC))
    finished = make_pledge(sessions, champ.id, "Read the terms of reference")
    CheckInRepository(sessions).mark_done(champ.id, finished["pledge"], NOW - timedelta(days=2))
    said = await champ.send("what were my pledges?", "list_pledges")
    lines = text_of(said).splitlines()
    assert lines[0] == "Your pledges:"
    assert lines[1] == '• "Speak up at the PRG": not checked in yet, next check-in Monday 7 December'
    assert lines[2] == '• "Read the terms of reference": done on Saturday 21 November'
    assert titles(said) == ["Done: Speak up at the PRG"]
    assert waiting["check_in"] == check_ins_of(sessions, waiting["pledge"])[0].id


async def test_list_with_no_pledges_and_a_long_list(sqlite_sessions):
    """No pledges: where the idea comes from and a button to make one; many: the first few and a count."""
    sessions = sqlite_sessions
    champ = Champ(sessions)
    said = await champ.send("what were my pledges", "list_pledges")
    assert "#3thingsNHS" in text_of(said) and titles(said) == ["Make a pledge"]
    for number in range(11):
        make_pledge(sessions, champ.id, f"Pledge number {number} " + "with many words " * 10)
    said = await champ.send("what were my pledges", "list_pledges")
    text = text_of(said)
    assert len(text.split()) <= 90 and text.endswith("…and 5 more.")
    assert len(titles(said)) == CONTENT["buttons"]["max_pledge_buttons"]


async def test_pledge_done_asks_which_then_confirms(sqlite_sessions):
    """"I've done my pledge": with one open pledge, confirm first; with several, which one; none, say so."""
    sessions = sqlite_sessions
    champ = Champ(sessions)
    said = await champ.send("I've done my pledge", "pledge_done")
    assert "haven't made any pledges" in text_of(said)
    only = make_pledge(sessions, champ.id, "Visit the stroke ward", NOW + timedelta(days=3))
    said = await champ.send("I've done my pledge", "pledge_done")
    assert text_of(said) == 'Shall I mark "Visit the stroke ward" as done?'
    assert titles(said) == ["Yes, it's done", "Not yet"]
    assert pledge_row(sessions, only["pledge"]).status == "open"  # nothing until they confirm
    other = make_pledge(sessions, champ.id, "Write to the PALS team")
    said = await champ.send("mark my pledge as done", "pledge_done")
    assert text_of(said) == "Well done! Which pledge have you done?"
    said = await champ.tap(said, "Write to the PALS team")
    assert "Well done! I've marked your pledge as done" in text_of(said)
    assert pledge_row(sessions, other["pledge"]).status == "done"
    assert pledge_row(sessions, only["pledge"]).status == "open"
    said = await champ.send("/pledge_done" + json.dumps({"ci_pledge": str(other["pledge"])}))
    assert "already marked as done" in text_of(said)
    await champ.send("/pledge_done" + json.dumps({"ci_pledge": str(only["pledge"])}))
    assert check_ins_of(sessions, only["pledge"])[0].status == "cancelled"
    said = await champ.send("I've done my pledge", "pledge_done")
    assert "All your pledges are done or let go" in text_of(said)


def test_wording_fits_a_phone_and_cites_the_seed():
    """Every reply is short; the pledge idea quotes the seed it names."""
    import os

    seeds = Path(os.environ.get("SEEDS_DIR") or ROOT.parent / "shared" / "seeds")
    idea = CONTENT["pledge_idea"]
    seed = " ".join((seeds / idea["source"]).read_text(encoding="utf-8").split())
    assert " ".join(idea["quote"].split()) in seed
    for key, value in CONTENT["replies"].items():
        if isinstance(value, str):
            assert len(value.split()) <= 60, key


def test_check_in_days_are_dates():
    """A date button value (ISO) is accepted as a check-in day."""
    assert ac.next_check_in_time("2027-01-05", NOW, "Europe/London") == london(2027, 1, 5)
    assert ac.next_check_in_time("month", NOW, "Europe/London") == london(2026, 12, 23)
    assert isinstance(ac.next_check_in_time("next friday", NOW, "Europe/London"), list)
    assert date(2026, 11, 27) in ac.next_check_in_time("next friday", NOW, "Europe/London")
