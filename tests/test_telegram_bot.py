"""The Telegram side end to end: python-telegram-bot polling a fake Bot API on loopback, relaying to a fake Rasa."""
from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import aiohttp
import pytest
import pytest_asyncio

from bench.fake_telegram import FakeTelegram
from bot.db import make_engine, make_session_factory, migrate
from bot.models import Champion
from bot.repository import ChatRepository
from bot.settings import load_settings
from bot.telegram_bot import (
    BLOCKED_REASON,
    TelegramSetupError,
    build_application,
    start_telegram,
    stop_telegram,
)
from bot.telegram_format import load_wording, utf16_len
from bot.telegram_limits import make_bot

WORDING = load_wording()["replies"]
NO_RASA = "http://127.0.0.1:9"  # nothing listens there


@dataclass
class Harness:
    """A running Telegram application with its fake Bot API, fake Rasa and database."""

    fake: FakeTelegram
    rasa: Any
    chats: ChatRepository

    def champion(self, chat_id: int) -> Champion:
        """The champion row of a Telegram chat."""
        found = self.chats.find_champion("telegram", str(chat_id))
        assert found is not None, f"no champion for chat {chat_id}"
        return found

    def transcript(self, chat_id: int) -> List[tuple]:
        """(direction, text, payload) of the chat's stored messages."""
        return [(m.direction, m.text, m.payload) for m in self.chats.history(self.champion(chat_id))]

    def rasa_messages(self, chat_id: int) -> List[str]:
        """What Rasa was sent for this chat."""
        return [r["message"] for r in self.rasa.requests if r["sender"] == f"tg-{chat_id}"]

    async def say(self, update: Dict[str, Any], chat_id: int, expect: int, timeout: float = 10) -> List[Any]:
        """Push an update and wait until chat_id has expect more messages; return those."""
        before = len(self.fake.messages_for(chat_id))
        self.fake.push_update(update)
        await self.fake.wait_for(lambda: len(self.fake.messages_for(chat_id)) >= before + expect, timeout)
        await asyncio.sleep(0.05)  # anything unexpected would arrive now
        new = self.fake.messages_for(chat_id)[before:]
        assert len(new) == expect, [m.plain for m in new]
        return new


