"""The delivery process: sends the outbox's messages through each champion's channel, within Telegram's limits.

``python -m bot.delivery`` migrates the app database, takes the reminder scheduler's lock (so
only one delivery process runs per database), puts back messages a crashed run left half-sent,
and runs in one event loop: the reminder scheduler, due broadcasts every second, the Telegram
bot (when TELEGRAM_BOT_TOKEN is set) and the Courier, sharing one ``telegram.Bot`` and one
rate limiter.

How often a message goes out (the exactly-once trade-off):

* Every message is stored (``outbound_messages``) before anything is sent; a row stays
  queued until it is sent, failed or skipped, each for a recorded reason. Nothing is lost.
* Web chat: delivering is adding the message to the champion's transcript, done in the same
  database transaction that marks the row sent. Exactly once, whatever happens to the process.
* Telegram: the Bot API has no idempotency key, so "sent to Telegram" and "recorded as sent"
  cannot be one atomic step. The courier marks a row sent immediately after each successful
  API call. On SIGTERM/SIGINT it stops claiming, finishes and records what is in flight, and
  exits: exactly once. After SIGKILL (or a power cut) the rows left "sending" are recorded as
  "interrupted" and sent again at the next start: at-least-once for those rows only. Only the
  ones Telegram had accepted in the last few milliseconds before the kill (answer received or
  on its way, outcome not yet committed) arrive twice; in tests, 0 to 5 of 1,000. The courier
  holds about one second's worth of messages claimed, so at most that many are re-sent. The
  same holds for a request that timed out after Telegram had accepted it: it is retried, as
  Telegram offers no way to ask whether it arrived.

Telegram's rate limits (the pacer, the shared rate limiter and the bot) live in bot.telegram_limits.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import html
import logging
import math
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Set, Tuple

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.erasure import run_erasure_forever
from bot.retention import run_retention_forever
from bot.models import utcnow
from bot.outbox import ClaimedMessage, OutboxRepository
from bot.reminder_scheduler import SchedulerAlreadyRunning, start_reminder_scheduler, stop_reminder_scheduler
from bot.repository import ChatRepository
from bot.telegram_limits import Pacer, TelegramRateLimiter, retry_after_seconds

log = logging.getLogger("bot.delivery")  # the same name when run as python -m bot.delivery

# Kinds of message a champion's "stop" (opt-out) applies to; their own reminders still go.
OPT_OUT_KINDS = frozenset({"broadcast"})
# How many follow-up parts of a long message are retried in place before giving up.
_PART_RETRIES = 5


# --- senders --------------------------------------------------------------------------------------


class RetryLater(Exception):
    """Sending failed for now; try again later (after retry_after seconds if given)."""

    def __init__(self, reason: str, retry_after: Optional[float] = None, rate_limited: bool = False) -> None:
        """reason is recorded; rate_limited retries never use up the message's attempts."""
        super().__init__(reason)
        self.reason, self.retry_after, self.rate_limited = reason, retry_after, rate_limited


class PermanentFailure(Exception):
    """Sending can never succeed (blocked, chat gone, refused); unreachable marks the champion too."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        """reason is recorded on the message (and on the champion when unreachable)."""
        super().__init__(reason)
        self.reason, self.unreachable = reason, unreachable


class Sender(Protocol):
    """Delivers one claimed message on one channel."""

    # True when deliver() records the message as sent itself (in the delivery's own transaction).
    marks_sent: bool

    async def deliver(self, message: ClaimedMessage) -> Optional[str]:
        """Send message; return the channel's message id, or raise RetryLater / PermanentFailure."""


class WebSender:
    """The web chat: the message joins the champion's transcript (the open page shows it live)."""

    marks_sent = True

    def __init__(self, outbox: OutboxRepository) -> None:
        """Write through outbox (transcript and status in one transaction)."""
        self._outbox = outbox

    def deliver_now(self, message: ClaimedMessage) -> Optional[str]:
        """Add the message to the transcript and mark it sent, atomically (blocking: a database call)."""
        chat_message_id = self._outbox.deliver_to_transcript(message.id)
        return None if chat_message_id is None else str(chat_message_id)

    async def deliver(self, message: ClaimedMessage) -> Optional[str]:
        """deliver_now in a worker thread (the courier runs deliver_now on its database thread)."""
        return await asyncio.to_thread(self.deliver_now, message)


