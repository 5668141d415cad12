"""A champion's own data: "what do you know about me?" (summary and file) and "delete my data" (asked, confirmed).

Actions are run the way Rasa runs them (Tracker + CollectingDispatcher) on a real, migrated
app database; the file is checked against a real Rasa SQL tracker store (SQLite and PostgreSQL).
"""
from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import text

from actions import my_data as md
from actions.champions import ActionOptInMessages, ActionOptOutMessages
from actions.db import use_sessions
from actions.settings import reset_settings
from bot.db import load_models, make_engine, make_session_factory, migrate
from bot.delivery import Courier, WebSender
from bot.erasure import request_erasure
from bot.my_data import EXPORTED_TABLES, FILENAME, MyDataFiles, MyDataRepository, load_content
from bot.outbox import OutboxRepository
from bot.rasa_replies import rasa_messages
from bot.rasa_tracker import TrackerEvents
from bot.repository import ChatRepository
from bot.settings import load_settings
from tests.champion_data import (
    champion_tables,
    conversation_events,
    populate,
    save_conversation,
    tracker_store,
)

ROOT = Path(__file__).resolve().parent.parent
CONTENT = load_content()
BASICS = yaml.safe_load((ROOT / "domain" / "basics.yml").read_text())["responses"]


# --- driving the actions -------------------------------------------------------------------------


def parse(text_: str, intent: str) -> Dict[str, Any]:
    """What NLU would make of text (button payloads parsed like Rasa's /intent{json} syntax)."""
    match = re.fullmatch(r"/(\w+)(\{.*\})?", text_)
    entities: Dict[str, Any] = {}
    if match:
        intent = match.group(1)
        entities = json.loads(match.group(2)) if match.group(2) else {}
    return {"text": text_, "intent": {"name": intent, "confidence": 1.0},
            "entities": [{"entity": k, "value": v} for k, v in entities.items()]}


class Chat:
    """One champion's conversation, slots kept between turns as Rasa keeps them."""

    def __init__(self, sender: Optional[str] = None) -> None:
        """A conversation as sender (a fresh web champion by default)."""
        self.sender = sender or f"web-{uuid.uuid4()}"
        self.slots: Dict[str, Any] = {md.ASKED_SLOT: None}

    async def run(self, action, text_: str, intent: str = "nlu_fallback") -> List[Dict[str, Any]]:
        """The champion sends text, then action runs; returns what it said."""
        latest = parse(text_, intent)
        tracker = Tracker(self.sender, dict(self.slots), latest, [{"event": "user", "text": text_, "parse_data": latest}],
                          False, None, {}, "action_listen")
        dispatcher = CollectingDispatcher()
        for event in await action.run(dispatcher, tracker, {}):
            if event.get("event") == "slot":
                self.slots[event["name"]] = event["value"]
        return dispatcher.messages


def words(message: Dict[str, Any]) -> int:
    """How many words a message has."""
    return len((message.get("text") or "").split())


def payloads(message: Dict[str, Any]) -> List[str]:
    """The payloads of a message's buttons."""
    return [b["payload"] for b in message.get("buttons") or []]


@pytest.fixture
def sessions(engine, monkeypatch):
    """The actions use this migrated database (SQLite and PostgreSQL) and the default organisations."""
    monkeypatch.setenv("ORGANISATIONS_FILE", str(ROOT / "knowledge" / "organisations.yml"))
    reset_settings()
    factory = make_session_factory(engine)
    use_sessions(factory)
    yield factory
    use_sessions(None)
    reset_settings()


@pytest.fixture
def sqlite_sessions(tmp_path, monkeypatch):
    """The actions on a migrated SQLite file (where the database kind doesn't matter)."""
    monkeypatch.setenv("ORGANISATIONS_FILE", str(ROOT / "knowledge" / "organisations.yml"))
    reset_settings()
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    use_sessions(factory)
    yield factory
    use_sessions(None)
    engine.dispose()
    reset_settings()


# --- what do you know about me? ----------------------------------------------------------------


async def test_summary_gives_the_key_facts_in_one_phone_sized_message(sessions):
    """Channel, organisation, time zone, groups, projects, meetings, reflections, team messages; then the link."""
    me = populate(sessions)
    ChatRepository(sessions).set_opted_out(me.champion_id, True)
    summary, offer = await Chat(me.sender_id).run(md.ActionMyData(), "what do you know about me", "my_data")
    body = summary["text"]
    for fact in ("the web chat", "Leeds", "Europe/London", "Leeds 2026", "Projects: 1 (Stroke rehab)",
                 "Meetings: 2, 1 still to come", "Reminders still to go: 1", "Reflections: 1; pledges: 1 (1 still open)",
                 "Messages in our chat: 2", "engagement team: off"):
        assert fact in body, fact
    assert words(summary) <= 80 and not summary.get("buttons")
    assert offer["text"] == CONTENT["summary"]["download_web"]
    assert offer["custom"]["download"] == {
        "url": f"/api/my-data.json?sender_id={me.external_id}", "label": CONTENT["summary"]["download_label"]}
    assert payloads(offer) == ["/delete_my_data", "/opt_in_messages"]


