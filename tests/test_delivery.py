"""The courier against a fake Telegram Bot API on loopback (python-telegram-bot over real HTTP) and the web chat."""
from __future__ import annotations

import asyncio
import time
from typing import List

import pytest
from telegram.ext import ExtBot

from bench.fake_telegram import FakeTelegram
from bot.db import make_engine, make_session_factory, migrate
from bot.delivery import Courier, TelegramSender, WebSender
from bot.models import Champion
from bot.outbox import OutboxRepository
from bot.repository import ChatRepository
from bot.settings import load_settings
from bot.telegram_limits import Pacer, TelegramRateLimiter


@pytest.fixture
def sessions(tmp_path):
    """A fresh migrated SQLite app database."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def settings(tmp_path):
    """Delivery settings with Telegram's real limits and a short poll."""
    return load_settings({"DATA_DIR": str(tmp_path), "DELIVERY_POLL_SECONDS": "0.05", "DELIVERY_MAX_ATTEMPTS": "4"})


@pytest.fixture
async def fake():
    """The fake Bot API enforcing 30/s overall and one message per second per chat."""
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake):
    """A python-telegram-bot ExtBot talking to the fake over HTTP, with our rate limiter."""
    async with ExtBot(fake.token, base_url=fake.base_url, rate_limiter=TelegramRateLimiter(30, 1, max_retries=0)) as ext_bot:
        yield ext_bot


def telegram_champions(sessions, count: int, first_chat: int = 1001) -> List[int]:
    """Champion ids for Telegram chats first_chat, first_chat + 1, ..."""
    chats = ChatRepository(sessions)
    return [chats.get_or_create_champion("telegram", str(first_chat + n)).id for n in range(count)]


def make_courier(sessions, bot, settings, **kwargs) -> Courier:
    """A courier with the web sender and a Telegram sender using bot."""
    outbox = OutboxRepository(sessions)
    senders = {"web": WebSender(outbox), "telegram": TelegramSender(bot, session_factory=sessions)}
    return Courier(sessions, senders, settings, backoff_seconds=0.05, **kwargs)


async def deliver_everything(courier: Courier, timeout: float = 30.0) -> None:
    """Run the courier until nothing is queued or being sent, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(courier.run(stop))
    deadline = time.monotonic() + timeout
    try:
        while await asyncio.to_thread(courier.outbox.pending) > 0:
            assert time.monotonic() < deadline, f"still pending: {courier.outbox.counts()}"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_web_champion_gets_the_message_in_their_transcript_once(sessions, bot, settings):
    """A pushed message appears in the web chat transcript (what the page polls) exactly once."""
    chats = ChatRepository(sessions)
    champion = chats.get_or_create_champion("web", "7c1e2a4b-0000-4000-8000-000000000001")
    outbox = OutboxRepository(sessions)
    outbound = outbox.enqueue(
        champion.id, "The Patient Reference Group meets Thursday at 2pm <b>papers</b> are out",
        kind="broadcast", source_key="broadcast:1:champion:1",
        buttons=[{"title": "Thanks", "payload": "/thanks"}],
    )
    courier = make_courier(sessions, bot, settings)
    assert await courier.run_once() == 1
    assert await courier.run_once() == 0
    # The same message enqueued again (a broadcast started twice) is not delivered twice.
    outbox.enqueue(champion.id, "again", kind="broadcast", source_key="broadcast:1:champion:1")
    assert await courier.run_once() == 0
    history = chats.history(champion)
    assert [(m.direction, m.text, m.buttons) for m in history] == [
        ("out", "The Patient Reference Group meets Thursday at 2pm <b>papers</b> are out",
         [{"title": "Thanks", "payload": "/thanks"}])
    ]
    row = outbox.get(outbound)
    assert row.status == "sent" and row.channel_message_id == str(history[0].id)
    assert [a.outcome for a in outbox.attempts(outbound)] == ["sent"]


async def test_telegram_message_arrives_with_html_escaped_and_buttons(sessions, fake, bot, settings):
    """A Telegram champion gets the text (markup-looking characters escaped) and an inline keyboard."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=4242)
    outbox = OutboxRepository(sessions)
    outbound = outbox.enqueue(
        champion_id, "Read pages 4-9 <before> Thursday & bring questions 🙂", kind="broadcast",
        source_key="b:1", buttons=[{"title": "Got it", "payload": "/affirm"}],
    )
    await deliver_everything(make_courier(sessions, bot, settings))
    [message] = fake.messages_for(4242)
    assert message.plain == "Read pages 4-9 <before> Thursday & bring questions 🙂"
    assert message.parse_mode == "HTML"
    assert [b["text"] for b in message.buttons()] == ["Got it"]
    row = outbox.get(outbound)
    assert row.status == "sent" and row.channel_message_id == str(message.message_id)