RenderFunction = Callable[[str, Optional[List[Dict[str, Any]]], Callable[[str], str]], List[Tuple[str, Any]]]


def _default_render() -> RenderFunction:
    """bot.telegram_format.render (imported when first needed)."""
    from bot.telegram_format import render

    return render


class TelegramSender:
    """Telegram: renders the message as HTML parts (keyboard on the last) and sends each to the chat."""

    marks_sent = False

    def __init__(
        self,
        bot: Any,
        *,
        store_callback: Optional[Callable[[str], str]] = None,
        session_factory: Optional["sessionmaker[Session]"] = None,
        render: Optional[RenderFunction] = None,
        public_base_url: Optional[str] = None,
        pacer: Optional[Pacer] = None,
        max_per_second: float = 30.0,
        seconds_per_chat: float = 1.0,
    ) -> None:
        """Send with bot (a telegram.Bot / ExtBot, initialised by the caller).

        Long button payloads are kept by store_callback (default: bot.telegram_format's
        CallbackRepository on session_factory); link buttons need public_base_url (as in replies).
        When bot has no TelegramRateLimiter, the sender paces its own sends with pacer (default:
        a Pacer for max_per_second / seconds_per_chat).
        """
        self._bot = bot
        self._render = render
        self._public_base_url = public_base_url
        self._store_callback = store_callback
        self._session_factory = session_factory
        limiter = getattr(bot, "rate_limiter", None)
        self._bot_limits = isinstance(limiter, TelegramRateLimiter)
        self._pacer = None if self._bot_limits else (pacer or Pacer(max_per_second, seconds_per_chat))

    def _callback_store(self) -> Callable[[str], str]:
        """The function keeping long button payloads (see bot.telegram_format)."""
        if self._store_callback is None:
            from bot.telegram_format import CallbackRepository

            if self._session_factory is None:
                raise ValueError("TelegramSender needs store_callback or session_factory")
            self._store_callback = CallbackRepository(self._session_factory).store
        return self._store_callback

    async def _send_part(self, chat_id: int, text: str, markup: Any, html_mode: bool = True) -> Any:
        """One sendMessage (HTML parse mode, no link preview), through the shared limiter or our own pacer."""
        from telegram import LinkPreviewOptions
        from telegram.constants import ParseMode

        kwargs: Dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": ParseMode.HTML if html_mode else None,
            "reply_markup": markup,
            "link_preview_options": LinkPreviewOptions(is_disabled=True),
        }
        if self._bot_limits:
            return await self._bot.send_message(**kwargs, rate_limit_args={"max_retries": 0})
        try:
            return await self._pacer.run(chat_id, lambda: self._bot.send_message(**kwargs))
        except Exception as error:
            from telegram.error import RetryAfter

            if isinstance(error, RetryAfter):
                self._pacer.pause(retry_after_seconds(error))
            raise

    async def deliver(self, message: ClaimedMessage) -> Optional[str]:
        """Send every part; map Telegram's errors to RetryLater / PermanentFailure."""
        try:
            chat_id = int(message.external_id)
        except ValueError:
            raise PermanentFailure("chat not found: not a Telegram chat id", unreachable=True) from None
        store = self._callback_store()
        if self._render is not None:
            parts = await asyncio.to_thread(self._render, message.text, message.buttons, store)
        else:
            parts = await asyncio.to_thread(
                _default_render(), message.text, message.buttons, store, public_base_url=self._public_base_url
            )
        if not parts:
            raise PermanentFailure("nothing to send: the message is empty")
        sent = None
        for index, (text, markup) in enumerate(parts):
            sent = await self._send_with_mapping(chat_id, text, markup, first=index == 0)
        return None if sent is None else str(sent.message_id)

    async def _send_with_mapping(self, chat_id: int, text: str, markup: Any, first: bool) -> Any:
        """Send one part. The first part's failures go to the courier; later parts retry in place
        (re-sending the whole message would repeat the parts already delivered)."""
        from telegram import error as tg

        tries = 0
        html_mode = True
        while True:
            try:
                return await self._send_part(chat_id, text, markup, html_mode)
            except tg.RetryAfter as exc:
                seconds = retry_after_seconds(exc)
                if first or tries >= _PART_RETRIES:
                    raise RetryLater(f"429 Too Many Requests: retry after {seconds:g} s", seconds, True) from None
                await asyncio.sleep(seconds)
            except tg.Forbidden as exc:
                raise PermanentFailure(f"blocked: {exc.message}", unreachable=True) from None
            except tg.ChatMigrated as exc:
                raise PermanentFailure(f"chat migrated to {exc.new_chat_id}") from None
            except tg.BadRequest as exc:
                if "chat not found" in exc.message.lower():
                    raise PermanentFailure("chat not found", unreachable=True) from None
                if html_mode and "can't parse entities" in exc.message.lower():
                    # Telegram refused the formatting: the same words as plain text, not nothing.
                    log.warning("Telegram refused a formatted message to chat %s; sending it as plain text", chat_id)
                    text, html_mode = html.unescape(re.sub(r"<[^>]+>", "", text)), False
                    continue
                raise PermanentFailure(f"refused: {exc.message}") from None
            except tg.InvalidToken as exc:
                raise RetryLater(f"invalid bot token: {exc.message}") from None
            except tg.TelegramError as exc:  # NetworkError, TimedOut, Conflict, 5xx ...
                if first or tries >= _PART_RETRIES:
                    raise RetryLater(f"{type(exc).__name__}: {exc.message}") from None
                await asyncio.sleep(min(30.0, 2.0**tries))
            tries += 1