def _settings(tmp_path, fake: FakeTelegram, rasa_url: str, **extra: str):
    """Settings pointing at the fake Bot API, the fake Rasa and a fresh SQLite database."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "RASA_URL": rasa_url,
        "RASA_TIMEOUT_SECONDS": "3",
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.base_url,
        **extra,
    }
    return load_settings(env)


@pytest_asyncio.fixture
async def running(tmp_path, fake_rasa):
    """Factory: start the Telegram application by long polling against a fresh fake Bot API."""
    started = []

    async def start(early: Callable[[FakeTelegram], None] = lambda fake: None, **fake_options: Any) -> Harness:
        fake = await FakeTelegram(**{"per_chat_max": 20, **fake_options}).start()
        early(fake)  # updates waiting at Telegram before the bot starts
        settings = _settings(tmp_path, fake, fake_rasa.url)
        await asyncio.to_thread(migrate, settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        application = build_application(settings, session_factory=sessions, rasa_url=fake_rasa.url)
        await start_telegram(application, settings)
        started.append((application, fake, engine))
        return Harness(fake, fake_rasa, ChatRepository(sessions))

    yield start
    for application, fake, engine in started:
        await stop_telegram(application)
        await fake.stop()
        engine.dispose()


async def test_text_is_relayed_to_rasa_and_replies_come_back_with_inline_keyboards(running) -> None:
    """A typed message reaches Rasa as this chat; its replies arrive, buttons as one-per-row inline keyboards."""
    h = await running(early=lambda fake: fake.push_update(fake.text_update(1000, "sent while you were away")))
    assert [c["command"] for c in h.fake.commands] == ["start", "help", "stop"]
    await h.fake.wait_for(lambda: len(h.fake.messages_for(1000)) == 2)  # long polling drops nothing
    first, second = await h.say(h.fake.text_update(1001, "what is co-production?"), 1001, expect=2)
    assert first.plain == "You said: what is co-production?" and first.reply_markup is None
    assert first.parse_mode == "HTML"
    assert second.plain == "Anything else?"
    assert second.reply_markup == {"inline_keyboard": [
        [{"text": "Tell me more", "callback_data": "/tell_me_more"}],
        [{"text": "The five steps", "callback_data": "/ask_five_steps"}],
    ]}
    assert h.rasa_messages(1001) == ["what is co-production?"]
    assert {"chat_id": 1001, "action": "typing"} in h.fake.chat_actions
    assert h.transcript(1001) == [
        ("in", "what is co-production?", None),
        ("out", "You said: what is co-production?", None),
        ("out", "Anything else?", None),
    ]
    # Each chat is its own Rasa conversation.
    await h.say(h.fake.text_update(1002, "hello"), 1002, expect=2)
    assert h.rasa_messages(1002) == ["hello"] and h.rasa_messages(1001) == ["what is co-production?"]


async def test_markup_and_injection_strings_are_escaped_and_other_scripts_survive(running) -> None:
    """Whatever a champion types comes back exactly as typed, never as markup; our **bold** renders."""
    h = await running()
    nasty = "<script>alert('x')</script> & <b>not bold</b> &amp; \"q\" '; DROP TABLE champions;-- {{7*7}} ${jndi:x}"
    [echo, _] = await h.say(h.fake.text_update(2001, nasty), 2001, expect=2)
    assert echo.plain == f"You said: {nasty}"
    assert "<script>" not in echo.text and "&lt;script&gt;" in echo.text and "&amp;amp;" in echo.text
    world = "Привет 你好 مرحبا 😀👍🏽 naïve **really important**"
    [echo, _] = await h.say(h.fake.text_update(2001, world), 2001, expect=2)
    assert echo.plain == "You said: Привет 你好 مرحبا 😀👍🏽 naïve really important"
    assert "<b>really important</b>" in echo.text
    assert [text for _, text, _ in h.transcript(2001) if text.startswith(("<script>", "Привет"))] == [nasty, world]
    assert h.fake.bad_requests == []


async def test_a_long_reply_is_split_below_the_limit_with_the_keyboard_last(running) -> None:
    """A 10,000-character answer arrives in parts under 4,096 characters, the buttons on the last part."""
    h = await running()
    paragraph = "Co-production means working together as equal partners from the start. " * 9
    long_text = "\n\n".join(f"{n}. {paragraph.strip()}" for n in range(20))[:10000].strip()
    assert len(long_text) == 10000
    h.rasa.replies = lambda message: [{"text": long_text, "buttons": [{"title": "Tell me more", "payload": "/tell_me_more"}]}]
    h.fake.push_update(h.fake.text_update(3001, "tell me everything"))
    await h.fake.wait_for(lambda: any(m.reply_markup for m in h.fake.messages_for(3001)))
    parts = h.fake.messages_for(3001)
    assert len(parts) == 3
    assert all(len(p.text) < 4096 and utf16_len(p.plain) < 4096 for p in parts)
    assert [p.reply_markup is not None for p in parts] == [False, False, True]
    assert " ".join(" ".join(p.plain.split()) for p in parts) == " ".join(long_text.split())
    # The transcript keeps the answer whole.
    assert h.transcript(3001)[-1] == ("out", long_text, None)


async def test_buttons_are_answered_retired_and_relayed_even_with_long_payloads(running) -> None:
    """A tap is answered (no spinner), the buttons are taken off, the choice recorded and sent to Rasa;
    a payload over 64 bytes round-trips through the callbacks table."""
    h = await running()
    long_payload = '/inform{"project_note": "' + "accessible clinics for everyone " * 4 + '"}'
    h.rasa.replies = lambda message: (
        [{"text": f"You chose {message}"}] if message.startswith("/") else
        [{"text": "Pick one", "buttons": [
            {"title": "Short", "payload": "/ask_five_steps"},
            {"title": "Long one ✨", "payload": long_payload},
        ]}]
    )
    [menu] = await h.say(h.fake.text_update(4001, "menu"), 4001, expect=1)
    short, long = menu.buttons()
    assert short["callback_data"] == "/ask_five_steps"
    assert long["callback_data"].startswith("cb:") and len(long["callback_data"].encode()) <= 64

    [reply] = await h.say(h.fake.callback_update(4001, long["callback_data"], menu.message_id), 4001, expect=1)
    assert reply.plain == f"You chose {long_payload}"
    assert h.rasa_messages(4001)[-1] == long_payload
    assert len(h.fake.callback_answers) == 1
    assert menu.reply_markup is None and menu.plain == "Pick one\n\nYou chose: Long one ✨"
    assert h.transcript(4001)[-2] == ("in", "Long one ✨", long_payload)

    # A button whose key is unknown: still answered, and the champion is told.
    [expired] = await h.say(h.fake.callback_update(4001, "cb:no-such-key"), 4001, expect=1)
    assert expired.plain == WORDING["button_expired"]
    assert len(h.fake.callback_answers) == 2
    # Rasa down while a button is tapped: answered, and the trouble reply.
    h.rasa.mode = "error"
    [trouble] = await h.say(h.fake.callback_update(4001, "/ask_five_steps", menu.message_id), 4001, expect=1)
    assert trouble.plain == WORDING["trouble"]
    assert len(h.fake.callback_answers) == 3


async def test_stop_then_start_again(running) -> None:
    """/stop opts out of the team's messages (chatting still works); /start opts back in and Rasa greets."""
    h = await running()
    [hello] = await h.say(h.fake.command_update(5001, "start"), 5001, expect=1)
    assert hello.plain == "You chose /greet"
    champion = h.champion(5001)
    assert champion.opted_out_at is None and champion.unreachable_at is None
    assert champion.display_name == "Sam"  # their Telegram first name, for the team console's list

    [stopped] = await h.say(h.fake.command_update(5001, "stop"), 5001, expect=1)
    assert stopped.plain == WORDING["stopped"] and "/start" in stopped.plain
    assert h.champion(5001).opted_out_at is not None
    [again] = await h.say(h.fake.command_update(5001, "stop"), 5001, expect=1)
    assert again.plain == WORDING["already_stopped"]
    await h.say(h.fake.text_update(5001, "still there?"), 5001, expect=2)  # chatting still works

    welcome_back, greeting = await h.say(h.fake.command_update(5001, "start"), 5001, expect=2)
    assert welcome_back.plain == WORDING["started_again"] and greeting.plain == "You chose /greet"
    assert h.champion(5001).opted_out_at is None
    assert "/stop" not in h.rasa_messages(5001)

    help_text, rasa_help = await h.say(h.fake.command_update(5001, "help"), 5001, expect=2)
    assert help_text.plain == WORDING["help"] and rasa_help.plain == "You chose /help"
    [unknown] = await h.say(h.fake.command_update(5001, "greet"), 5001, expect=1)
    assert unknown.plain == WORDING["unknown_command"]
    assert h.rasa_messages(5001) == ["/greet", "still there?", "/greet", "/help"]


