"""Delivery benchmark: a broadcast to 1,000 Telegram chats through the courier against the rate-limited fake Bot API.

Prints the time from the courier's start to the last message recorded as sent, and that as a
fraction of the limit's minimum (1,000 / 30 s); target at least 90 %. Also checks that every
chat got exactly one message and counts the fake's 429 answers. The fake runs in its own
process (``python -m bench.fake_telegram``), as Telegram is a server of its own.

    python -m bench.delivery [--chats 1000] [--database-url URL]
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_telegram import DEFAULT_TOKEN  # noqa: E402

FIRST_CHAT = 100000
TEXT = (
    "Patient Reference Group meets Thursday at 2pm. Papers are out: please read pages 4-9 "
    "& bring your questions <3"
)
BUTTONS = [{"title": "I'll be there", "payload": "/affirm"}, {"title": "Can't make it", "payload": "/deny"}]


@dataclass
class DeliveryRun:
    """What one benchmark run measured."""

    chats: int
    seconds: float
    max_per_second: float
    statuses: Dict[str, int]
    too_many_requests: int
    duplicates: int
    missing: int
    courier: Any = None
    fake_stats: Dict[str, Any] = field(default_factory=dict)

    @property
    def minimum_seconds(self) -> float:
        """The least time the overall limit allows for this many messages."""
        return self.chats / self.max_per_second

    @property
    def fraction_of_limit(self) -> float:
        """Achieved throughput as a fraction of the limit's (1.0 = exactly at the limit)."""
        return self.minimum_seconds / self.seconds if self.seconds > 0 else 0.0


def seed(database_url: str, chats: int, first_chat: int = FIRST_CHAT, broadcast: bool = True) -> None:
    """Create chats Telegram champions and one queued broadcast message for each."""
    from bot.db import make_engine, make_session_factory, migrate
    from bot.models import Champion, utcnow
    from bot.outbox import OutboxRepository

    migrate(database_url)
    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        with sessions() as session:
            now = utcnow()
            session.add_all(
                [Champion(channel="telegram", external_id=str(first_chat + n), created_at=now, last_active_at=now)
                 for n in range(chats)]
            )
            session.commit()
            ids = [c.id for c in session.query(Champion).filter(Champion.channel == "telegram").order_by(Champion.id)]
        OutboxRepository(sessions).enqueue_many(
            [
                {"champion_id": cid, "text": TEXT, "buttons": BUTTONS, "kind": "broadcast" if broadcast else "reminder",
                 "source_key": f"bench:champion:{cid}"}
                for cid in ids
            ]
        )
    finally:
        engine.dispose()


async def run_courier(database_url: str, settings: Any, timeout: float = 600.0) -> Any:
    """Run a courier as the delivery process does (its ExtBot and rate limiter, real rendering)
    until nothing is pending; return it (its stats)."""
    from bot.db import make_engine, make_session_factory
    from bot.delivery import Courier, TelegramSender, WebSender
    from bot.outbox import OutboxRepository
    from bot.telegram_limits import make_bot

    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    outbox = OutboxRepository(sessions)
    try:
        async with make_bot(settings) as bot:
            senders = {"web": WebSender(outbox), "telegram": TelegramSender(bot, session_factory=sessions)}
            courier = Courier(sessions, senders, settings)
            stop = asyncio.Event()
            task = asyncio.ensure_future(courier.run(stop))
            deadline = time.monotonic() + timeout
            try:
                while await asyncio.to_thread(outbox.pending) > 0:
                    if task.done():
                        task.result()
                        raise RuntimeError("the courier stopped early")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"still pending after {timeout} s: {outbox.counts()}")
                    await asyncio.sleep(0.02)
            finally:
                stop.set()
                await asyncio.wait_for(task, 60)
            return courier
    finally:
        engine.dispose()


