"""The web chat server: message round trips, odd input, Rasa outages and restarts (against a fake Rasa)."""
from __future__ import annotations

import dataclasses
import io
import json
import uuid

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from bot.settings import SettingsError, load_settings
from bot.models import DIRECTION_OUT
from bot.organisations import load_organisations
from bot.text import clean_text
from bot.web import REPOSITORY, SETTINGS, build_app, load_interface, load_question_text

WORDING = load_interface()["replies"]


def new_sender() -> str:
    """A fresh sender id like the page makes."""
    return str(uuid.uuid4())


@pytest_asyncio.fixture
async def client(app_settings, fake_rasa):
    """A test client for the web chat wired to the fake Rasa."""
    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url)
    async with TestClient(TestServer(build_app(settings))) as test_client:
        yield test_client


async def post(client, **body):
    """POST /api/messages with a JSON body; returns (status, json)."""
    data = io.BytesIO(json.dumps(body).encode())  # a stream: some bodies here are over 1 MB
    response = await client.post("/api/messages", data=data, headers={"Content-Type": "application/json"})
    return response.status, await response.json()


async def history(client, sender_id, **params):
    """The stored transcript for sender_id (params: after=..., limit=...)."""
    response = await client.get("/api/history", params={"sender_id": sender_id, **{k: str(v) for k, v in params.items()}})
    assert response.status == 200
    return (await response.json())["messages"]


def without_ids(messages):
    """Messages as the page shows them, without their stored ids."""
    return [{k: v for k, v in m.items() if k != "id"} for m in messages]


# --- settings -----------------------------------------------------------------------------------


def test_settings_defaults():
    """With nothing set, the documented defaults apply."""
    settings = load_settings({})
    assert settings.database_url == "sqlite:///data/app.db"
    assert settings.rasa_url == "http://127.0.0.1:5005"
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 8000)
    assert settings.rasa_timeout_seconds == 10
    assert settings.max_message_chars == 2000


def test_settings_from_environment():
    """Every value can be set from the environment; DATABASE_URL follows DATA_DIR."""
    settings = load_settings({"DATA_DIR": "/srv/x", "WEB_PORT": "9000", "RASA_URL": "http://r:1/",
                              "MAX_MESSAGE_CHARS": "50", "RASA_TIMEOUT_SECONDS": "2.5"})
    assert settings.database_url == "sqlite:////srv/x/app.db"
    assert settings.web_port == 9000 and settings.max_message_chars == 50
    assert settings.rasa_url == "http://r:1" and settings.rasa_timeout_seconds == 2.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.web_port = 1  # type: ignore[misc]


@pytest.mark.parametrize("name,value", [("WEB_PORT", "eighty"), ("MAX_MESSAGE_CHARS", "0"),
                                        ("RASA_TIMEOUT_SECONDS", "-1")])
def test_settings_refuse_bad_values(name, value):
    """A bad number names the variable instead of failing somewhere later."""
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_clean_text_drops_control_characters_but_keeps_line_breaks():
    """Control characters go; newlines stay; Windows line ends become plain ones."""
    assert clean_text("  a\x00b\x07c\x1b[0m\r\nd\u200fe \t") == "abc[0m\nd\u200fe"


# --- round trips --------------------------------------------------------------------------------


async def test_message_round_trip_is_stored_and_returned(client, fake_rasa):
    """A message reaches Rasa as web-<sender>, and both sides of the exchange are in the history."""
    sender = new_sender()
    status, body = await post(client, sender_id=sender, text="  hello there  ")
    assert status == 200 and body["accepted"] is True
    assert [m["text"] for m in body["messages"]] == ["You said: hello there", "Anything else?"]
    assert body["messages"][1]["buttons"][0] == {"title": "Tell me more", "payload": "/tell_me_more"}
    assert fake_rasa.requests == [{"sender": f"web-{sender}", "message": "hello there"}]

    messages = await history(client, sender)
    assert [(m["direction"], m["text"]) for m in messages] == [
        ("in", "hello there"), ("out", "You said: hello there"), ("out", "Anything else?")]
    assert messages[2]["buttons"][1]["payload"] == "/ask_five_steps"
    assert messages[0]["created_at"].endswith("+00:00")