async def test_words_after_an_unknown_command_still_reach_rasa(running) -> None:
    """"/anything I want to end my life": the words go to Rasa (and so to the crisis check), not "unknown command"."""
    h = await running()
    replies = await h.say(h.fake.command_update(5101, "ask_acronym", "I want to end my life"), 5101, expect=2)
    assert replies[0].plain == "You said: I want to end my life"
    assert h.rasa_messages(5101) == ["I want to end my life"]


async def test_blocking_marks_the_champion_unreachable(running) -> None:
    """A champion who blocks the bot is unreachable until they come back; a 403 on a reply does the same."""
    h = await running()
    await h.say(h.fake.text_update(6001, "hi"), 6001, expect=2)
    h.fake.push_update(h.fake.member_update(6001, "kicked"))
    await h.fake.wait_for(lambda: h.champion(6001).unreachable_at is not None)
    assert h.champion(6001).unreachable_reason == BLOCKED_REASON
    h.fake.push_update(h.fake.member_update(6001, "member"))
    await h.fake.wait_for(lambda: h.champion(6001).unreachable_at is None)

    await h.say(h.fake.text_update(6002, "hi"), 6002, expect=2)
    h.fake.block(6002)
    h.fake.push_update(h.fake.text_update(6002, "one more"))
    await h.fake.wait_for(lambda: h.champion(6002).unreachable_at is not None)
    assert h.fake.forbidden >= 1


async def test_bad_input_gets_a_clear_reply_and_is_not_sent_to_rasa(running, fake_rasa) -> None:
    """Stickers, photos, empty and over-long messages get a clear reply; Rasa down gets the trouble reply."""
    h = await running()
    for kind in ("sticker", "photo", "voice"):
        [reply] = await h.say(h.fake.media_update(7001, kind), 7001, expect=1)
        assert reply.plain == WORDING["not_text"]
    [empty] = await h.say(h.fake.text_update(7001, "\u0007\u0000"), 7001, expect=1)
    assert empty.plain == WORDING["empty_message"]
    huge = "word " * 500  # over MAX_MESSAGE_CHARS (2,000)
    [too_long] = await h.say(h.fake.text_update(7001, huge), 7001, expect=1)
    assert too_long.plain == WORDING["too_long"]
    assert h.rasa_messages(7001) == []
    assert ("in", huge.strip(), None) in h.transcript(7001)  # nothing the champion said is lost

    fake_rasa.mode = "error"
    [trouble] = await h.say(h.fake.text_update(7001, "hello?"), 7001, expect=1)
    assert trouble.plain == WORDING["trouble"]


