"""The app database: migrations and ChatRepository, on SQLite and on the local PostgreSQL server."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from bot.db import alembic_config, load_models, make_engine, make_session_factory, migrate
from bot.models import Champion, ChatMessage
from bot.repository import ChatRepository

ROOT = Path(__file__).resolve().parent.parent
@pytest.fixture
def repo(engine):
    """A ChatRepository on the migrated database."""
    return ChatRepository(make_session_factory(engine))


# --- migrations ---------------------------------------------------------------------------------


def test_migrations_create_tables_and_match_models(database_url):
    """upgrade head creates both tables, matching bot.models exactly; it can run again harmlessly."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    migrate(database_url)
    migrate(database_url)  # already at head: nothing to do
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert {"champions", "chat_messages", "alembic_version"} <= tables
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, load_models()) == []
    finally:
        engine.dispose()


def test_migrations_go_down_and_up_again(database_url):
    """downgrade base removes the tables; upgrade head brings them back."""
    from alembic import command

    migrate(database_url)
    command.downgrade(alembic_config(database_url), "base")
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert not {"champions", "chat_messages"} & set(inspect(connection).get_table_names())
        migrate(database_url)
        with engine.connect() as connection:
            assert {"champions", "chat_messages"} <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_alembic_command_line_reads_database_url(tmp_path):
    """`alembic upgrade head` from the repository root migrates the DATABASE_URL database."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = dict(os.environ, DATABASE_URL=url, SQLALCHEMY_SILENCE_UBER_WARNING="1")
    result = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert "chat_messages" in inspect(connection).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_uses_wal_and_foreign_keys(tmp_path):
    """Every SQLite connection has write-ahead logging and foreign keys switched on."""
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


# --- repository ---------------------------------------------------------------------------------


def test_get_or_create_champion_is_idempotent(repo):
    """The same channel and id always give the same champion; another channel gives another."""
    first = repo.get_or_create_champion("web", "abc-123")
    again = repo.get_or_create_champion("web", "abc-123")
    other = repo.get_or_create_champion("telegram", "abc-123")
    assert first.id == again.id and other.id != first.id
    assert first.created_at is not None and first.display_name is None
    assert repo.find_champion("web", "nobody") is None
    named = repo.get_or_create_champion("telegram", "42", display_name="Sam")
    assert repo.find_champion("telegram", "42").display_name == "Sam" and named.id


def test_champion_channel_and_id_are_unique_in_the_database(engine):
    """The database itself refuses a second champion with the same channel and external id."""
    sessions = make_session_factory(engine)
    with sessions() as session:
        session.add(Champion(channel="web", external_id="dup"))
        session.commit()
    with sessions() as session:
        session.add(Champion(channel="web", external_id="dup"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_messages_round_trip_in_order(repo):
    """Messages come back oldest first, with buttons, payloads and unusual text intact."""
    champion = repo.get_or_create_champion("web", "rt")
    buttons = [{"title": "Tell me more", "payload": "/tell_me_more"}, {"title": "Étapes 🙂", "payload": "/x"}]
    texts = ["hello", "مرحبا 😀 什么", "'; DROP TABLE champions; --", "<script>alert(1)</script>", "a\nb"]
    for body in texts:
        repo.add_message(champion, "in", body)
    repo.add_message(champion.id, "out", "reply", buttons=buttons)
    repo.add_message(champion, "in", "Tell me more", payload="/tell_me_more")
    stored = repo.history(champion)
    assert [m.text for m in stored] == texts + ["reply", "Tell me more"]
    assert [m.direction for m in stored] == ["in"] * 5 + ["out", "in"]
    assert stored[5].buttons == buttons and stored[0].buttons is None
    assert stored[6].payload == "/tell_me_more" and stored[0].payload is None


def test_history_limit_keeps_the_latest(repo):
    """history(limit=n) gives the last n messages, still oldest first."""
    champion = repo.get_or_create_champion("web", "lim")
    for number in range(10):
        repo.add_message(champion, "in", f"m{number}")
    assert [m.text for m in repo.history(champion, limit=3)] == ["m7", "m8", "m9"]
    assert repo.history(champion, limit=0) == []
    assert repo.history(repo.get_or_create_champion("web", "empty")) == []


def test_histories_are_kept_apart(repo):
    """One champion's messages never show in another's history."""
    alice = repo.get_or_create_champion("web", "alice")
    bob = repo.get_or_create_champion("web", "bob")
    repo.add_message(alice, "in", "from alice")
    assert repo.history(bob) == []


def test_add_message_marks_champion_active(repo):
    """Storing a message moves the champion's last_active_at forward."""
    champion = repo.get_or_create_champion("web", "active")
    before = repo.find_champion("web", "active").last_active_at
    message = repo.add_message(champion, "in", "hi")
    after = repo.find_champion("web", "active").last_active_at
    assert after >= before and message.id is not None


def test_bad_direction_is_refused(repo, engine):
    """Only "in" and "out" are directions: refused by the repository and by the database."""
    champion = repo.get_or_create_champion("web", "dir")
    with pytest.raises(ValueError):
        repo.add_message(champion, "sideways", "x")
    with make_session_factory(engine)() as session:
        session.add(ChatMessage(champion_id=champion.id, direction="up", text="x"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_message_needs_an_existing_champion(engine):
    """The foreign key holds on both databases (SQLite's is switched on per connection)."""
    with make_session_factory(engine)() as session:
        session.add(ChatMessage(champion_id=999_999, direction="in", text="orphan"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_deleting_a_champion_deletes_their_messages(repo, engine):
    """Removing a champion (e.g. on request) removes their transcript too."""
    champion = repo.get_or_create_champion("web", "forget-me")
    repo.add_message(champion, "in", "secret")
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM champions WHERE id = :id"), {"id": champion.id})
    with make_session_factory(engine)() as session:
        left = session.execute(select(ChatMessage).where(ChatMessage.champion_id == champion.id)).all()
    assert left == []
