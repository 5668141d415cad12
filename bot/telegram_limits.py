"""Telegram's rate limits, kept for every send: the one rate limiter and the one bot factory.

Telegram's limits (about 30 messages a second overall, about one a second per chat) are kept
by ``Pacer``: sends are spaced evenly (no bursts), each holds one of 30 tokens from leaving until
a second after its answer (so no one-second window at Telegram's end ever sees more than 30,
whatever the network's jitter), messages to one chat go one at a time, each a second after the
previous one's answer, and a 429 pauses every send for its ``retry_after`` (the courier puts
the message that got it back in the queue until then, recorded, never counted as a failed attempt).
``TelegramRateLimiter`` puts the pacer on python-telegram-bot's ``ExtBot`` (``make_bot``), so
the bot's replies and the courier's pushes share one budget.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta
from typing import Any, Callable, Coroutine, Dict

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter, ExtBot
from telegram.request import HTTPXRequest

from bot.settings import Settings

log = logging.getLogger(__name__)

# Bot API methods that count towards Telegram's message limits.
_MESSAGE_METHODS = frozenset({"copyMessage", "copyMessages", "forwardMessage", "forwardMessages"})
# Float safety between our clock and the server's (both monotonic on one machine, or not).
CHAT_MARGIN_SECONDS = 0.01
# How far behind the even schedule sends may fall and then catch up (after the loop was busy).
CATCH_UP_SECONDS = 0.25


class Pacer:
    """Keeps sends within Telegram's limits, whatever the network's jitter; pauses everything after a 429.

    Overall: sends are spaced evenly at max_per_second (no bursts), and each send also holds one
    of max_per_second tokens from the moment it leaves until one second after its answer came
    back. Telegram receives a request somewhere between those two moments, so no one-second
    window there can ever hold more than max_per_second requests. Per chat: one message at a
    time, in the order asked, each leaving seconds_per_chat after the previous one's answer.
    """

    def __init__(
        self,
        max_per_second: float,
        seconds_per_chat: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Allow max_per_second sends overall (0: no limit) and one per seconds_per_chat per chat (0: none)."""
        self._interval = 1.0 / max_per_second if max_per_second > 0 else 0.0
        tokens = max(1, math.floor(max_per_second)) if max_per_second > 0 else 0
        self._tokens = asyncio.Semaphore(tokens) if tokens else None
        self._token_seconds = tokens / max_per_second if max_per_second > 0 else 0.0
        self._chat_interval = seconds_per_chat + CHAT_MARGIN_SECONDS if seconds_per_chat > 0 else 0.0
        self._catch_up = CATCH_UP_SECONDS
        self._clock = clock
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._chat_locks: Dict[Any, asyncio.Lock] = {}
        self._chat_last: Dict[Any, float] = {}

    @property
    def interval(self) -> float:
        """Seconds between two sends overall."""
        return self._interval

    def pause(self, seconds: float) -> None:
        """Hold every send for seconds (Telegram answered 429 with retry_after)."""
        until = self._clock() + max(0.0, seconds)
        self._paused_until = max(self._paused_until, until)
        self._next_slot = max(self._next_slot, self._paused_until)

    async def _overall_slot(self) -> None:
        """Wait for the next evenly spaced overall slot, respecting any pause."""
        while True:
            now = self._clock()
            if self._paused_until > now:
                await asyncio.sleep(self._paused_until - now)
                continue
            # Sends held up by a busy moment catch up a little (the tokens keep the limit);
            # after a longer quiet spell the even schedule starts again from now.
            slot = self._next_slot if self._next_slot >= now - self._catch_up else now
            self._next_slot = slot + self._interval
            if slot > now:
                await asyncio.sleep(slot - now)
            if self._paused_until <= self._clock():
                return

    async def _overall(self, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Await call() holding a token (given back a second after the answer) in an even slot."""
        if self._tokens is None:
            return await call()
        await self._tokens.acquire()
        try:
            await self._overall_slot()
            return await call()
        finally:
            asyncio.get_running_loop().call_later(self._token_seconds, self._tokens.release)

    async def run(self, chat_id: Any, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Await call() once the limits allow a message to chat_id (None: no per-chat limit)."""
        if chat_id is None or not self._chat_interval:
            return await self._overall(call)
        lock = self._chat_locks.get(chat_id)
        if lock is None:
            self._prune()
            lock = self._chat_locks[chat_id] = asyncio.Lock()
        async with lock:  # one message at a time per chat, in the order they asked
            last = self._chat_last.get(chat_id)
            if last is not None:
                wait = last + self._chat_interval - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                return await self._overall(call)
            finally:
                self._chat_last[chat_id] = self._clock()

    def _prune(self) -> None:
        """Forget chats with nothing pending whose last message is older than the per-chat interval."""
        if len(self._chat_locks) < 4096:
            return
        cutoff = self._clock() - self._chat_interval
        for chat_id, lock in list(self._chat_locks.items()):
            if not lock.locked() and self._chat_last.get(chat_id, 0.0) < cutoff:
                del self._chat_locks[chat_id]
                self._chat_last.pop(chat_id, None)


def retry_after_seconds(error: Exception) -> float:
    """The retry_after of a telegram.error.RetryAfter in seconds (int or timedelta in PTB 22)."""
    value = getattr(error, "_retry_after", None)
    if value is None:
        value = getattr(error, "retry_after", 1)
    if isinstance(value, timedelta):
        return max(0.0, value.total_seconds())
    return max(0.0, float(value))


def _is_message_method(endpoint: str) -> bool:
    """True for Bot API methods that send a message (they count towards the limits)."""
    return (endpoint.startswith("send") and endpoint != "sendChatAction") or endpoint in _MESSAGE_METHODS


class TelegramRateLimiter(BaseRateLimiter[Any]):
    """python-telegram-bot rate limiter keeping Telegram's overall and per-chat limits (see Pacer).

    A 429 pauses every send for its retry_after; the request is then retried up to max_retries
    times (rate_limit_args={"max_retries": n}, or just n as with AIORateLimiter, overrides it
    per call; the courier uses 0 and requeues the message itself, so every 429 is recorded).
    """

    def __init__(self, max_per_second: float = 30.0, seconds_per_chat: float = 1.0, max_retries: int = 1) -> None:
        """Limits as in Settings.telegram_max_per_second / telegram_seconds_per_chat."""
        self.pacer = Pacer(max_per_second, seconds_per_chat)
        self.max_retries = max_retries

    @classmethod
    def from_settings(cls, settings: Settings, max_retries: int = 1) -> "TelegramRateLimiter":
        """A limiter for the limits in settings (bot.settings.Settings)."""
        return cls(settings.telegram_max_per_second, settings.telegram_seconds_per_chat, max_retries)

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: Dict[str, Any],
        endpoint: str,
        data: Dict[str, Any],
        rate_limit_args: Any,
    ) -> Any:
        """Send the request when the limits allow it; after a 429, pause everything and maybe retry."""
        if not _is_message_method(endpoint):
            return await callback(*args, **kwargs)
        retries = self.max_retries
        if isinstance(rate_limit_args, dict) and "max_retries" in rate_limit_args:
            retries = int(rate_limit_args["max_retries"])
        elif isinstance(rate_limit_args, int):  # AIORateLimiter's convention: the retries
            retries = rate_limit_args
        chat_id = data.get("chat_id")
        if isinstance(chat_id, str) and chat_id.lstrip("-").isdigit():
            chat_id = int(chat_id)  # "123" and 123 are the same chat
        for attempt in range(retries + 1):
            try:
                return await self.pacer.run(chat_id, lambda: callback(*args, **kwargs))
            except RetryAfter as error:
                seconds = retry_after_seconds(error)
                self.pacer.pause(seconds)
                if attempt >= retries:
                    raise
                log.info("Telegram asked us to wait %.1f s (429); retrying", seconds)
        raise AssertionError("unreachable")  # pragma: no cover


def make_bot(settings: Settings, *, max_retries: int = 0) -> ExtBot:
    """The one ExtBot, with TelegramRateLimiter, that Telegram replies and the courier's pushes share."""
    if not settings.telegram_bot_token:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    return ExtBot(
        settings.telegram_bot_token,
        base_url=settings.telegram_api_base_url,
        request=HTTPXRequest(connection_pool_size=64),
        get_updates_request=HTTPXRequest(connection_pool_size=2),
        rate_limiter=TelegramRateLimiter.from_settings(settings, max_retries=max_retries),
    )
