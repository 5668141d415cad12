"""Latency benchmark: start-to-ready time, memory, and REST-channel latency with 1 and 20 users.

`--production` runs issue 7's load test instead: the production set-up (two Rasa servers on
PostgreSQL and Redis, bench/stack.py) with --users simulated champions (default 50) for
--duration seconds (default 600); it prints the error rate, p50/p95/p99 and throughput. Each
conversation's messages go to one Rasa server, chosen as the web chat and Telegram choose it
(bot/rasa_client.py); `--route turn` sends each message to the next server in turn instead, as a
load balancer that knows nothing of conversations would.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import uuid
import statistics
import sys
import time
from pathlib import Path
from typing import List

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.nlu_accuracy import load_examples  # noqa: E402
from bench.stack import running_stack  # noqa: E402
from bot.rasa_client import RasaClient  # noqa: E402

DURATION_SECONDS = 60
MEAN_GAP_SECONDS = 2.0


async def user(session: aiohttp.ClientSession, urls, uid: int, texts: List[str],
               stop_at: float, latencies: List[float], errors: List[str]) -> None:
    """One simulated champion: a message every 2 s on average (exponential gaps), to the next of urls."""
    rng = random.Random(uid)
    await asyncio.sleep(rng.uniform(0, MEAN_GAP_SECONDS))
    while time.monotonic() < stop_at:
        text = rng.choice(texts)
        url = next(urls)
        start = time.perf_counter()
        try:
            async with session.post(url, json={"sender": f"bench-{uid}", "message": text}) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(str(resp.status))
        except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it doesn't stop
            errors.append(type(exc).__name__)
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(rng.expovariate(1 / MEAN_GAP_SECONDS))


async def load(rasa_urls, users: int, texts: List[str], duration: float = DURATION_SECONDS,
               route: str = "conversation") -> None:
    """Run the simulated users for duration seconds and print p50/p95/p99, throughput and errors.

    route "conversation": each user's messages go to the server the web chat would choose for it;
    "turn": every message to the next server in turn, whoever sent it."""
    if isinstance(rasa_urls, str):
        rasa_urls = [rasa_urls]
    webhooks = [f"{u}/webhooks/rest/webhook" for u in rasa_urls]
    shared_turns = itertools.cycle(webhooks)

    def urls_of(uid: int):
        """The webhook addresses user uid sends to, one per message."""
        if route == "turn":
            return shared_turns
        return itertools.repeat(RasaClient(webhooks).server_for(f"bench-{uid}"))

    latencies: List[float] = []
    errors: List[str] = []
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=max(100, users * 2))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(user(session, urls_of(i), i, texts, started + duration, latencies, errors)
                               for i in range(users)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    routed = f", routed by {route}" if len(rasa_urls) > 1 else ""
    print(f"{users:>2} users on {len(rasa_urls)} Rasa server(s){routed}: {len(latencies)} messages in {elapsed:.0f}s "
          f"({len(latencies) / elapsed:.1f} msg/s), p50 {q[49]:.0f} ms, p95 {q[94]:.0f} ms, "
          f"p99 {q[98]:.0f} ms, max {max(latencies):.0f} ms, errors {len(errors)} "
          f"({100 * len(errors) / max(1, len(latencies)):.2f} %)")


@contextlib.contextmanager
def production_databases():
    """Throwaway app and tracker databases on the local PostgreSQL server and a Redis key prefix."""
    import psycopg2

    admin = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    admin.autocommit = True
    suffix = uuid.uuid4().hex[:10]
    app_db, tracker_db = f"bench_app_{suffix}", f"bench_tracker_{suffix}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{app_db}"')
    try:
        yield {
            "DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{app_db}",
            "TRACKER_DB_HOST": "127.0.0.1", "TRACKER_DB_PORT": "5432", "TRACKER_DB_NAME": tracker_db,
            "TRACKER_DB_USER": "postgres", "TRACKER_DB_PASSWORD": "", "TRACKER_DB_LOGIN_DB": "postgres",
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379", "REDIS_DB": "1", "REDIS_PASSWORD": "",
            "REDIS_KEY_PREFIX": f"bench{suffix}",
        }
    finally:
        with admin.cursor() as cursor:
            for name in (app_db, tracker_db):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> None:
    """Start the stack, report ready time and memory, then load it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--production", action="store_true", help="two Rasa servers on PostgreSQL and Redis")
    parser.add_argument("--users", type=int, default=50, help="simulated users (with --production)")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (with --production)")
    parser.add_argument("--route", choices=("conversation", "turn"), default="conversation",
                        help="with --production: each conversation to one server (as our front ends), or every message in turn")
    args = parser.parse_args()
    texts = [t for t, _ in load_examples()]
    if args.production:
        with production_databases() as production, running_stack(
            with_web=False, with_delivery=False, rasa_servers=2, production=production, timeout=600
        ) as stack:
            print(f"production set-up ready in {stack.ready_seconds:.1f}s")
            asyncio.run(load(stack.rasa_urls, args.users, texts, args.duration, args.route))
            for name, mib in stack.rss_mib().items():
                print(f"resident memory after load, {name}: {mib:.0f} MiB")
        return
    with running_stack(with_web=True) as stack:
        print(f"start to ready (Rasa model loaded, action server and web chat up): "
              f"{stack.ready_seconds:.1f}s")
        for name, mib in stack.rss_mib().items():
            print(f"resident memory after start, {name}: {mib:.0f} MiB")
        for users in (1, 20):
            asyncio.run(load(stack.rasa_url, users, texts))
        for name, mib in stack.rss_mib().items():
            print(f"resident memory after load, {name}: {mib:.0f} MiB")


if __name__ == "__main__":
    main()
