"""Shared pytest fixtures: a throwaway app database, a fake Rasa server and the real running stack."""
from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # so `bot`, `actions` and `bench` import however pytest is started
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

MODEL = ROOT / "models" / "coproduction.tar.gz"
# How long the live stack may take to come up (Rasa loading a model on a busy 2-core machine).
LIVE_STACK_TIMEOUT = float(os.environ.get("LIVE_STACK_TIMEOUT", "180"))
# An address where nothing listens: "Rasa is down".
UNREACHABLE_URL = "http://127.0.0.1:9"
# Debian's Chromium for the browser tests, and the flags that keep it off the network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest_asyncio.fixture
async def browser():
    """Debian's Chromium driven by Playwright (the test is skipped where it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (scripts/browser-deps.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def app_env(tmp_path: Path) -> Dict[str, str]:
    """Environment for bot.settings pointing at a fresh DATA_DIR and SQLite database in tmp_path."""
    data_dir = tmp_path / "data"
    return {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'app.db'}",
        "RASA_URL": UNREACHABLE_URL,
        "RASA_TIMEOUT_SECONDS": "5",
    }


@pytest.fixture
def app_settings(app_env: Dict[str, str]):
    """Settings for a web chat with its own temporary SQLite database (Rasa unreachable)."""
    from bot.settings import load_settings

    return load_settings(app_env)


@dataclass
class FakeRasa:
    """A stand-in for Rasa's REST channel that records requests and answers from a script."""

    url: str = ""
    requests: List[Dict[str, Any]] = field(default_factory=list)
    # "ok": canned replies; "error": HTTP 500; "garbage": not JSON; "empty": [];
    # "slow": answers after `delay` seconds; "odd": a mix of malformed items.
    mode: str = "ok"
    delay: float = 0.0
    # The address each request was sent to (its Host header), in order.
    hosts: List[str] = field(default_factory=list)

    def replies(self, message: str) -> List[Dict[str, Any]]:
        """What Rasa would send back for message in the normal mode."""
        if message.startswith("/"):
            return [{"recipient_id": "x", "text": f"You chose {message}"}]
        return [
            {"recipient_id": "x", "text": f"You said: {message}"},
            {
                "recipient_id": "x",
                "text": "Anything else?",
                "buttons": [
                    {"title": "Tell me more", "payload": "/tell_me_more"},
                    {"title": "The five steps", "payload": "/ask_five_steps"},
                ],
            },
        ]


@pytest_asyncio.fixture
async def fake_rasa():
    """A running FakeRasa on a free local port."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    fake = FakeRasa()

    async def webhook(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        fake.requests.append(body)
        fake.hosts.append(request.host)
        if fake.mode == "error":
            return web.Response(status=500, text="boom")
        if fake.mode == "garbage":
            return web.Response(status=200, text="<html>not json</html>", content_type="text/html")
        if fake.mode == "empty":
            return web.json_response([])
        if fake.mode == "slow":
            await asyncio.sleep(fake.delay)
        if fake.mode == "odd":
            return web.json_response(
                [
                    "not a dict",
                    {"image": "https://example.invalid/x.png"},
                    {"text": 42},
                    {"text": "Kept", "buttons": ["junk", {"title": "No payload"}, {"title": "Ok", "payload": "/ok"}]},
                ]
            )
        return web.json_response(fake.replies(body.get("message", "")))

    app = web.Application()
    app.router.add_post("/webhooks/rest/webhook", webhook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


def _log_tails(data_dir: Path, lines: int = 30) -> str:
    """The last lines of each process log of a live stack, for a failure message."""
    parts = []
    for log in sorted(data_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name}\n" + "\n".join(tail))
    return "\n".join(parts)


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory):
    """Rasa, the action server and the web chat on free local ports (skipped without a trained model)."""
    if not MODEL.exists():
        pytest.skip(f"{MODEL.relative_to(ROOT)} is missing: train the model first (scripts/train.sh)")
    from bench.stack import running_stack

    data_dir = tmp_path_factory.mktemp("live-stack")
    stack_cm = running_stack(data_dir=data_dir, timeout=LIVE_STACK_TIMEOUT)
    try:
        stack = stack_cm.__enter__()
    except (TimeoutError, OSError) as exc:
        pytest.fail(f"the live stack did not start: {exc}\n{_log_tails(data_dir)}")
    try:
        yield stack
    finally:
        stack_cm.__exit__(None, None, None)


# --- the app database on SQLite and on the real PostgreSQL server --------------------------------

# The server that PostgreSQL tests create their throwaway database on (trust auth).
PG_ADMIN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL = os.environ.get("TEST_POSTGRES_URL_PREFIX", "postgresql+psycopg2://postgres@127.0.0.1:5432/")


def _pg_admin_connection():
    """An autocommit connection to the PostgreSQL server, or None if there is none."""
    import psycopg2

    try:
        connection = psycopg2.connect(PG_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError:
        return None
    connection.autocommit = True
    return connection


def _redis_connection():
    """A client for the local Redis server's db 1 (the one the tests use), or None if there is none."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=1, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL database for this test run, dropped afterwards (CI must have the server)."""
    import uuid

    admin = _pg_admin_connection()
    if admin is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server at 127.0.0.1:5432: the production tests need it")
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    name = f"coprod_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each kind (PostgreSQL tables are removed again after each test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'app.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    from alembic import command

    from bot.db import alembic_config

    command.downgrade(alembic_config(url), "base")


@pytest.fixture
def engine(database_url):
    """A migrated database's engine."""
    from bot.db import make_engine, migrate

    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# --- Rasa's tracker store beside the app database ----------------------------------------------


@pytest.fixture(scope="session")
def pg_tracker_url():
    """A throwaway PostgreSQL database for Rasa's tracker store (dropped at the end)."""
    from tests.champion_data import create_pg_database, drop_pg_database

    name = create_pg_database()
    if name is None:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server at 127.0.0.1:5432")
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    drop_pg_database(name)


@pytest.fixture
def tracker_url(database_url, tmp_path, request):
    """Rasa's tracker store (a real rasa SQLTrackerStore's events table, empty) of the same kind as the app database."""
    from sqlalchemy import text

    from tests.champion_data import tracker_store

    url = (f"sqlite:///{tmp_path / 'rasa_tracker.db'}" if database_url.startswith("sqlite")
           else request.getfixturevalue("pg_tracker_url"))
    store = tracker_store(url)
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM events"))
    store.engine.dispose()
    yield url