async def _two_part_answers(h: Harness) -> List[List[Any]]:
    """Five chats each ask at once for an answer that comes in two parts; return what each got."""
    results = await asyncio.gather(*(
        h.say(h.fake.text_update(8000 + n, f"hi {n}"), 8000 + n, expect=2, timeout=15) for n in range(5)
    ))
    assert [[m.plain for m in messages] for messages in results] == [
        [f"You said: hi {n}", "Anything else?"] for n in range(5)
    ]
    return results


async def test_replies_keep_telegrams_per_chat_limit(running) -> None:
    """With Telegram's one-message-a-second-per-chat limit, a two-part answer's parts go a second apart: no 429."""
    h = await running(per_chat_max=1)
    for first, second in await _two_part_answers(h):
        assert second.at - first.at >= 1.0
    assert h.fake.too_many_requests == 0


async def test_replies_wait_out_telegrams_flood_limit(running) -> None:
    """When Telegram is stricter than its published limit, a two-part answer is retried after the 429, not lost."""
    h = await running(per_chat_max=1, per_chat_seconds=2.0)
    await _two_part_answers(h)
    assert h.fake.too_many_requests >= 1


async def test_the_shared_bot_paces_sends_under_telegrams_overall_limit(tmp_path) -> None:
    """bot.telegram_limits.make_bot's rate limiter sends a burst of 90 messages to different chats
    at 30 a second, evenly spaced: each arrives once, and Telegram's limit is (all but) never hit."""
    async with FakeTelegram() as fake:
        bot = make_bot(_settings(tmp_path, fake, NO_RASA), max_retries=3)
        async with bot:
            started = time.monotonic()
            await asyncio.gather(*(bot.send_message(20000 + n, f"news {n}") for n in range(90)))
            elapsed = time.monotonic() - started
    assert sorted(m.chat_id for m in fake.sent) == [20000 + n for n in range(90)]
    assert fake.too_many_requests <= 3
    assert elapsed >= 89 / 30  # paced at 30 a second, not sent in one burst


def _free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_webhook_mode_checks_the_secret_token(tmp_path, fake_rasa) -> None:
    """Webhook mode refuses to start without a secret, and refuses requests without the right one."""
    async with FakeTelegram(per_chat_max=20) as fake:
        port = _free_port()
        hook = f"http://127.0.0.1:{port}/telegram/hook"
        webhook_env = {"TELEGRAM_MODE": "webhook", "TELEGRAM_WEBHOOK_URL": hook,
                       "TELEGRAM_WEBHOOK_HOST": "127.0.0.1", "TELEGRAM_WEBHOOK_PORT": str(port)}
        settings = _settings(tmp_path, fake, fake_rasa.url, **webhook_env)
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        with pytest.raises(TelegramSetupError, match="TELEGRAM_WEBHOOK_SECRET"):
            await start_telegram(build_application(settings, session_factory=sessions, rasa_url=fake_rasa.url), settings)

        secret = "s3cret_token-for-tests"
        settings = _settings(tmp_path, fake, fake_rasa.url, TELEGRAM_WEBHOOK_SECRET=secret, **webhook_env)
        application = build_application(settings, session_factory=sessions, rasa_url=fake_rasa.url)
        await start_telegram(application, settings)
        try:
            assert fake.webhook == {"url": hook, "secret_token": secret, "allowed_updates": ["message", "callback_query", "my_chat_member"]}
            update = {"update_id": 999, **fake.text_update(9001, "sneaky")}
            async with aiohttp.ClientSession() as http:
                for headers in ({}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}):
                    async with http.post(hook, json=update, headers=headers) as response:
                        assert response.status == 403
            fake.push_update(fake.text_update(9001, "hello by webhook"))  # Telegram sends the right secret
            await fake.wait_for(lambda: len(fake.messages_for(9001)) == 2)
            assert fake.texts_for(9001)[0] == "You said: hello by webhook"
            assert [r["message"] for r in fake_rasa.requests] == ["hello by webhook"]
            assert [status for _, status in fake.webhook_deliveries] == [200]
        finally:
            await stop_telegram(application)
            engine.dispose()