async def test_blocked_user_fails_once_and_is_marked_unreachable(sessions, fake, bot, settings):
    """A 403 (user blocked the bot) fails the message with the reason, marks the champion, and stops trying."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=777)
    fake.block(777)
    outbox = OutboxRepository(sessions)
    first = outbox.enqueue(champion_id, "hello", kind="broadcast", source_key="b:1")
    courier = make_courier(sessions, bot, settings)
    await deliver_everything(courier)
    row = outbox.get(first)
    assert row.status == "failed" and row.last_error.startswith("blocked")
    with sessions() as session:
        champion = session.get(Champion, champion_id)
        assert champion.unreachable_at is not None and champion.unreachable_reason.startswith("blocked")
    assert fake.forbidden == 1
    # Later messages to them are not attempted at all.
    second = outbox.enqueue(champion_id, "your reminder", kind="reminder", source_key="r:1")
    await deliver_everything(courier)
    assert outbox.get(second).status == "failed" and outbox.get(second).last_error == "unreachable"
    assert fake.forbidden == 1 and fake.requests["sendMessage"] == 1
    assert [a.outcome for a in outbox.attempts(first)] == ["failed"]


async def test_network_failure_is_retried_then_sent(sessions, fake, bot, settings):
    """A dropped connection and a 502 are retried with backoff; the message then arrives once."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=555)
    fake.fail_next(1, "drop")
    fake.fail_next(1, "502")
    outbox = OutboxRepository(sessions)
    outbound = outbox.enqueue(champion_id, "check-in", kind="reminder", source_key="r:1")
    await deliver_everything(make_courier(sessions, bot, settings))
    assert fake.texts_for(555) == ["check-in"]
    row = outbox.get(outbound)
    assert row.status == "sent" and row.attempts == 3
    assert [a.outcome for a in outbox.attempts(outbound)] == ["retry", "retry", "sent"]


async def test_network_failure_gives_up_after_max_attempts(sessions, fake, bot, settings):
    """A chat that never answers is failed after DELIVERY_MAX_ATTEMPTS tries, with the reason."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=556)
    fake.fail_next(100, "502")
    outbox = OutboxRepository(sessions)
    outbound = outbox.enqueue(champion_id, "check-in", kind="reminder", source_key="r:1")
    await deliver_everything(make_courier(sessions, bot, settings))
    row = outbox.get(outbound)
    assert row.status == "failed" and row.attempts == settings.delivery_max_attempts
    assert row.last_error.startswith("gave up after 4 attempts")
    assert [a.outcome for a in outbox.attempts(outbound)] == ["retry"] * 3 + ["failed"]
    assert fake.texts_for(556) == []


async def test_opted_out_champion_gets_reminders_but_no_broadcasts(sessions, fake, bot, settings):
    """After /stop, broadcasts are skipped ("opted out") but a reminder they set themselves still goes."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=900)
    ChatRepository(sessions).set_opted_out(champion_id, True)
    outbox = OutboxRepository(sessions)
    broadcast = outbox.enqueue(champion_id, "team news", kind="broadcast", source_key="b:1")
    reminder = outbox.enqueue(champion_id, "your meeting is at 2pm", kind="reminder", source_key="r:1")
    await deliver_everything(make_courier(sessions, bot, settings))
    assert fake.texts_for(900) == ["your meeting is at 2pm"]
    assert outbox.get(broadcast).status == "skipped" and outbox.get(broadcast).last_error == "opted out"
    assert outbox.get(reminder).status == "sent"
    assert outbox.counts() == {"queued": 0, "sending": 0, "sent": 1, "failed": 0, "skipped": 1}