async def test_button_sends_payload_and_shows_title(client, fake_rasa):
    """A tapped button sends its payload to Rasa; the transcript shows its title."""
    sender = new_sender()
    status, body = await post(client, sender_id=sender, payload="/ask_five_steps", title="The five steps")
    assert status == 200
    assert body["messages"][0]["text"] == "You chose /ask_five_steps"
    assert fake_rasa.requests[-1]["message"] == "/ask_five_steps"
    assert [m["text"] for m in await history(client, sender)][0] == "The five steps"


async def test_button_without_title_shows_payload(client, fake_rasa):
    """A button tap with no title falls back to showing the payload."""
    sender = new_sender()
    status, _ = await post(client, sender_id=sender, payload="/help")
    assert status == 200
    assert (await history(client, sender))[0]["text"] == "/help"


async def test_conversations_are_kept_apart(client):
    """One sender never sees another's transcript; an unknown sender has an empty one."""
    first, second = new_sender(), new_sender()
    await post(client, sender_id=first, text="mine")
    assert await history(client, second) == []
    assert [m["text"] for m in await history(client, first)][0] == "mine"


# --- odd input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", " \n\t \r\n ", "\x00\x01\x1f"])
async def test_empty_message_gets_friendly_reply_without_rasa(client, fake_rasa, text):
    """Nothing to say: a kind nudge, Rasa is not bothered and nothing is stored."""
    sender = new_sender()
    status, body = await post(client, sender_id=sender, text=text)
    assert status == 200
    assert body["accepted"] is False and body["reason"] == "empty"
    assert body["messages"][0]["text"] == WORDING["empty_message"]
    assert fake_rasa.requests == []
    assert await history(client, sender) == []


@pytest.mark.parametrize("text", ["x" * 100_000, "😀" * 100_000, "word " * 401],
                         ids=["100k-ascii", "100k-emoji", "just-over-limit"])
async def test_too_long_message_asks_to_shorten(client, fake_rasa, text):
    """Over MAX_MESSAGE_CHARS: asked to shorten it; not sent to Rasa, not stored."""
    sender = new_sender()
    status, body = await post(client, sender_id=sender, text=text)
    assert status == 200
    assert body["reason"] == "too_long"
    assert body["messages"][0]["text"] == WORDING["too_long"]
    assert fake_rasa.requests == []
    assert await history(client, sender) == []


async def test_too_long_button_title_asks_to_shorten(client, fake_rasa):
    """The length limit applies to a button's title too."""
    status, body = await post(client, sender_id=new_sender(), payload="/help", title="t" * 5000)
    assert status == 200 and body["reason"] == "too_long" and fake_rasa.requests == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("😀🎉👍🏽", "😀🎉👍🏽"),
        ("مرحبا، ما هو الإنتاج المشترك؟", "مرحبا، ما هو الإنتاج المشترك؟"),
        ("什么是共同生产？", "什么是共同生产？"),
        ("שלום עולם", "שלום עולם"),
        ("hello\x00\x07world\x1b[31m red", "helloworld[31m red"),
        ("<script>alert(1)</script><b>bold</b>", "<script>alert(1)</script><b>bold</b>"),
        ("'; DROP TABLE champions; --", "'; DROP TABLE champions; --"),
        ("Robert'); DELETE FROM chat_messages WHERE ('1'='1", "Robert'); DELETE FROM chat_messages WHERE ('1'='1"),
        ("line one\nline two", "line one\nline two"),
        ("lone surrogate \ud800 here", "lone surrogate  here"),
    ],
)
async def test_unusual_text_is_answered_and_stored_verbatim(client, fake_rasa, text, expected):
    """Emoji, right-to-left, CJK, control characters, markup and SQL: a clear reply, stored as text."""
    sender = new_sender()
    status, body = await post(client, sender_id=sender, text=text)
    assert status == 200 and body["accepted"] is True
    assert body["messages"][0]["text"] == f"You said: {expected}"
    assert fake_rasa.requests[-1]["message"] == expected
    stored = await history(client, sender)
    assert stored[0]["text"] == expected
    # The tables are still there (and still answering) after the SQL-looking text.
    assert len(await history(client, sender)) == 3