async def test_a_new_champion_hears_there_is_little_held(sqlite_sessions):
    """Someone who has only just arrived: no organisation, groups, projects or meetings; team messages on."""
    [summary, offer] = await Chat().run(md.ActionMyData(), "show my data", "my_data")
    for line in ("Organisation: not given", "Groups: none", "Projects: none", "Meetings: none", "engagement team: on"):
        assert line in summary["text"]
    assert payloads(offer) == ["/delete_my_data", "/opt_out_messages"]


async def test_on_telegram_the_reply_carries_the_file_not_a_link(sqlite_sessions):
    """Telegram gets the file as a document (custom.attachment), never a web link."""
    me = populate(sqlite_sessions, channel="telegram")
    summary, offer = await Chat(me.sender_id).run(md.ActionMyData(), "what have you got on me", "my_data")
    assert "Telegram" in summary["text"]
    assert offer["text"] == CONTENT["summary"]["download_telegram"]
    assert offer["custom"] == {"attachment": "my_data"}
    # Rasa's REST reply for it: the text with buttons, then the custom part on its own.
    messages = rasa_messages([{"text": offer["text"], "buttons": offer["buttons"]}, {"custom": offer["custom"]}])
    assert messages[-1] == {"text": "", "buttons": [], "attachment": "my_data"}


async def test_after_asking_to_be_deleted_the_summary_says_it_is_under_way(sqlite_sessions):
    """Between 'yes, delete everything' and the erasure pass, nothing more is offered."""
    me = populate(sqlite_sessions)
    request_erasure(sqlite_sessions, me.champion_id)
    [reply] = await Chat(me.sender_id).run(md.ActionMyData(), "show my data", "my_data")
    assert reply["text"] == CONTENT["summary"]["erasing"]


# --- delete my data -------------------------------------------------------------------------------


def state(engine, champion_id: int) -> Dict[str, Any]:
    """The champion's erasure request and how many reminders and check-ins are still to go (plain SQL)."""
    with engine.connect() as c:
        return {
            "requested": c.execute(text("SELECT erasure_requested_at FROM champions WHERE id = :c"),
                                   {"c": champion_id}).scalar_one() is not None,
            "reminders_to_go": c.execute(text(
                "SELECT count(*) FROM reminders r JOIN meetings m ON m.id = r.meeting_id "
                "WHERE m.champion_id = :c AND r.status IN ('pending', 'queued')"), {"c": champion_id}).scalar_one(),
            "check_ins_to_go": c.execute(text(
                "SELECT count(*) FROM pledge_check_ins WHERE champion_id = :c AND status IN ('pending', 'queued')"),
                {"c": champion_id}).scalar_one(),
            "unsent": c.execute(text("SELECT count(*) FROM outbound_messages WHERE champion_id = :c AND status = 'queued'"),
                                {"c": champion_id}).scalar_one(),
        }


async def test_delete_asks_first_then_the_yes_button_stops_everything(engine, sessions):
    """The question explains what goes, with buttons; 'Yes, delete everything' stops it all at once."""
    me = populate(sessions)
    chat = Chat(me.sender_id)
    [question] = await chat.run(md.ActionDeleteMyData(), "delete my data", "delete_my_data")
    assert question["text"] == CONTENT["delete"]["ask"] and words(question) <= 80
    assert payloads(question) == ['/delete_my_data{"my_data_choice":"yes"}', '/delete_my_data{"my_data_choice":"no"}',
                                  "/my_data"]
    assert chat.slots[md.ASKED_SLOT] is True
    assert state(engine, me.champion_id) == {"requested": False, "reminders_to_go": 2, "check_ins_to_go": 2, "unsent": 2}

    [done] = await chat.run(md.ActionDeleteMyData(), '/delete_my_data{"my_data_choice":"yes"}')
    assert done["text"] == CONTENT["delete"]["done"] + " " + CONTENT["delete"]["done_web"]
    assert words(done) <= 80 and chat.slots[md.ASKED_SLOT] is False
    assert state(engine, me.champion_id) == {"requested": True, "reminders_to_go": 0, "check_ins_to_go": 0, "unsent": 0}