class FakeTelegramProcess:
    """bench/fake_telegram.py as a separate process on a free loopback port, read through /_fake/."""

    def __init__(self, max_per_second: int = 30, per_chat_seconds: float = 1.0) -> None:
        """Limits the fake enforces (429 with retry_after beyond them)."""
        self.max_per_second, self.per_chat_seconds = max_per_second, per_chat_seconds
        self.token = DEFAULT_TOKEN
        self.port = 0
        self._process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL to give python-telegram-bot."""
        return f"{self.url}/bot"

    async def _get(self, path: str) -> Any:
        """GET a control endpoint's JSON."""
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}{path}") as response:
                return await response.json()

    async def stats(self) -> Dict[str, Any]:
        """The fake's counters."""
        return await self._get("/_fake/stats")

    async def per_chat(self) -> Dict[int, int]:
        """How many messages each chat received."""
        counts: Dict[int, int] = {}
        for message in await self._get("/_fake/sent"):
            counts[message["chat_id"]] = counts.get(message["chat_id"], 0) + 1
        return counts

    async def __aenter__(self) -> "FakeTelegramProcess":
        """Start the fake and wait until it answers."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_telegram", "--port", str(self.port),
             "--max-per-second", str(self.max_per_second), "--per-chat-seconds", str(self.per_chat_seconds)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.stats()
                return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake Telegram server did not start") from None
                await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: Any) -> None:
        """Stop the fake."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


async def measure(chats: int = 1000, database_url: Optional[str] = None, max_per_second: int = 30) -> DeliveryRun:
    """Seed chats messages, deliver them through the courier against the limited fake, and measure.

    database_url: an empty database to use (kept afterwards, for inspection); default a throwaway SQLite file.
    """
    from bot.db import make_engine, make_session_factory
    from bot.outbox import OutboxRepository
    from bot.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'app.db'}"
        await asyncio.to_thread(seed, url, chats)
        async with FakeTelegramProcess(max_per_second=max_per_second, per_chat_seconds=1.0) as fake:
            settings = load_settings(
                {"DATA_DIR": tmp, "DATABASE_URL": url, "TELEGRAM_BOT_TOKEN": fake.token,
                 "TELEGRAM_API_BASE_URL": fake.base_url, "TELEGRAM_MAX_PER_SECOND": str(max_per_second),
                 "DELIVERY_POLL_SECONDS": "0.2"}
            )
            # As the delivery process does once started (bot.delivery.serve).
            gc.collect()
            gc.freeze()
            started = time.monotonic()
            courier = await run_courier(url, settings)
            seconds = time.monotonic() - started
            engine = make_engine(url)
            try:
                statuses = OutboxRepository(make_session_factory(engine)).counts()
            finally:
                engine.dispose()
            per_chat = await fake.per_chat()
            received = [per_chat.get(FIRST_CHAT + n, 0) for n in range(chats)]
            stats = await fake.stats()
            return DeliveryRun(
                chats=chats, seconds=seconds, max_per_second=max_per_second, statuses=statuses,
                too_many_requests=stats["too_many_requests"],
                duplicates=sum(max(0, count - 1) for count in received),
                missing=sum(1 for count in received if count == 0),
                courier=courier, fake_stats=stats,
            )


def main(argv: Optional[list] = None) -> None:
    """Command line: run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--database-url", default=None, help="default: a throwaway SQLite database")
    args = parser.parse_args(argv)
    run = asyncio.run(measure(args.chats, args.database_url))
    print(
        f"delivery: {run.chats} messages to {run.chats} chats in {run.seconds:.1f} s "
        f"(limit's minimum {run.minimum_seconds:.1f} s at {run.max_per_second:g}/s): "
        f"{run.fraction_of_limit:.1%} of the limit's throughput (target >= 90 %); "
        f"429s answered {run.too_many_requests}, duplicates {run.duplicates}, missing {run.missing}, "
        f"statuses {run.statuses}"
    )


if __name__ == "__main__":
    main()