@pytest.mark.parametrize(
    "data,content_type",
    [
        ("{not json", "application/json"),
        ('{"sender_id": "abc", "text": "hi"', "application/json"),
        (b"\xff\xfe\xfa garbage", "application/json"),
        pytest.param("[" * 100_000 + "]" * 100_000, "application/json", id="deeply-nested"),
        ("", "application/json"),
        ('{"sender_id": "abc", "text": "hi"}', "text/plain"),
        ("sender_id=abc&text=hi", "application/x-www-form-urlencoded"),
        ('{"sender_id": "abc", "text": "hi"}', None),
    ],
)
async def test_malformed_requests_get_400_json(client, data, content_type):
    """Broken JSON or the wrong content type: a 400 with a JSON error, never a 500."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/api/messages", data=data, headers=headers)
    assert response.status == 400
    assert "error" in await response.json()


@pytest.mark.parametrize(
    "body",
    [
        ["a", "list"],
        "a string",
        None,
        {"text": "no sender"},
        {"sender_id": "", "text": "hi"},
        {"sender_id": "../../etc/passwd", "text": "hi"},
        {"sender_id": "a" * 65, "text": "hi"},
        {"sender_id": "has space", "text": "hi"},
        {"sender_id": 12345, "text": "hi"},
        {"sender_id": "abc"},
        {"sender_id": "abc", "text": 42},
        {"sender_id": "abc", "text": ["hi"]},
        {"sender_id": "abc", "payload": {"x": 1}},
        {"sender_id": "abc", "payload": "/help", "title": 7},
    ],
)
async def test_invalid_fields_get_400_json(client, fake_rasa, body):
    """A missing or badly formed sender_id, text or payload is refused with a JSON error."""
    response = await client.post("/api/messages", data=json.dumps(body),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "error" in await response.json()
    assert fake_rasa.requests == []


async def test_huge_body_gets_413_with_reply(client):
    """A body beyond the upload limit is refused kindly, not with a crash."""
    body = json.dumps({"sender_id": "abc", "text": "x" * (5 * 1024 * 1024)}).encode()
    response = await client.post("/api/messages", data=io.BytesIO(body),
                                 headers={"Content-Type": "application/json"})
    assert response.status == 413
    body = await response.json()
    assert body["messages"][0]["text"] == WORDING["too_long"]


@pytest.mark.parametrize("query", ["", "?sender_id=", "?sender_id=bad%20id", "?sender_id=abc&limit=lots",
                                   "?sender_id=abc&after=", "?sender_id=abc&after=-1", "?sender_id=abc&after=1.5",
                                   "?sender_id=abc&after=two", "?sender_id=abc&after=" + "9" * 30,
                                   "?sender_id=abc&after=%F0%9F%98%80"])
async def test_history_refuses_bad_queries(client, query):
    """GET /api/history needs a valid sender_id (and a numeric limit, and after= a message id)."""
    response = await client.get("/api/history" + query)
    assert response.status == 400
    assert "error" in await response.json()


async def test_history_limit_returns_latest(client):
    """limit keeps the most recent messages, oldest first."""
    sender = new_sender()
    for word in ("one", "two", "three"):
        await post(client, sender_id=sender, text=word)
    response = await client.get("/api/history", params={"sender_id": sender, "limit": "2"})
    texts = [m["text"] for m in (await response.json())["messages"]]
    assert texts == ["You said: three", "Anything else?"]


# --- messages the assistant sends on its own (GET /api/history?after=) ---------------------------


def push(client, sender_id, text, buttons=None):
    """Store a message for sender_id the way the delivery layer's WebSender does; returns its id."""
    repository = client.server.app[REPOSITORY]
    champion = repository.get_or_create_champion("web", sender_id)
    return repository.add_message(champion, DIRECTION_OUT, text, buttons).id


async def test_posted_messages_come_back_with_their_stored_ids(client):
    """POST returns the ids of the stored message and replies, the same ids the history gives."""
    sender = new_sender()
    _, body = await post(client, sender_id=sender, text="hello")
    stored = await history(client, sender)
    assert [m["id"] for m in stored] == [body["id"]] + [m["id"] for m in body["messages"]]
    assert stored[0]["id"] < stored[1]["id"] < stored[2]["id"]


async def test_history_after_gives_only_newer_messages(client):
    """after=<id> returns what was stored since, oldest first: a pushed message appears once."""
    sender = new_sender()
    _, body = await post(client, sender_id=sender, text="hello")
    last = body["messages"][-1]["id"]
    assert await history(client, sender, after=last) == []
    pushed = push(client, sender, "Patient Reference Group meets Thursday at 2pm",
                        [{"title": "Thanks", "payload": "/thank"}])
    newer = await history(client, sender, after=last)
    assert [(m["id"], m["direction"], m["text"]) for m in newer] == [
        (pushed, "out", "Patient Reference Group meets Thursday at 2pm")]
    assert newer[0]["buttons"] == [{"title": "Thanks", "payload": "/thank"}]
    assert await history(client, sender, after=pushed) == []
    assert [m["text"] for m in await history(client, sender, after=0)][-1] == newer[0]["text"]