async def test_no_keeps_everything(engine, sessions):
    """'No, keep it' (tapped or typed) changes nothing."""
    me = populate(sessions)
    chat = Chat(me.sender_id)
    await chat.run(md.ActionDeleteMyData(), "forget me", "delete_my_data")
    [kept] = await chat.run(md.ActionDeleteMyData(), '/delete_my_data{"my_data_choice":"no"}')
    assert kept["text"] == CONTENT["delete"]["kept"]
    await chat.run(md.ActionDeleteMyData(), "forget me", "delete_my_data")
    [kept] = await chat.run(md.ActionDeleteMyData(), "no", "deny")
    assert kept["text"] == CONTENT["delete"]["kept"]
    assert state(engine, me.champion_id)["requested"] is False
    assert state(engine, me.champion_id)["reminders_to_go"] == 2


async def test_a_typed_yes_only_counts_straight_after_the_question(sqlite_sessions):
    """'yes' right after the question deletes; a 'yes' about something else gets the usual reply."""
    me = populate(sqlite_sessions, channel="telegram")
    chat = Chat(me.sender_id)
    [menu] = await chat.run(md.ActionDeleteMyData(), "yes", "affirm")
    assert menu == {**menu, "response": "utter_menu"} and "utter_menu" in BASICS
    [usual_no] = await chat.run(md.ActionDeleteMyData(), "no", "deny")
    assert usual_no["response"] == "utter_deny"
    with sqlite_sessions() as s:
        assert s.execute(text("SELECT erasure_requested_at FROM champions WHERE id = :c"),
                         {"c": me.champion_id}).scalar_one() is None
    await chat.run(md.ActionDeleteMyData(), "erase everything about me", "delete_my_data")
    [done] = await chat.run(md.ActionDeleteMyData(), "yes", "affirm")
    assert done["text"].endswith(CONTENT["delete"]["done_telegram"])
    with sqlite_sessions() as s:
        assert s.execute(text("SELECT erasure_requested_at FROM champions WHERE id = :c"),
                         {"c": me.champion_id}).scalar_one() is not None


async def test_database_down_gets_a_kind_reply_and_changes_nothing(tmp_path, monkeypatch):
    """No database: a kind 'try again', never a crash or a false 'done'."""
    monkeypatch.setenv("ORGANISATIONS_FILE", str(ROOT / "knowledge" / "organisations.yml"))
    reset_settings()
    engine = make_engine(f"sqlite:///{tmp_path}")  # a folder, not a database file
    use_sessions(make_session_factory(engine))
    try:
        chat = Chat()
        assert [m["text"] for m in await chat.run(md.ActionMyData(), "show my data", "my_data")] == [CONTENT["trouble"]]
        await chat.run(md.ActionDeleteMyData(), "delete my data", "delete_my_data")
        [reply] = await chat.run(md.ActionDeleteMyData(), '/delete_my_data{"my_data_choice":"yes"}')
        assert reply["text"] == CONTENT["trouble"]
    finally:
        use_sessions(None)
        engine.dispose()
        reset_settings()


# --- the file -----------------------------------------------------------------------------------


def test_the_file_holds_every_kind_of_row_and_the_conversation(engine, tracker_url):
    """Every table that leads to the champion has their rows in the file, with their Rasa events; nobody else's."""
    sessions = make_session_factory(engine)
    me = populate(sessions)
    other = populate(sessions)
    store = tracker_store(tracker_url)
    save_conversation(store, me.sender_id, conversation_events(["hello", "what do you know about me"], time.time() - 60))
    save_conversation(store, other.sender_id, conversation_events(["hi"], time.time() - 60))
    store.engine.dispose()
    tracker = TrackerEvents(tracker_url)
    try:
        raw = MyDataFiles(sessions, tracker).for_champion(me.champion_id)
    finally:
        tracker.close()
    data = json.loads(raw)
    assert data["format"] == "coproduction-companion/my-data" and data["about"]["tables"]
    tables = data["tables"]
    assert list(tables) == list(EXPORTED_TABLES) and set(tables) == champion_tables(load_models())
    assert {name for name, rows in tables.items() if not rows} == set()
    assert tables["champions"][0]["external_id"] == me.external_id
    assert tables["group_members"][0]["group_name"] == "Leeds 2026"
    assert [a["value"] for a in tables["step_answers"]] == ["shorter waits"]
    assert tables["reflections"][0]["takeaway"] == "they listened"
    assert sorted(r["status"] for r in tables["reminders"]) == ["pending", "queued", "sent"]
    assert len(tables["delivery_attempts"]) == 2 and len(tables["pledge_check_ins"]) == 3
    champion_ids = {row.get("champion_id") for rows in tables.values() for row in rows if "champion_id" in row}
    assert champion_ids == {me.champion_id}
    events = data["conversation"]["events"]
    assert data["conversation"]["sender_ids"] == [me.sender_id]
    assert [e["data"]["text"] for e in events if e["event"] == "user"] == ["hello", "what do you know about me"]
    assert {e["sender_id"] for e in events} == {me.sender_id}
    assert "Z" in tables["champions"][0]["created_at"] or "+00:00" in tables["champions"][0]["created_at"]


