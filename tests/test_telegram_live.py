"""The assembled system on Telegram, end to end: Rasa, the action server, the web chat and the delivery
process (running the Telegram bot by long polling) against the fake Bot API in its own process.

The tests below are one story told in order (champion A starts, taps, asks; champion B starts and
stops; the team broadcasts to everyone; champion C then reflects on a session, stopping the team's
messages half-way), sharing one stack that starts once for the module.
"""
from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import yaml

from bench.stack import MODEL, ROOT, VENV_BIN, Stack, free_port, running_stack
from bot.telegram_format import load_wording, utf16_len

pytestmark = pytest.mark.model

BOT_TOKEN = "424242:live-test-token"  # the fake refuses any other token (401)
TEAM_TOKEN = "live-test-team-token"
CHAMPION_A = 810001
CHAMPION_B = 810002
WAIT = 90.0  # seconds: Rasa on a busy 2-core machine can be slow, so waits are generous deadlines
TELEGRAM_MAX_TEXT = 4096
# The only tags our HTML may carry (bot/telegram_format.py's bold and links, the "You chose" note).
OUR_TAGS = re.compile(r'</?b>|</?i>|<a href="[^"<>]*">|</a>')
ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")

WORDING = load_wording()["replies"]
# How long the stack may take to come up (as in conftest.py).
LIVE_STACK_TIMEOUT = float(os.environ.get("LIVE_STACK_TIMEOUT", "180"))


def _log_tails(data_dir: Path, lines: int = 40) -> str:
    """The last lines of each process log (the stack's and the fake's), for a failure message."""
    parts = []
    for log in sorted(data_dir.glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)


def _response_text(domain_file: str, name: str) -> str:
    """The first text of a response in the Rasa domain (the words a champion should see)."""
    data = yaml.safe_load((ROOT / "domain" / domain_file).read_text(encoding="utf-8"))
    return data["responses"][name][0]["text"]


def _words(text: str) -> str:
    """text with its whitespace normalised, for comparing what was sent with what was written."""
    return " ".join(text.split())


def _http(method: str, url: str, body: Any = None, timeout: float = 30) -> Any:
    """One JSON request; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _wait(what: str, probe: Callable[[], Any], timeout: float = WAIT, interval: float = 0.25) -> Any:
    """Poll probe() until it returns something truthy (returned) or the deadline passes (test fails)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


@dataclass
class Live:
    """The running system: the stack, the fake Bot API and the team tool's environment."""

    stack: Stack
    fake_url: str
    team_env: Dict[str, str]

    def sent(self, chat_id: int) -> List[Dict[str, Any]]:
        """What the bot sent to chat_id (latest state of each message), oldest first."""
        return _http("GET", f"{self.fake_url}/_fake/sent?chat_id={chat_id}")

    def stats(self) -> Dict[str, Any]:
        """The fake's counters."""
        return _http("GET", f"{self.fake_url}/_fake/stats")

    def bad_requests(self) -> int:
        """How many requests the fake refused as Telegram would (400)."""
        return self.stats()["bad_requests"]

    def type(self, chat_id: int, text: str) -> Dict[str, Any]:
        """The champion of chat_id types text (or a /command)."""
        return _http("POST", f"{self.fake_url}/_fake/user/text", {"chat_id": chat_id, "text": text})

    def tap(self, chat_id: int, data: str, message_id: int) -> Dict[str, Any]:
        """The champion taps the inline button with callback_data data under message_id."""
        return _http("POST", f"{self.fake_url}/_fake/user/tap", {"chat_id": chat_id, "data": data, "message_id": message_id})

    def new_messages(self, chat_id: int, before: int, until: Callable[[List[Dict[str, Any]]], bool],
                     what: str, settle: float = 3.0) -> List[Dict[str, Any]]:
        """Wait until the messages chat_id got after the first `before` satisfy until(), then until no
        more arrive for `settle` seconds; return them."""
        _wait(what, lambda: until(self.sent(chat_id)[before:]) or None)
        seen, quiet_since = len(self.sent(chat_id)), time.monotonic()
        while time.monotonic() - quiet_since < settle:
            time.sleep(0.25)
            now = len(self.sent(chat_id))
            if now != seen:
                seen, quiet_since = now, time.monotonic()
        return self.sent(chat_id)[before:]

    def team(self, *args: str) -> str:
        """Run the engagement team's tool (python -m bot.team ...); its output (exit status 0 asserted)."""
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "bot.team", *args], cwd=ROOT, env=self.team_env,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, f"bot.team {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout


