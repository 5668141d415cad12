"""Latency benchmark: start-to-ready time, memory, and REST-channel latency with 1 and 20 users."""
from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import List

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.nlu_accuracy import load_examples  # noqa: E402
from bench.stack import running_stack  # noqa: E402

DURATION_SECONDS = 60
MEAN_GAP_SECONDS = 2.0


async def user(session: aiohttp.ClientSession, url: str, uid: int, texts: List[str],
               stop_at: float, latencies: List[float], errors: List[str]) -> None:
    """One simulated champion: a message every 2 s on average (exponential gaps)."""
    rng = random.Random(uid)
    await asyncio.sleep(rng.uniform(0, MEAN_GAP_SECONDS))
    while time.monotonic() < stop_at:
        text = rng.choice(texts)
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


async def load(rasa_url: str, users: int, texts: List[str]) -> None:
    """Run the simulated users for DURATION_SECONDS and print p50/p95/p99 and throughput."""
    url = f"{rasa_url}/webhooks/rest/webhook"
    latencies: List[float] = []
    errors: List[str] = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(user(session, url, i, texts, started + DURATION_SECONDS, latencies, errors)
                               for i in range(users)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    print(f"{users:>2} users: {len(latencies)} messages in {elapsed:.0f}s "
          f"({len(latencies) / elapsed:.1f} msg/s), p50 {q[49]:.0f} ms, p95 {q[94]:.0f} ms, "
          f"p99 {q[98]:.0f} ms, max {max(latencies):.0f} ms, errors {len(errors)}")


def main() -> None:
    """Start the stack, report ready time and memory, then load it."""
    texts = [t for t, _ in load_examples()]
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