async def test_messages_to_one_chat_are_spaced_and_in_order(sessions, fake, bot, settings):
    """Three messages for one chat go out in order, about a second apart, with no 429."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=321)
    outbox = OutboxRepository(sessions)
    for n in range(3):
        outbox.enqueue(champion_id, f"message {n}", kind="reminder", source_key=f"r:{n}")
    await deliver_everything(make_courier(sessions, bot, settings))
    messages = fake.messages_for(321)
    assert [m.plain for m in messages] == ["message 0", "message 1", "message 2"]
    assert all(b.at - a.at >= 1.0 for a, b in zip(messages, messages[1:]))
    assert fake.too_many_requests == 0


async def test_429_is_recorded_and_retried_after_retry_after(sessions, fake, settings):
    """Without our pacing, the fake's 429 comes back; the message is requeued after retry_after and sent."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=123)
    outbox = OutboxRepository(sessions)
    first = outbox.enqueue(champion_id, "one", kind="reminder", source_key="r:1")
    second = outbox.enqueue(champion_id, "two", kind="reminder", source_key="r:2")
    async with ExtBot(fake.token, base_url=fake.base_url) as plain_bot:  # no rate limiter on the bot
        sender = TelegramSender(plain_bot, session_factory=sessions, pacer=Pacer(0, 0))  # nor in the sender
        courier = Courier(sessions, {"telegram": sender}, settings)
        started = time.monotonic()
        await deliver_everything(courier)
    assert fake.too_many_requests >= 1
    assert fake.texts_for(123) in (["one", "two"], ["two", "one"])
    assert time.monotonic() - started >= 1.0
    attempts = outbox.attempts(first) + outbox.attempts(second)
    assert [a.outcome for a in attempts].count("sent") == 2
    retried = [a for a in attempts if a.outcome == "retry"]
    assert retried and all(a.detail.startswith("429") for a in retried)
    assert outbox.get(first).attempts + outbox.get(second).attempts == 2, "429s use up no attempts"


async def test_stop_finishes_in_flight_messages(sessions, fake, bot, settings):
    """Stopping the courier mid-broadcast leaves every message sent or queued, none half-sent."""
    telegram_champions(sessions, 60, first_chat=20000)
    outbox = OutboxRepository(sessions)
    with sessions() as session:
        ids = [c.id for c in session.query(Champion).all()]
    outbox.enqueue_many([{"champion_id": cid, "text": "hi", "kind": "broadcast", "source_key": f"b:{cid}"} for cid in ids])
    courier = make_courier(sessions, bot, settings)
    stop = asyncio.Event()
    task = asyncio.ensure_future(courier.run(stop))
    await fake.wait_for(lambda: len(fake.sent) >= 20, timeout=10)
    stop.set()
    await asyncio.wait_for(task, 10)
    counts = outbox.counts()
    assert counts["sending"] == 0
    assert counts["sent"] == len(fake.sent) and counts["queued"] == 60 - len(fake.sent)
    assert len(fake.by_chat) == len(fake.sent), "nobody got two"


def test_pacer_never_lets_more_than_the_limit_into_one_second():
    """Whatever the timing, no one-second window holds more than 30 sends, and 61 sends take over two seconds."""

    async def scenario() -> List[float]:
        pacer = Pacer(30, 1)
        times: List[float] = []

        async def record() -> None:
            times.append(time.monotonic())
            await asyncio.sleep(0.002)

        await asyncio.gather(*(pacer.run(n, record) for n in range(61)))
        return times

    times = sorted(asyncio.run(scenario()))
    assert times[-1] - times[0] >= 2.0
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[30:]))


async def test_long_message_arrives_in_parts_in_order_with_the_keyboard_last(sessions, fake, bot, settings):
    """A message over Telegram's 4,096 characters is split; parts arrive in order, a second apart, buttons on the last."""
    [champion_id] = telegram_champions(sessions, 1, first_chat=6060)
    paragraphs = [f"Paragraph {n}: " + "word " * 300 for n in range(6)]
    long_payload = "/choose_meeting" + '{"meeting": "Patient Reference Group, Thursday 2pm, room 4"}'
    outbox = OutboxRepository(sessions)
    outbound = outbox.enqueue(
        champion_id, "\n\n".join(paragraphs), kind="reminder", source_key="r:long",
        buttons=[{"title": "Which meeting?", "payload": long_payload}],
    )
    await deliver_everything(make_courier(sessions, bot, settings))
    messages = fake.messages_for(6060)
    assert len(messages) >= 2 and fake.bad_requests == [] and fake.too_many_requests == 0
    assert all(len(m.plain) <= 4096 for m in messages)
    assert " ".join(" ".join(m.plain.split()) for m in messages) == " ".join(" ".join(p.split()) for p in paragraphs)
    assert all(m.reply_markup is None for m in messages[:-1])
    [button] = messages[-1].buttons()
    assert len(button["callback_data"].encode()) <= 64
    from bot.telegram_format import CallbackRepository

    assert CallbackRepository(sessions).resolve(button["callback_data"]) == long_payload
    assert all(b.at - a.at >= 1.0 for a, b in zip(messages, messages[1:]))
    assert outbox.get(outbound).channel_message_id == str(messages[-1].message_id)