# --- the courier ----------------------------------------------------------------------------------


@dataclass
class CourierStats:
    """What a courier has done since it started."""

    sent: int = 0
    retried: int = 0
    rate_limited: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: int = 0


class Courier:
    """Claims due outbound messages in small batches and sends them concurrently through the senders."""

    def __init__(
        self,
        session_factory: "sessionmaker[Session]",
        senders: Mapping[str, Sender],
        settings: Any = None,
        *,
        max_in_flight: Optional[int] = None,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        shutdown_seconds: float = 30.0,
    ) -> None:
        """senders maps a champion's channel ("web", "telegram") to its Sender; settings gives the
        limits, poll interval and attempts (bot.settings.Settings; defaults when None)."""
        self.outbox = OutboxRepository(session_factory)
        self.chats = ChatRepository(session_factory)
        self.senders = dict(senders)
        per_second = float(getattr(settings, "telegram_max_per_second", 30.0))
        self.poll_seconds = float(getattr(settings, "delivery_poll_seconds", 1.0))
        self.max_attempts = int(getattr(settings, "delivery_max_attempts", 10))
        # About one second's worth of messages waiting to go: full speed, small crash window.
        self.max_in_flight = max_in_flight or max(4, math.ceil(per_second))
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.shutdown_seconds = shutdown_seconds
        self.stats = CourierStats()
        self._wake_at: Optional[float] = None  # monotonic time a requeued message becomes due
        self._executor: Optional[ThreadPoolExecutor] = None
        self._unsent = 0  # claimed messages whose send has not returned yet
        self._database_away = False  # set while claims fail, so the outage is logged once
        self._progress: Optional[asyncio.Event] = None
        self._sent_queue: List[Tuple[int, Optional[str], asyncio.Future]] = []
        self._sent_writer: Optional[asyncio.Task] = None

    # --- database calls ---------------------------------------------------------------------

    async def _db(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking database call on the courier's own thread.

        One thread, so the courier's writes never wait on each other's locks (SQLite's lock
        waits back off by up to 100 ms, which would stall sending).
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="courier-db")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(function, *args))

    def close(self) -> None:
        """Release the courier's database thread (run() does this when it returns)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _record_sent(self, outbound_id: int, channel_message_id: Optional[str]) -> None:
        """Record a delivery; deliveries finishing together share one transaction (group commit)."""
        future = asyncio.get_running_loop().create_future()
        self._sent_queue.append((outbound_id, channel_message_id, future))
        if self._sent_writer is None or self._sent_writer.done():
            self._sent_writer = asyncio.ensure_future(self._write_sent())
        await asyncio.shield(future)

    async def _write_sent(self) -> None:
        """Write queued delivery records until none are left, retrying while the database is away.

        A message Telegram accepted must not go back to the queue, so recording is retried
        rather than given up (if the process is stopped meanwhile, the row stays "sending"
        and is recovered as interrupted at the next start).
        """
        delay = 0.1
        while self._sent_queue:
            batch, self._sent_queue = self._sent_queue, []
            try:
                await self._db(self.outbox.mark_sent_many, [(i, c) for i, c, _ in batch])
            except Exception:
                log.exception("recording %d sent message(s) failed; retrying in %.1f s", len(batch), delay)
                self._sent_queue[:0] = batch
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            delay = 0.1
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    # --- the loop ---------------------------------------------------------------------------

    def _backoff(self, attempts: int) -> float:
        """Seconds to wait before attempt number attempts + 1 (exponential, with a little jitter)."""
        delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.1)

    def _due_in(self, seconds: float) -> None:
        """Remember to look for due messages again in seconds."""
        at = time.monotonic() + seconds
        self._wake_at = at if self._wake_at is None else min(self._wake_at, at)

    def _signal(self) -> None:
        """Wake the loop: a send returned or a message was recorded."""
        if self._progress is not None:
            self._progress.set()

    async def _claim(self, limit: int) -> List[ClaimedMessage]:
        """Claim up to limit due messages for the channels we have senders for (none while the database is away)."""
        try:
            claimed = await self._db(self.outbox.claim_due, limit, None, sorted(self.senders))
        except SQLAlchemyError as error:
            if not self._database_away:
                log.warning("the database is unavailable (%s); the courier keeps trying", type(error).__name__)
            self._database_away = True
            return []
        if self._database_away:
            log.info("the database is back; delivering again")
            self._database_away = False
        self._unsent += len(claimed)
        return claimed

    async def run_once(self) -> int:
        """One pass: claim a batch of due messages, handle them all, return how many."""
        claimed = await self._claim(self.max_in_flight)
        await asyncio.gather(*(self.handle(message) for message in claimed))
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until stop is set, then finish (and record) what is in flight and return."""
        in_flight: Set[asyncio.Task] = set()
        self._progress = asyncio.Event()
        stopping = asyncio.ensure_future(stop.wait())
        half = self.max_in_flight // 2
        next_claim = 0.0
        last_report = time.monotonic()
        try:
            while not stop.is_set():
                now = time.monotonic()
                if self._wake_at is not None and self._wake_at <= now:
                    self._wake_at, next_claim = None, now
                # Top up when half the claimed messages have gone, so the limiter always has the
                # next one ready; never more than two batches unrecorded.
                can_claim = self._unsent <= half and len(in_flight) < 2 * self.max_in_flight
                if can_claim and now >= next_claim:
                    room = self.max_in_flight - self._unsent
                    claimed = await self._claim(room)
                    for message in claimed:
                        task = asyncio.ensure_future(self.handle(message))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                        task.add_done_callback(lambda _task: self._signal())
                    # Fewer than asked for: nothing else is due now; look again after the poll interval.
                    next_claim = now if len(claimed) == room else now + self.poll_seconds
                    continue
                if can_claim:
                    due = next_claim if self._wake_at is None else min(next_claim, self._wake_at)
                    timeout: Optional[float] = max(0.0, due - time.monotonic())
                else:
                    timeout = None  # until a send returns (or stop)
                self._progress.clear()
                progress = asyncio.ensure_future(self._progress.wait())
                await asyncio.wait({stopping, progress}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                progress.cancel()
                if time.monotonic() - last_report >= 60:
                    last_report = time.monotonic()
                    log.info("delivery so far: %s", self.stats)
        finally:
            stopping.cancel()
            await self._finish(in_flight)
            self._progress = None
            self.close()

    async def _finish(self, in_flight: Set[asyncio.Task]) -> None:
        """Let in-flight messages finish and be recorded; after shutdown_seconds cancel the rest."""
        if not in_flight:
            return
        log.info("finishing %d message(s) in flight", len(in_flight))
        _, pending = await asyncio.wait(set(in_flight), timeout=self.shutdown_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- one message ------------------------------------------------------------------------

    async def handle(self, message: ClaimedMessage) -> None:
        """Send one claimed message and record the outcome (never raises, except when cancelled)."""
        state = {"sending": True, "sent": False}

        def send_returned() -> None:
            if state["sending"]:
                state["sending"] = False
                self._unsent -= 1
                self._signal()

        try:
            await self._handle(message, send_returned, state)
        except asyncio.CancelledError:
            if not state["sent"]:
                # Stopped mid-send: it may or may not have gone out; back to the queue, recorded.
                await asyncio.shield(self._db(self.outbox.release, message.id, "interrupted: the courier stopped"))
                self.stats.interrupted += 1
            raise
        except Exception:  # a bug must not stop the courier: retry later, recorded
            log.exception("outbound %s: unexpected error", message.id)
            if not state["sent"]:
                await self._retry(message, "unexpected error in the courier", rate_limited=False, after=None)
        finally:
            send_returned()

    async def _handle(self, message: ClaimedMessage, send_returned: Callable[[], None], state: Dict[str, bool]) -> None:
        """Check the champion, send, and record what happened."""
        outbox = self.outbox
        if message.erasure_requested:
            send_returned()
            await self._db(outbox.mark_skipped, message.id, "erasure requested")
            self.stats.skipped += 1
            return
        if message.unreachable:
            send_returned()
            await self._db(outbox.mark_failed, message.id, "unreachable")
            self.stats.failed += 1
            return
        if message.opted_out and message.kind in OPT_OUT_KINDS:
            send_returned()
            await self._db(outbox.mark_skipped, message.id, "opted out")
            self.stats.skipped += 1
            return
        sender = self.senders[message.channel]
        try:
            deliver_now = getattr(sender, "deliver_now", None)
            if deliver_now is not None:  # a database-only channel: on our database thread
                channel_message_id = await self._db(deliver_now, message)
            else:
                channel_message_id = await sender.deliver(message)
        except RetryLater as problem:
            send_returned()
            await self._retry(message, problem.reason, problem.rate_limited, problem.retry_after)
            return
        except PermanentFailure as problem:
            send_returned()
            await self._db(outbox.mark_failed, message.id, problem.reason)
            if problem.unreachable:
                await self._db(self.chats.set_reachable, message.champion_id, False, problem.reason)
            self.stats.failed += 1
            log.info("outbound %s to champion %s failed: %s", message.id, message.champion_id, problem.reason.split(":")[0])
            return
        state["sent"] = True
        send_returned()
        if not sender.marks_sent:
            await self._record_sent(message.id, channel_message_id)
        self.stats.sent += 1
        log.debug("outbound %s sent (%s)", message.id, message.channel)

    async def _retry(self, message: ClaimedMessage, reason: str, rate_limited: bool, after: Optional[float]) -> None:
        """Requeue the message (a 429 after retry_after, always; otherwise with backoff until max attempts)."""
        if rate_limited:
            delay = max(0.0, after if after is not None else 1.0)
            await self._db(
                functools.partial(self.outbox.mark_retry, count_attempt=False),
                message.id, reason, utcnow() + timedelta(seconds=delay),
            )
            self.stats.rate_limited += 1
            self._due_in(delay)
            return
        attempts = message.attempts + 1
        if attempts >= self.max_attempts:
            await self._db(self.outbox.mark_failed, message.id, f"gave up after {attempts} attempts: {reason}")
            self.stats.failed += 1
            log.info("outbound %s failed after %d attempts", message.id, attempts)
            return
        delay = after if after is not None else self._backoff(attempts)
        await self._db(self.outbox.mark_retry, message.id, reason, utcnow() + timedelta(seconds=delay))
        self.stats.retried += 1
        self._due_in(delay)
        log.info("outbound %s will be retried in %.1f s", message.id, delay)


# --- the delivery process -------------------------------------------------------------------------


async def _start_due_broadcasts_forever(session_factory: "sessionmaker[Session]", stop: asyncio.Event, every: float) -> None:
    """Every `every` seconds, turn due scheduled broadcasts into outbound messages (bot.broadcasts)."""
    from bot.broadcasts import start_due_broadcasts

    while not stop.is_set():
        try:
            started = await asyncio.to_thread(start_due_broadcasts, session_factory)
            if started:
                log.info("started %d due broadcast(s)", started)
        except Exception:
            log.exception("starting due broadcasts failed; trying again shortly")
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


def _install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set stop (graceful: in-flight messages finish and are recorded)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on the main thread
            pass


async def serve(settings: Any, stop: Optional[asyncio.Event] = None) -> None:
    """Run the delivery process until stop is set (or SIGTERM/SIGINT)."""
    from bot.db import make_engine, make_session_factory, migrate

    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    await asyncio.to_thread(migrate, settings.database_url)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    # The reminder scheduler's lock (one per database) also makes this the only delivery
    # process: recovering half-sent messages below is only safe when no other one is sending.
    try:
        reminders = await start_reminder_scheduler(settings, session_factory)
    except SchedulerAlreadyRunning:
        engine.dispose()
        raise
    outbox = OutboxRepository(session_factory)
    recovered = await asyncio.to_thread(outbox.recover_interrupted)
    if recovered:
        log.warning("%d message(s) were left half-sent by the last run: recorded as interrupted, sending again", recovered)
    senders: Dict[str, Sender] = {"web": WebSender(outbox)}
    telegram_module: Any = None
    application = None
    try:
        if settings.telegram_bot_token:
            from bot import telegram_bot as telegram_module

            application = telegram_module.build_application(
                settings, session_factory=session_factory, rasa_url=settings.rasa_url
            )
            await telegram_module.start_telegram(application, settings)
            senders["telegram"] = TelegramSender(
                application.bot,
                session_factory=session_factory,
                public_base_url=settings.public_base_url,
            )
        else:
            log.info("TELEGRAM_BOT_TOKEN is not set: only web chat messages are delivered")
        courier = Courier(session_factory, senders, settings)
        broadcasts = asyncio.ensure_future(
            _start_due_broadcasts_forever(session_factory, stop, max(1.0, settings.delivery_poll_seconds))
        )
        # "Delete my data": erase champions whose request is a few seconds old (bot/erasure.py).
        erasures = asyncio.ensure_future(run_erasure_forever(settings, session_factory, stop))
        # Conversation records older than RETENTION_DAYS are deleted (bot/retention.py).
        retention = asyncio.ensure_future(run_retention_forever(settings, session_factory, stop))
        # What is loaded by now lives as long as the process: keep it out of the garbage
        # collector's full passes, which otherwise pause sending for tens of milliseconds.
        gc.collect()
        gc.freeze()
        log.info("delivery running (channels: %s)", ", ".join(sorted(senders)))
        try:
            await courier.run(stop)
        finally:
            stop.set()
            await asyncio.gather(broadcasts, erasures, retention, return_exceptions=True)
            log.info("delivery stopped: %s", courier.stats)
    finally:
        if application is not None:
            await telegram_module.stop_telegram(application)
        await stop_reminder_scheduler(reminders)
        engine.dispose()


def main() -> None:
    """Command line: python -m bot.delivery (settings from the environment)."""
    from bot.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request URL at INFO, and Telegram URLs contain the bot token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # APScheduler logs two lines per reminder tick (every second) at INFO.
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    settings = load_settings()
    try:
        asyncio.run(serve(settings))
    except SchedulerAlreadyRunning:
        log.error("another delivery process is already running on this database; exiting")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