async def test_history_after_pages_forward_with_limit(client):
    """With limit, after= gives the oldest of the newer messages first, so the page can catch up in steps."""
    sender = new_sender()
    ids = [push(client, sender, f"news {n}") for n in range(5)]
    first = await history(client, sender, after=0, limit=2)
    assert [m["text"] for m in first] == ["news 0", "news 1"]
    rest = await history(client, sender, after=first[-1]["id"], limit=10)
    assert [m["id"] for m in rest] == ids[2:]


async def test_history_after_keeps_conversations_apart(client):
    """A message pushed to one champion never shows in another's history."""
    mine, theirs = new_sender(), new_sender()
    await post(client, sender_id=theirs, text="hello")
    push(client, mine, "for me only")
    assert await history(client, theirs, after=0) == (await history(client, theirs))
    assert "for me only" not in [m["text"] for m in await history(client, theirs, after=0)]
    assert await history(client, new_sender(), after=0) == []


async def test_history_after_on_sqlite_and_postgresql(app_settings, fake_rasa, database_url):
    """The page's "anything new?" query gives the same answers on both databases."""
    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url, database_url=database_url)
    sender = new_sender()
    async with TestClient(TestServer(build_app(settings))) as test_client:
        _, body = await post(test_client, sender_id=sender, text="hello")
        pushed = push(test_client, sender, "Meeting moved to 3pm")
        newer = await history(test_client, sender, after=body["messages"][-1]["id"])
        assert [(m["id"], m["text"]) for m in newer] == [(pushed, "Meeting moved to 3pm")]
        assert [m["id"] for m in await history(test_client, sender, after=body["id"], limit=1)] == [
            body["messages"][0]["id"]]


# --- the organisation question on a first visit --------------------------------------------------


async def test_interface_offers_the_organisation_question(client):
    """The first visit asks which organisation they volunteer with: the assistant's wording, the file's choices."""
    body = await (await client.get("/api/interface")).json()
    question = body["organisation_question"]
    assert question["text"] == load_question_text() and question["text"]
    assert question["buttons"] == load_organisations(client.server.app[SETTINGS].organisations_file).buttons()
    assert question["buttons"][0] == {"title": "Leeds", "payload": '/choose_organisation{"organisation":"leeds"}'}


@pytest.mark.parametrize("content", ["organisations: []\nchoices: {other: Not listed, skip: Not now}\n",
                                     "organisations: [\n", None])
async def test_no_organisation_question_without_organisations(app_settings, tmp_path, content):
    """No organisations configured (or a broken or missing file): no question, and the page still works."""
    path = tmp_path / "organisations.yml"
    if content is not None:
        path.write_text(content)
    settings = dataclasses.replace(app_settings, organisations_file=path)
    async with TestClient(TestServer(build_app(settings))) as test_client:
        response = await test_client.get("/api/interface")
        assert response.status == 200
        assert (await response.json())["organisation_question"] is None


# --- Rasa trouble -------------------------------------------------------------------------------


async def test_rasa_down_gives_trouble_reply_and_keeps_message(app_settings):
    """Rasa unreachable: the trouble reply, and what the champion said is still stored."""
    sender = new_sender()
    async with TestClient(TestServer(build_app(app_settings))) as client:
        status, body = await post(client, sender_id=sender, text="is anyone there?")
        assert status == 200
        assert without_ids(body["messages"]) == [{"text": WORDING["trouble"], "buttons": []}]
        assert body["reason"] == "rasa_unavailable"
        stored = await history(client, sender)
    assert (stored[0]["direction"], stored[0]["text"]) == ("in", "is anyone there?")


@pytest.mark.parametrize("mode", ["error", "garbage", "slow"])
async def test_rasa_errors_give_trouble_reply(app_settings, fake_rasa, mode):
    """Rasa answering 500, non-JSON or too slowly: the trouble reply, message kept, no 5xx."""
    fake_rasa.mode, fake_rasa.delay = mode, 3
    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url, rasa_timeout_seconds=0.5)
    sender = new_sender()
    async with TestClient(TestServer(build_app(settings))) as client:
        status, body = await post(client, sender_id=sender, text="hello")
        assert status == 200
        assert body["messages"][0]["text"] == WORDING["trouble"]
        assert (await history(client, sender))[0]["text"] == "hello"


