"""The fake Telegram Bot API (bench/fake_telegram.py) behaves like Telegram for python-telegram-bot."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, EndPointNotFound, Forbidden, InvalidToken, NetworkError, RetryAfter

from bench.fake_telegram import FakeTelegram


async def test_sends_are_recorded_with_markup_and_html_is_checked() -> None:
    """A sent message comes back as a Message and is recorded; broken HTML is refused like Telegram does."""
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Yes", callback_data="/affirm")]])
        first = await bot.send_message(7, "<b>Hi</b> &amp; welcome", parse_mode="HTML", reply_markup=keyboard)
        second = await bot.send_message(8, "plain <b> text")
        assert second.message_id == first.message_id + 1
        assert first.text == "Hi & welcome"
        [sent] = fake.messages_for(7)
        assert (sent.text, sent.plain, sent.parse_mode) == ("<b>Hi</b> &amp; welcome", "Hi & welcome", "HTML")
        assert sent.buttons() == [{"text": "Yes", "callback_data": "/affirm"}]
        for bad in ("<script>alert(1)</script>", "<b>unclosed", "fish & chips", "x" * 4097):
            with pytest.raises(BadRequest):
                await bot.send_message(9, bad, parse_mode="HTML")
        with pytest.raises(BadRequest, match="(?i)button_data_invalid"):
            long = InlineKeyboardMarkup([[InlineKeyboardButton("Long", callback_data="é" * 33)]])
            await bot.send_message(9, "hi", reply_markup=long)
        assert fake.messages_for(9) == []


async def test_flood_limits_answer_429_with_retry_after() -> None:
    """More than 30 sends in a second, or two to one chat within a second, get 429 retry_after."""
    frozen = [1000.0]  # the fake's clock stands still: every send falls in the same second, however busy the machine
    async with FakeTelegram(clock=lambda: frozen[0]) as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        await bot.send_message(1, "one")
        with pytest.raises(RetryAfter) as error:
            await bot.send_message(1, "two")
        assert error.value.retry_after == 1
        results = await asyncio.gather(
            *(bot.send_message(100 + i, "hello") for i in range(35)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, RetryAfter)]
        assert len(refused) == 35 - 29  # chat 1 already used one of the 30 in this second
        assert fake.too_many_requests == 1 + len(refused)
        assert len(fake.sent) == 30


async def test_blocked_chats_failures_and_unknown_methods() -> None:
    """Blocked chats get 403, injected failures are network errors that record nothing, unknown methods 404."""
    async with FakeTelegram(limits=False) as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        fake.block(5)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await bot.send_message(5, "hi")
        fake.fail_next(1, "drop")
        fake.fail_next(1, "502")
        for _ in range(2):
            with pytest.raises(NetworkError):
                await bot.send_message(6, "hi")
        assert fake.sent == [] and fake.injected == 2
        await bot.send_message(6, "hi")
        assert fake.texts_for(6) == ["hi"]
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("noSuchMethod")
    async with FakeTelegram() as fake:
        with pytest.raises(InvalidToken):
            async with Bot("999:wrong", base_url=fake.base_url):
                pass


async def test_long_polling_and_json_bodies() -> None:
    """getUpdates waits for a pushed update and confirms by offset; JSON bodies work too."""
    async with FakeTelegram() as fake, Bot(fake.token, base_url=fake.base_url) as bot:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, lambda: fake.push_update(fake.text_update(3, "hello")))
        started = time.monotonic()
        [update] = await bot.get_updates(timeout=5)
        assert 0.15 < time.monotonic() - started < 4.5  # returned on the update, not the 5 s timeout
        assert update.message.text == "hello" and update.effective_chat.id == 3
        assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{fake.base_url}{fake.token}/sendMessage", json={"chat_id": 4, "text": "json"}) as response:
                body = await response.json()
        assert body["ok"] and body["result"]["text"] == "json"
        assert fake.texts_for(4) == ["json"]