def _start_fake(port: int, log_path: Path) -> subprocess.Popen:
    """The fake Bot API as its own process, as Telegram is; returns once it answers."""
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), "-m", "bench.fake_telegram", "--port", str(port), "--token", BOT_TOKEN],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            _http("GET", f"http://127.0.0.1:{port}/_fake/stats", timeout=2)
            return process
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    pytest.fail(f"the fake Bot API did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    """The whole system, started once: fake Bot API, Rasa, actions, web chat, delivery (with the bot)."""
    if not MODEL.exists():
        pytest.fail(f"{MODEL.relative_to(ROOT)} is missing: the test command trains it first")
    data_dir = tmp_path_factory.mktemp("telegram-live")
    port = free_port()
    fake = _start_fake(port, data_dir / "fake_telegram.log")
    fake_url = f"http://127.0.0.1:{port}"
    try:
        stack_cm = running_stack(
            data_dir=data_dir,
            timeout=LIVE_STACK_TIMEOUT,
            extra_env={
                "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
                "TELEGRAM_API_BASE_URL": f"{fake_url}/bot",
                "TEAM_TOKEN": TEAM_TOKEN,
            },
        )
        try:
            stack = stack_cm.__enter__()
        except (TimeoutError, OSError) as exc:
            pytest.fail(f"the live stack did not start: {exc}\n{_log_tails(data_dir)}")
        try:
            team_env = dict(
                os.environ, PYTHONPATH=str(ROOT), SQLALCHEMY_SILENCE_UBER_WARNING="1",
                DATA_DIR=str(data_dir), DATABASE_URL=f"sqlite:///{data_dir / 'app.db'}",
                TEAM_TOKEN=TEAM_TOKEN, COMPANION_TEAM_TOKEN=TEAM_TOKEN, TELEGRAM_BOT_TOKEN="",
            )
            system = Live(stack, fake_url, team_env)
            deadline = time.monotonic() + WAIT  # the delivery process is long polling the fake
            while system.stats()["requests"].get("getUpdates", 0) < 1:
                if stack.processes["delivery"].poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the delivery process is not polling the fake Bot API\n{_log_tails(data_dir)}")
                time.sleep(0.25)
            yield system
        finally:
            stack_cm.__exit__(None, None, None)
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait(timeout=10)


def _assert_telegram_html(message: Dict[str, Any]) -> None:
    """The message is escaped Telegram HTML under the length limit: only our own tags, every
    other '<' and '&' from the content written as an entity."""
    source = message["text"]
    assert message["parse_mode"] == "HTML"
    content = OUR_TAGS.sub("", source)
    assert "<" not in content, source
    assert "&" not in ENTITY.sub("", content), source
    assert html.unescape(content) == message["plain"]
    assert utf16_len(message["plain"]) < TELEGRAM_MAX_TEXT and len(source) < TELEGRAM_MAX_TEXT


def test_start_gets_the_welcome_and_the_organisation_question(live: Live) -> None:
    """/start: the assistant's welcome from Rasa, then which organisation, with an inline keyboard."""
    greeting = _words(_response_text("basics.yml", "utter_greet"))
    question = _words(_response_text("champions.yml", "utter_ask_organisation"))
    live.type(CHAMPION_A, "/start")
    messages = live.new_messages(
        CHAMPION_A, 0, lambda new: any(_words(m["plain"]) == question for m in new),
        "the welcome and the organisation question",
    )
    assert [_words(m["plain"]) for m in messages] == [greeting, question]
    welcome, ask = messages
    assert {b["text"] for row in welcome["reply_markup"]["inline_keyboard"] for b in row} >= {"What is co-production?"}
    titles = [b["text"] for row in ask["reply_markup"]["inline_keyboard"] for b in row]
    assert "Leeds" in titles and "Not listed" in titles, titles
    for message in messages:
        _assert_telegram_html(message)
    assert live.bad_requests() == 0


def test_a_tapped_button_is_answered_and_the_reply_arrives(live: Live) -> None:
    """Tapping "Leeds": the tap is answered (no spinner), the buttons go, and the assistant confirms."""
    before = live.sent(CHAMPION_A)
    ask = before[-1]
    [leeds] = [b for row in ask["reply_markup"]["inline_keyboard"] for b in row if b["text"] == "Leeds"]
    query_id = live.tap(CHAMPION_A, leeds["callback_data"], ask["message_id"])["callback_query"]["id"]
    replies = live.new_messages(
        CHAMPION_A, len(before), lambda new: any("Leeds" in m["plain"] for m in new), "the reply to the tap",
    )
    answers = _http("GET", f"{live.fake_url}/_fake/callback_answers")
    assert [a["callback_query_id"] for a in answers["answers"]].count(query_id) == 1
    assert query_id not in answers["open"]
    saved = _words(_response_text("champions.yml", "utter_organisation_saved").format(organisation="Leeds"))
    assert [_words(m["plain"]) for m in replies] == [saved]
    tapped = live.sent(CHAMPION_A)[len(before) - 1]
    assert tapped["message_id"] == ask["message_id"]
    assert tapped["reply_markup"] is None  # the buttons are gone: no second tap
    assert tapped["plain"].endswith(WORDING["chosen"].format(title="Leeds"))
    assert live.bad_requests() == 0


def test_a_knowledge_question_gets_an_escaped_answer_under_the_limit(live: Live) -> None:
    """A question in words gets an answer: Telegram HTML with the content escaped, each part < 4,096."""
    before = len(live.sent(CHAMPION_A))
    live.type(CHAMPION_A, "what is co-production?")
    answer = live.new_messages(CHAMPION_A, before, lambda new: bool(new), "the answer")
    not_answers = {_words(WORDING["trouble"]), _words(WORDING["no_reply"]),
                   _words(_response_text("basics.yml", "utter_default"))}
    assert not {_words(m["plain"]) for m in answer} & not_answers, answer
    assert "co-production" in " ".join(m["plain"] for m in answer).lower()
    for message in answer:
        _assert_telegram_html(message)
    assert live.bad_requests() == 0


def test_a_second_champion_stops_the_teams_messages(live: Live) -> None:
    """Champion B starts, then /stop: the confirmation, in the words of knowledge/telegram.yml."""
    question = _words(_response_text("champions.yml", "utter_ask_organisation"))
    live.type(CHAMPION_B, "/start")
    started = live.new_messages(
        CHAMPION_B, 0, lambda new: any(_words(m["plain"]) == question for m in new), "B's welcome",
    )
    live.type(CHAMPION_B, "/stop")
    [stopped] = live.new_messages(CHAMPION_B, len(started), lambda new: bool(new), "B's /stop confirmation")
    assert stopped["plain"] == WORDING["stopped"]


def test_a_broadcast_reaches_everyone_who_has_not_said_stop_exactly_once(live: Live) -> None:
    """The team's broadcast to all: A gets it once on Telegram, B (stopped) nothing, a web chat champion
    sees it in their history; the report counts the sent and the opted out."""
    web_sender = uuid.uuid4().hex
    first = _http("POST", f"{live.stack.web_url}/api/messages", {"sender_id": web_sender, "text": "hello"})
    assert first["messages"], first
    a_before, b_before = len(live.sent(CHAMPION_A)), len(live.sent(CHAMPION_B))
    marker = uuid.uuid4().hex[:8]
    text = f"PRG meets Thursday 2pm <room 4> & papers are on pages 4-9 (ref {marker})"

    output = live.team("broadcast", "send", "--to", "all", "--text", text, "--yes")
    match = re.search(r"Broadcast (\d+) is on its way", output)
    assert match, output
    broadcast_id = match.group(1)

    def web_copies() -> List[Dict[str, Any]]:
        history = _http("GET", f"{live.stack.web_url}/api/history?sender_id={web_sender}")["messages"]
        return [m for m in history if m["direction"] == "out" and m["text"] == text]

    got = live.new_messages(CHAMPION_A, a_before, lambda new: any(marker in m["plain"] for m in new),
                            "the broadcast on Telegram")
    _wait("the broadcast in the web chat history", web_copies)

    def report() -> Optional[str]:
        out = live.team("broadcast", "report", broadcast_id)
        return out if re.search(r"Sent:\s+2\b", out) else None

    shown = _wait("the report to count both sent", report)
    assert re.search(r"Left out:\s+1 said stop", shown), shown
    assert re.search(r"Failed:\s+0\b", shown), shown

    time.sleep(2)  # anything sent twice would have arrived by now (the courier passes every second)
    got = live.sent(CHAMPION_A)[a_before:]
    assert [m["plain"] for m in got] == [text]  # exactly once, exactly as written
    _assert_telegram_html(got[0])
    assert "&lt;room 4&gt; &amp; papers" in got[0]["text"]
    assert live.sent(CHAMPION_B)[b_before:] == []  # said stop: nothing
    assert len(web_copies()) == 1
    assert live.bad_requests() == 0


def test_each_telegram_chat_is_one_champion(live: Live) -> None:
    """The team's champion list shows each Telegram chat once (no twin that missed the /stop)."""
    listing = live.team("champion", "list")
    channels = re.findall(r"^\d+\s+(\S+)\s", listing, re.M)
    assert channels.count("telegram") == 2, listing
    assert "tg" not in channels, listing


CHAMPION_C = 810003
# A reflection after a session, typed as on a phone (the answers of tests/stories/test_reflections.yml).
REFLECTION_ANSWERS = ("patient panel, Mon 23 Nov", "Ask for the papers a week ahead",
                      "Read the papers before the next panel", "In a month", "That's all", "4",
                      "Papers sent earlier", "Share with my name")


def test_a_reflection_on_telegram_is_saved_and_team_messages_stop_half_way(live: Live) -> None:
    """Champion C reflects on a session on Telegram. Half-way, "stop messages from the team" is done at once
    and the same question comes again; the reflection, its pledge and the check-in are all saved."""
    import sqlite3

    question = _words(_response_text("champions.yml", "utter_ask_organisation"))
    live.type(CHAMPION_C, "/start")
    live.new_messages(CHAMPION_C, 0, lambda new: any(_words(m["plain"]) == question for m in new), "C's welcome")

    def say(text: str) -> List[Dict[str, Any]]:
        """C types text; the replies, once they stop coming."""
        before = len(live.sent(CHAMPION_C))
        live.type(CHAMPION_C, text)
        return live.new_messages(CHAMPION_C, before, lambda new: bool(new), f"the reply to {text!r}", settle=2.0)

    say("I want to reflect on today")
    asked = say(REFLECTION_ANSWERS[0])  # the session's name; now the take-away is asked
    stopped = say("stop messages from the team")
    opted_out = _words(_response_text("champions.yml", "utter_opted_out"))
    assert _words(stopped[0]["plain"]) == opted_out, stopped
    assert _words(stopped[-1]["plain"]) == _words(asked[-1]["plain"]), "the same question again"
    for answer in REFLECTION_ANSWERS[1:]:
        last = say(answer)
    for message in last:
        _assert_telegram_html(message)

    with sqlite3.connect(live.stack.data_dir / "app.db") as db:
        champion_id, opted_out_at = db.execute(
            "SELECT id, opted_out_at FROM champions WHERE channel = 'telegram' AND external_id = ?",
            (str(CHAMPION_C),)).fetchone()
        reflection = db.execute(
            "SELECT session_label, takeaway, rating, improvement, sharing, completed_at FROM reflections"
            " WHERE champion_id = ?", (champion_id,)).fetchall()
        pledges = db.execute("SELECT id, text FROM pledges WHERE champion_id = ?", (champion_id,)).fetchall()
        check_ins = db.execute("SELECT status FROM pledge_check_ins WHERE pledge_id = ?", (pledges[0][0],)).fetchall()
    assert opted_out_at is not None
    [(label, takeaway, rating, improvement, sharing, completed_at)] = reflection
    assert "patient panel" in label.lower() and takeaway == "Ask for the papers a week ahead"
    assert (rating, improvement, completed_at is not None) == (4, "Papers sent earlier", True)
    assert sharing
    assert [text for _, text in pledges] == ["Read the papers before the next panel"]
    assert [status for (status,) in check_ins] == ["pending"]
    assert live.bad_requests() == 0
