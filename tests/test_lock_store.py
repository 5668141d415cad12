"""The production lock store (components/lock_store.py) against the real Redis server.

Several processes, standing in for several Rasa servers, take one conversation's lock at once.
Each turn reads a counter, waits a moment and writes it back, as Rasa reads and saves a tracker:
if two turns ever ran side by side, one of them would be lost.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid

import pytest

from tests.conftest import _redis_connection

PROCESSES = 4
TURNS_EACH = 15


@pytest.fixture()
def redis_client():
    """The local Redis server (skipped without one, except in CI)."""
    client = _redis_connection()
    if client is None:
        if os.environ.get("CI"):
            pytest.fail("the lock store tests need Redis at 127.0.0.1:6379")
        pytest.skip("no Redis server")
    prefix = f"locktest{uuid.uuid4().hex[:10]}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def _store(prefix: str):
    """Our lock store, configured as endpoints.production.yml configures it."""
    from rasa.utils.endpoints import EndpointConfig

    from components.lock_store import AtomicRedisLockStore

    config = EndpointConfig(url="127.0.0.1", port=6379, db=1, password="", key_prefix=prefix,
                            type="components.lock_store.AtomicRedisLockStore")
    return AtomicRedisLockStore(endpoint_config=config)


def _take_turns(prefix: str, conversation: str, start: multiprocessing.Event) -> None:
    """One 'server': take the conversation's lock TURNS_EACH times, each time doing a slow read-change-write."""
    store = _store(prefix)
    counter_key, inside_key = f"{prefix}:count", f"{prefix}:inside"

    async def turns() -> None:
        for _ in range(TURNS_EACH):
            async with store.lock(conversation, wait_time_in_seconds=0.005):
                if not store.red.set(inside_key, "1", nx=True):
                    store.red.incr(f"{prefix}:overlaps")
                count = int(store.red.get(counter_key) or 0)
                await asyncio.sleep(0.002)
                store.red.set(counter_key, count + 1)
                store.red.delete(inside_key)

    start.wait(10)
    asyncio.run(turns())


def test_turns_of_one_conversation_on_several_servers_never_overlap(redis_client):
    """Turns from four processes at once are taken one at a time: none overlaps, none is lost."""
    client, prefix = redis_client
    context = multiprocessing.get_context("fork")
    start = context.Event()
    workers = [context.Process(target=_take_turns, args=(prefix, "web-together", start)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    for worker in workers:  # a stuck turn (Rasa's own store can leave one waiting for ever) fails, not hangs
        if worker.is_alive():
            worker.terminate()
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert int(client.get(f"{prefix}:overlaps") or 0) == 0
    assert int(client.get(f"{prefix}:count")) == PROCESSES * TURNS_EACH
    assert client.get(f"{prefix}:lock:web-together") is None, "the lock is removed once no one waits"


def test_tickets_are_issued_in_order_and_the_lock_goes_when_done(redis_client):
    """One server's tickets count up while earlier ones are held; finishing them all removes the lock."""
    client, prefix = redis_client
    store = _store(prefix)
    tickets = [store.issue_ticket("web-one") for _ in range(3)]
    assert tickets == [0, 1, 2]
    assert store.get_lock("web-one").now_serving == 0
    for ticket in tickets:
        store.cleanup("web-one", ticket)
    assert store.get_lock("web-one") is None
    assert not list(client.scan_iter(f"{prefix}*mutex*")), "no mutex is left behind"


def test_a_held_mutex_makes_the_ticket_wait_not_collide(redis_client):
    """While another server holds the conversation's mutex, issuing a ticket waits for it rather than racing."""
    _, prefix = redis_client
    store, other = _store(prefix), _store(prefix)
    mutex = other.red.lock(f"{other.key_prefix}web-wait:mutex", timeout=0.3)
    assert mutex.acquire(blocking=False)
    assert store.issue_ticket("web-wait") == 0  # waited for the mutex to expire, then went ahead
    assert other.issue_ticket("web-wait") == 1
