"""The production set-up: two Rasa servers sharing a PostgreSQL tracker store and a Redis lock store.

Runs against the real PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) servers of this
machine (skipped without them, except in CI, where missing servers fail the run).
"""
from __future__ import annotations

import json
import os
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List

import pytest

from tests.conftest import LIVE_STACK_TIMEOUT, MODEL, PG_URL, _log_tails, _pg_admin_connection, _redis_connection

# Messages with a reply we can recognise, whichever server answers.
TURNS = [
    ("hello", "co-production companion"),
    ("what is co-production?", "co-production"),
    ("what does PCN mean", "Primary Care Network"),
    ("thanks", ""),
    ("what does ICB mean", "Integrated Care Board"),
    ("what are the four levels of co-production", "co-design"),
]


@pytest.fixture(scope="module")
def production_stack(tmp_path_factory):
    """Two Rasa servers, the action server and the web chat on PostgreSQL and Redis."""
    if not MODEL.exists():
        pytest.skip("train the model first (scripts/train.sh)")
    admin, redis_client = _pg_admin_connection(), _redis_connection()
    if admin is None or redis_client is None:
        if os.environ.get("CI"):
            pytest.fail("the production tests need PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379")
        pytest.skip("no PostgreSQL or Redis server")
    from bench.stack import running_stack

    suffix = uuid.uuid4().hex[:10]
    app_db, tracker_db, prefix = f"coprod_app_{suffix}", f"coprod_tracker_{suffix}", f"companiontest{suffix}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{app_db}"')
    production = {
        "DATABASE_URL": PG_URL + app_db,
        "TRACKER_DB_HOST": "127.0.0.1", "TRACKER_DB_PORT": "5432", "TRACKER_DB_NAME": tracker_db,
        "TRACKER_DB_USER": "postgres", "TRACKER_DB_PASSWORD": "", "TRACKER_DB_LOGIN_DB": "postgres",
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379", "REDIS_DB": "1", "REDIS_PASSWORD": "",
        "REDIS_KEY_PREFIX": prefix,
    }
    data_dir = tmp_path_factory.mktemp("production")
    stack_cm = running_stack(data_dir=data_dir, timeout=LIVE_STACK_TIMEOUT * 1.5, with_delivery=False,
                             rasa_servers=2, production=production)
    try:
        try:
            stack = stack_cm.__enter__()
        except (TimeoutError, OSError) as exc:
            pytest.fail(f"the production stack did not start: {exc}\n{_log_tails(data_dir)}")
        try:
            yield stack, tracker_db, prefix
        finally:
            stack_cm.__exit__(None, None, None)
    finally:
        with admin.cursor() as cursor:
            for name in (app_db, tracker_db):
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)


def _post(url: str, sender: str, message: str) -> List[Dict[str, Any]]:
    """Send one message to a Rasa server's REST channel; its replies."""
    request = urllib.request.Request(
        f"{url}/webhooks/rest/webhook", data=json.dumps({"sender": sender, "message": message}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return json.loads(response.read())


def _events(tracker_db: str, sender: str) -> List[Dict[str, Any]]:
    """The events Rasa stored for sender, oldest first, read from the tracker database directly."""
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=tracker_db) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT type_name, action_name, data FROM events WHERE sender_id = %s ORDER BY id", (sender,))
            return [{"type": t, "action": a, **json.loads(d)} for t, a, d in cursor.fetchall()]


def _turns(events: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """The events split at each user message (each list starts with the user event)."""
    turns: List[List[Dict[str, Any]]] = []
    for event in events:
        if event["type"] == "user":
            turns.append([event])
        elif turns:
            turns[-1].append(event)
    return turns


def test_one_conversation_alternating_between_two_servers(production_stack):
    """Turns sent to the two servers in turn are each answered, in order, and every event is kept."""
    stack, tracker_db, _ = production_stack
    sender = f"web-alternate-{uuid.uuid4().hex[:8]}"
    for number, (message, expected) in enumerate(TURNS * 2):
        replies = _post(stack.rasa_urls[number % 2], sender, message)
        text = " ".join(r.get("text") or "" for r in replies)
        assert replies and expected.lower() in text.lower(), (number, message, replies)
    turns = _turns(_events(tracker_db, sender))
    assert [turn[0]["text"] for turn in turns] == [message for message, _ in TURNS * 2]
    for turn in turns:
        assert any(e["type"] == "bot" for e in turn), turn[0]["text"]
        assert turn[-1]["type"] == "action" and turn[-1]["action"] == "action_listen"


def test_simultaneous_messages_to_both_servers_are_taken_one_at_a_time(production_stack):
    """Messages of one conversation arriving at both servers at once: the Redis lock keeps every turn whole."""
    stack, tracker_db, _ = production_stack
    messages = [f"what does {acronym} mean" for acronym in ("PCN", "ICB", "PPG", "CCG", "ICS", "PPI", "VCS", "QI")]
    for _ in range(3):  # a new conversation each time: its first turns are where the servers race
        sender = f"web-together-{uuid.uuid4().hex[:8]}"
        with ThreadPoolExecutor(max_workers=len(messages)) as pool:
            answers = list(pool.map(lambda i: _post(stack.rasa_urls[i % 2], sender, messages[i]), range(len(messages))))
        assert all(answers), answers
        turns = _turns(_events(tracker_db, sender))
        assert sorted(turn[0]["text"] for turn in turns) == sorted(messages), "every turn is kept"
        for turn in turns:
            kinds = [e["type"] for e in turn]
            assert kinds.count("user") == 1 and "bot" in kinds, kinds
            assert turn[-1]["action"] == "action_listen", kinds


def test_web_chat_takes_the_servers_in_turn(production_stack):
    """The web chat, given both servers in RASA_URL, answers every message."""
    stack, _, _ = production_stack
    sender = uuid.uuid4().hex[:16]
    for message, expected in TURNS[:4]:
        request = urllib.request.Request(
            f"{stack.web_url}/api/messages", data=json.dumps({"sender_id": sender, "text": message}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert body["accepted"] and "reason" not in body, body
        assert expected.lower() in " ".join(m["text"] for m in body["messages"]).lower()


def test_redis_holds_the_conversation_locks(production_stack):
    """The lock store really is Redis: Rasa writes the conversation's lock under our prefix (seen by MONITOR)."""
    import threading

    import redis

    stack, _, prefix = production_stack
    sender = f"web-lock-{uuid.uuid4().hex[:8]}"
    commands: List[str] = []
    ready, stop = threading.Event(), threading.Event()

    def watch() -> None:
        with redis.Redis(host="127.0.0.1", port=6379, db=1).monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                commands.append(command["command"])
                if stop.is_set() and sender in command["command"]:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ready.wait(5)
    _post(stack.rasa_urls[0], sender, "what is co-production?")
    stop.set()
    _post(stack.rasa_urls[1], sender, "thanks")
    watcher.join(10)
    assert any(prefix in c and sender in c for c in commands), commands[-20:]