async def test_rasa_saying_nothing_gets_no_reply_wording(client, fake_rasa):
    """An empty answer from Rasa still gives the champion something to read."""
    fake_rasa.mode = "empty"
    _, body = await post(client, sender_id=new_sender(), text="hello")
    assert without_ids(body["messages"]) == [{"text": WORDING["no_reply"], "buttons": []}]


async def test_malformed_rasa_items_are_filtered(client, fake_rasa):
    """Only text and well-formed buttons of Rasa's answer reach the page."""
    fake_rasa.mode = "odd"
    _, body = await post(client, sender_id=new_sender(), text="hello")
    assert without_ids(body["messages"]) == [{"text": "Kept", "buttons": [{"title": "Ok", "payload": "/ok"}]}]


async def test_history_survives_restart(app_settings, fake_rasa):
    """Rebuilding the app on the same database (a restart) keeps the conversation."""
    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url)
    sender = new_sender()
    async with TestClient(TestServer(build_app(settings))) as client:
        await post(client, sender_id=sender, text="remember me")
    async with TestClient(TestServer(build_app(settings))) as client:
        stored = await history(client, sender)
        await post(client, sender_id=sender, text="still here")
        assert [m["text"] for m in await history(client, sender)][::3] == ["remember me", "still here"]
    assert [m["text"] for m in stored] == ["remember me", "You said: remember me", "Anything else?"]


# --- page, health and headers -------------------------------------------------------------------


async def test_page_and_static_files_are_served(client):
    """GET / is the chat page; its script and style come from /static/; no external assets."""
    response = await client.get("/")
    assert response.status == 200
    html = await response.text()
    assert 'role="log"' in html and 'aria-live="polite"' in html
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in response.headers
    for path, kind in (("/static/chat.js", "javascript"), ("/static/chat.css", "css")):
        asset = await client.get(path)
        assert asset.status == 200 and kind in asset.headers["Content-Type"]
    script = await (await client.get("/static/chat.js")).text()
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML(", "document.write("):
        assert sink not in script, f"chat.js must use textContent, not {sink}"
    assert (await client.get("/static/../bot/settings.py")).status == 404


async def test_interface_wording_comes_from_yaml(client):
    """The page's labels and the length limit are served from knowledge/interface.yml."""
    response = await client.get("/api/interface")
    body = await response.json()
    assert body["page"]["title"] == load_interface()["page"]["title"]
    assert body["max_message_chars"] == 2000
    assert response.headers["Cache-Control"] == "no-store"


async def test_healthz(client):
    """The health check answers while the database does."""
    response = await client.get("/healthz")
    assert response.status == 200 and (await response.json())["status"] == "ok"


async def test_unknown_api_path_is_json_404(client):
    """Unknown API paths answer with a JSON 404."""
    response = await client.get("/api/nope")
    assert response.status == 404 and "error" in await response.json()


async def test_plan_download_link_is_kept_and_foreign_links_dropped():
    """A plan download offered by the assistant reaches the page; any other link is dropped."""
    from bot.rasa_replies import rasa_messages

    messages = rasa_messages([
        {"text": "Here is your plan.", "custom": {"download": {"url": "/api/plan.md?sender_id=a&project=1",
                                                               "label": "Download my plan"}}},
        {"text": "Elsewhere", "custom": {"download": {"url": "https://evil.example/x", "label": "Click"}}},
    ])
    assert messages[0]["buttons"] == [{"title": "Download my plan", "url": "/api/plan.md?sender_id=a&project=1"}]
    assert messages[1]["buttons"] == []


async def test_typed_slash_text_is_read_as_words_not_as_a_button(client, fake_rasa):
    """Typing a button's payload ("/delete_my_data{...}") sends words to Rasa, never an intent; stored as typed."""
    sender = new_sender()
    typed = '/delete_my_data{"my_data_choice":"yes"}'
    status, body = await post(client, sender_id=sender, text=typed)
    assert status == 200 and body["accepted"] is True
    assert fake_rasa.requests[-1]["message"] == typed.lstrip("/")
    assert (await history(client, sender))[0]["text"] == typed
    status, body = await post(client, sender_id=sender, text="///")
    assert status == 400 or body.get("reason") == "empty"