def test_no_file_for_a_champion_awaiting_erasure_or_unknown(sqlite_sessions):
    """Once they asked for deletion (or if they never existed) there is no file."""
    me = populate(sqlite_sessions)
    files = MyDataFiles(sqlite_sessions, None)
    assert json.loads(files.for_champion(me.champion_id))["conversation"] == {
        "sender_ids": [me.sender_id], "stored": False, "events": []}
    request_erasure(sqlite_sessions, me.champion_id)
    assert files.for_champion(me.champion_id) is None
    assert files.for_sender("web", "nobody") is None
    assert MyDataRepository(sqlite_sessions).summary(10**6) is None


# --- the web chat's download ----------------------------------------------------------------------


async def test_web_download_serves_the_file_to_its_owner_only(tmp_path, fake_rasa):
    """GET /api/my-data.json?sender_id=...: an attachment with their rows and conversation; 404 otherwise."""
    tracker_url = f"sqlite:///{tmp_path / 'rasa_tracker.db'}"
    endpoints = tmp_path / "endpoints.yml"
    endpoints.write_text(f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {tmp_path / 'rasa_tracker.db'}\n")
    settings = load_settings({"DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
                              "RASA_URL": fake_rasa.url, "RASA_ENDPOINTS": str(endpoints)})
    from bot.web import build_app

    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    me = populate(sessions)
    store = tracker_store(tracker_url)
    from rasa.shared.core.trackers import DialogueStateTracker

    await store.save(DialogueStateTracker.from_events(me.sender_id, conversation_events(["hello"], time.time() - 60)))
    store.engine.dispose()
    try:
        async with TestClient(TestServer(build_app(settings))) as client:
            response = await client.get("/api/my-data.json", params={"sender_id": me.external_id})
            assert response.status == 200
            assert response.headers["Content-Disposition"] == f'attachment; filename="{FILENAME}"'
            assert response.headers["Cache-Control"] == "no-store"
            data = json.loads(await response.read())
            assert data["tables"]["projects"][0]["name"] == "Stroke rehab"
            assert [e["data"]["text"] for e in data["conversation"]["events"] if e["event"] == "user"] == ["hello"]
            assert (await client.get("/api/my-data.json", params={"sender_id": "someone-else"})).status == 404
            assert (await client.get("/api/my-data.json", params={"sender_id": "../etc"})).status == 400
            assert (await client.get("/api/my-data.json")).status == 400
            request_erasure(sessions, me.champion_id)
            assert (await client.get("/api/my-data.json", params={"sender_id": me.external_id})).status == 404
    finally:
        engine.dispose()


def test_the_download_link_reaches_the_page_and_others_are_dropped():
    """Rasa's custom.download for the file becomes a link button; links elsewhere never do."""
    messages = rasa_messages([
        {"text": "You can download all of it."},
        {"custom": {"download": {"url": "/api/my-data.json?sender_id=ab", "label": "Download my data"}}},
        {"custom": {"download": {"url": "https://evil.example/api/my-data.json?x", "label": "Bad"}}},
        {"custom": {"attachment": "something-else"}},
    ])
    assert messages == [
        {"text": "You can download all of it.", "buttons": []},
        {"text": "", "buttons": [{"title": "Download my data", "url": "/api/my-data.json?sender_id=ab"}]},
    ]
    assert "/api/my-data.json?" in (ROOT / "web" / "chat.js").read_text()


# --- Telegram sends the file as a document --------------------------------------------------------


class StubBot:
    """Records what the Telegram side sends (send_message, send_document)."""

    def __init__(self) -> None:
        """Nothing sent yet."""
        self.messages: List[Dict[str, Any]] = []
        self.documents: List[Dict[str, Any]] = []

    async def send_message(self, chat_id, text_, **kwargs):
        """Record a message."""
        self.messages.append({"chat_id": chat_id, "text": text_})
        return SimpleNamespace(message_id=len(self.messages))

    async def send_document(self, chat_id, document, **kwargs):
        """Record a document with its bytes and file name."""
        self.documents.append({"chat_id": chat_id, "filename": document.filename, "data": document.input_file_content})
        return SimpleNamespace(message_id=100 + len(self.documents))


async def test_telegram_sends_the_file_as_a_document(tmp_path):
    """The reply's attachment becomes a JSON document with the chat's own data; the text goes as usual."""
    from bot.telegram_bot import SERVICES_KEY, Services, send_replies
    from bot.telegram_format import CallbackRepository, load_wording

    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    me = populate(sessions, channel="telegram")
    other = populate(sessions, channel="telegram")
    chats = ChatRepository(sessions)
    services = Services(settings=load_settings({"DATABASE_URL": url}), rasa_url="http://127.0.0.1:9",
                        chats=chats, callbacks=CallbackRepository(sessions), wording=load_wording(),
                        my_data=MyDataFiles(sessions, None))
    bot = StubBot()
    context = SimpleNamespace(bot=bot, bot_data={SERVICES_KEY: services})
    champion = chats.find_champion("telegram", me.external_id)
    try:
        await send_replies(context, champion, int(me.external_id), [
            {"text": CONTENT["summary"]["download_telegram"], "buttons": []},
            {"text": "", "buttons": [], "attachment": "my_data"},
        ])
        assert [m["text"] for m in bot.messages] == [CONTENT["summary"]["download_telegram"]]
        [document] = bot.documents
        assert document["chat_id"] == int(me.external_id) and document["filename"] == FILENAME
        data = json.loads(document["data"])
        assert data["tables"]["champions"][0]["id"] == me.champion_id
        assert other.champion_id not in {r["champion_id"] for r in data["tables"]["chat_messages"]}
        # Awaiting erasure: no file, a kind "trouble" reply instead.
        request_erasure(sessions, me.champion_id)
        await send_replies(context, champion, int(me.external_id), [{"text": "", "buttons": [], "attachment": "my_data"}])
        assert len(bot.documents) == 1 and bot.messages[-1]["text"] == services.reply("trouble")
    finally:
        engine.dispose()


# --- stop and start team messages, from any channel ---------------------------------------------


@pytest.mark.parametrize("sender", ["web-0b5e2d8c-stop-start", "tg-4242424242"])
async def test_stop_and_start_team_messages_work_on_every_channel(sqlite_sessions, sender):
    """'Stop team messages' typed on the web chat or Telegram stops broadcasts (reminders still go); 'start' brings them back."""
    chat = Chat(sender)
    await chat.run(ActionOptOutMessages(), "stop messages from the team", "opt_out_messages")
    channel, external_id = ("web", sender[4:]) if sender.startswith("web-") else ("telegram", sender[3:])
    champion = ChatRepository(sqlite_sessions).find_champion(channel, external_id)
    outbox = OutboxRepository(sqlite_sessions)
    news = outbox.enqueue(champion.id, "News", kind="broadcast", source_key=f"news:{sender}")
    own = outbox.enqueue(champion.id, "Your reminder", kind="reminder", source_key=f"reminder:{sender}")

    class Sent:
        """A channel that accepts every message (Telegram's side is tested in tests/test_delivery.py)."""

        marks_sent = False

        def __init__(self):
            """Nothing sent yet."""
            self.texts: List[str] = []

        async def deliver(self, message):
            """Accept the message."""
            self.texts.append(message.text)
            return None

    sender_stub = Sent()
    courier = Courier(sqlite_sessions, {"web": WebSender(outbox) if channel == "web" else sender_stub,
                                        "telegram": sender_stub}, load_settings({}))
    try:
        while await courier.run_once():
            pass
        assert outbox.get(news).status == "skipped" and outbox.get(own).status == "sent"
        await chat.run(ActionOptInMessages(), "start team messages", "opt_in_messages")
        again = outbox.enqueue(champion.id, "More news", kind="broadcast", source_key=f"news2:{sender}")
        while await courier.run_once():
            pass
        assert outbox.get(again).status == "sent"
    finally:
        courier.close()


async def test_a_yes_payload_without_the_question_asks_first(engine, sessions):
    """A 'yes' button payload the champion was never shown (typed or forged) asks the question; nothing is deleted."""
    me = populate(sessions)
    chat = Chat(me.sender_id)
    [question] = await chat.run(md.ActionDeleteMyData(), '/delete_my_data{"my_data_choice":"yes"}')
    assert question["text"] == CONTENT["delete"]["ask"]
    assert state(engine, me.champion_id)["requested"] is False
