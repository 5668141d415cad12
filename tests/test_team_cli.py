"""The engagement team's command-line tool, run as `.venv/bin/python -m bot.team ...` in a subprocess."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.broadcasts import start_due_broadcasts
from bot.db import make_engine, make_session_factory, migrate
from bot.delivery_models import OutboundMessage
from bot.groups import TeamInputError
from bot.repository import ChatRepository
from bot.team import parse_when
from bot.team_models import Broadcast

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
TOKEN = "s3cret-team-token"
LONDON = ZoneInfo("Europe/London")


@dataclass
class Result:
    """What one run of the tool did."""

    code: int
    out: str
    err: str


def run_tool(
    args: List[str], env: Dict[str, str], terminal: Sequence[Tuple[str, str]] = (), timeout: float = 60
) -> Result:
    """Run the tool. With terminal, stdin is a real pseudo-terminal: for each (prompt, reply) the
    reply is typed once prompt has appeared (the way a person answers; typing ahead would be
    flushed by getpass)."""
    command = [PYTHON, "-m", "bot.team", *args]
    if not terminal:
        done = subprocess.run(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        return Result(done.returncode, done.stdout, done.stderr)
    master, slave = pty.openpty()
    # A new session: no controlling terminal, so nothing can wait on the real one.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    captured = {"out": bytearray(), "err": bytearray()}
    changed = threading.Condition()

    def pump(stream, key: str) -> None:
        """Collect what the tool writes to one stream."""
        for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
            with changed:
                captured[key] += chunk
                changed.notify_all()
        with changed:  # closed: the tool has finished
            changed.notify_all()

    readers = [threading.Thread(target=pump, args=(process.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(process.stderr, "err"), daemon=True)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    answered: Dict[str, int] = {}
    try:
        for prompt, reply in terminal:
            wanted = answered.get(prompt, 0) + 1

            def shown() -> bool:
                """True once the prompt has appeared (again)."""
                return (bytes(captured["out"]) + bytes(captured["err"])).count(prompt.encode()) >= wanted

            with changed:
                changed.wait_for(lambda: shown() or process.poll() is not None,
                                 timeout=max(0.1, deadline - time.monotonic()))
                if not shown():
                    break
            os.write(master, reply.encode("utf-8"))
            answered[prompt] = wanted
        process.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(5)
        os.close(master)
    return Result(process.returncode, captured["out"].decode(), captured["err"].decode())


@pytest.fixture
def db_url(tmp_path) -> str:
    """A migrated SQLite database for the tool."""
    url = f"sqlite:///{tmp_path / 'data' / 'app.db'}"
    migrate(url)
    return url


def tool_env(url: str, **extra: Optional[str]) -> Dict[str, str]:
    """The environment the tool runs in: our database, the team token configured and presented."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEAM_TOKEN", "COMPANION_TEAM_TOKEN", "DATABASE_URL")}
    env.update(DATABASE_URL=url, TEAM_TOKEN=TOKEN, COMPANION_TEAM_TOKEN=TOKEN, SQLALCHEMY_SILENCE_UBER_WARNING="1")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture
def env(db_url) -> Dict[str, str]:
    """The tool's environment on the SQLite database."""
    return tool_env(db_url)


def seed(url: str) -> Dict[str, int]:
    """Four champions with private messages: one said stop, one blocked the bot."""
    engine = make_engine(url)
    try:
        chats = ChatRepository(make_session_factory(engine))
        ids = {}
        for name, channel, external in [("ana", "telegram", "111111"), ("ben", "web", "uuid-ben"),
                                        ("cat", "telegram", "333333"), ("dev", "telegram", "444444")]:
            champion = chats.get_or_create_champion(channel, external)
            chats.add_message(champion, "in", f"my private worry about {name}")
            ids[name] = champion.id
        chats.set_opted_out(ids["cat"], True)
        chats.set_reachable(ids["dev"], False, "Forbidden: bot was blocked by the user")
        return ids
    finally:
        engine.dispose()


def broadcasts(url: str) -> List[Broadcast]:
    """Every stored broadcast, oldest first."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.execute(select(Broadcast).order_by(Broadcast.id)).scalars())
    finally:
        engine.dispose()


# --- help and credentials -----------------------------------------------------------------------


def test_help_explains_every_command_without_a_token(tmp_path):
    """--help needs no token or database and names the commands in plain words."""
    env = tool_env(f"sqlite:///{tmp_path / 'none.db'}", TEAM_TOKEN=None, COMPANION_TEAM_TOKEN=None)
    top = run_tool(["--help"], env)
    assert top.code == 0
    for words in ("broadcast", "group", "champion", "COMPANION_TEAM_TOKEN", "TEAM_TOKEN", "--token-file"):
        assert words in top.out
    send = run_tool(["broadcast", "send", "--help"], env)
    assert send.code == 0 and "Send to N champions? [y/N]" in send.out and "day before month" in send.out
    assert not (tmp_path / "none.db").exists()


def test_refuses_when_the_team_token_is_not_configured(tmp_path):
    """No TEAM_TOKEN in the configuration: refused, non-zero, and the database is not touched."""
    url = f"sqlite:///{tmp_path / 'untouched.db'}"
    result = run_tool(["champion", "list"], tool_env(url, TEAM_TOKEN=None))
    assert result.code == 3 and "TEAM_TOKEN is not set" in result.err and result.out == ""
    assert not (tmp_path / "untouched.db").exists()


def test_wrong_missing_and_file_tokens(db_url, tmp_path):
    """A wrong token is refused; no token and no terminal is refused; a token file works."""
    wrong = run_tool(["group", "create", "cohort", "X"], tool_env(db_url, COMPANION_TEAM_TOKEN="guess"))
    assert wrong.code == 3 and "not right" in wrong.err
    missing = run_tool(["group", "list"], tool_env(db_url, COMPANION_TEAM_TOKEN=None))
    assert missing.code == 3 and "COMPANION_TEAM_TOKEN" in missing.err and "--token-file" in missing.err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    from_file = run_tool(["group", "create", "cohort", "X", "--token-file", str(token_file)],
                         tool_env(db_url, COMPANION_TEAM_TOKEN=None))
    assert from_file.code == 0, from_file.err
    gone = run_tool(["--token-file", str(tmp_path / "nope"), "group", "list"], tool_env(db_url, COMPANION_TEAM_TOKEN=None))
    assert gone.code == 2 and "Cannot read the token file" in gone.err
    listed = run_tool(["group", "list"], tool_env(db_url))
    assert "cohort  X" in listed.out


def test_token_typed_at_the_terminal_then_confirmed(db_url):
    """At a terminal with no token set, the tool asks for it (hidden), then asks y/N before sending."""
    seed(db_url)
    result = run_tool(["broadcast", "send", "--to", "all", "--text", "Hello all"],
                      tool_env(db_url, COMPANION_TEAM_TOKEN=None), terminal=[("Team token:", TOKEN + "\n"), ("[y/N]", "y\n")])
    assert result.code == 0, result.err
    assert "Team token:" in result.err and TOKEN not in result.out + result.err
    assert "Send to 2 champions? [y/N]" in result.out
    assert [b.text for b in broadcasts(db_url)] == ["Hello all"]


# --- groups and champions -----------------------------------------------------------------------


def test_groups_end_to_end(db_url, env):
    """Create (any capitals), add by id or chat id, list, members, remove; bad kind and unknown group refused."""
    ids = seed(db_url)
    assert run_tool(["group", "create", "cohort", "  Spring   2026 "], env).out.startswith("Made the cohort group 'Spring 2026'")
    assert "already exists" in run_tool(["group", "create", "COHORT", "spring 2026"], env).out
    added = run_tool(["group", "add", "cohort", "SPRING 2026", str(ids["ana"]), "web:uuid-ben", str(ids["cat"])], env)
    assert added.code == 0 and "Added 3 champions to cohort: Spring 2026." in added.out
    again = run_tool(["group", "add", "cohort", "spring 2026", str(ids["ana"])], env)
    assert "Added 0 champions" in again.out and "1 already in it" in again.out
    removed = run_tool(["group", "remove", "cohort", "Spring 2026", str(ids["cat"])], env)
    assert "Took 1 champion out" in removed.out
    members = run_tool(["group", "members", "cohort", "spring 2026"], env)
    assert "cohort: Spring 2026, 2 champions" in members.out
    assert "telegram" in members.out and "web" in members.out
    assert "cohort  Spring 2026  2" in run_tool(["group", "list"], env).out
    bad_kind = run_tool(["group", "create", "team", "Blue"], env)
    assert bad_kind.code == 2 and "organisation, cohort, project" in bad_kind.err
    unknown = run_tool(["group", "add", "project", "Nowhere", str(ids["ana"])], env)
    assert unknown.code == 2 and "no project group called 'Nowhere'" in unknown.err
    nobody = run_tool(["group", "add", "cohort", "Spring 2026", "999", "telegram:000"], env)
    assert nobody.code == 2 and "Nothing was changed" in nobody.err


def test_champion_list_never_shows_messages_or_chat_ids(db_url, env):
    """The list shows id, channel, organisation, groups and stop/unreachable, nothing they wrote."""
    ids = seed(db_url)
    listed = run_tool(["champion", "list"], env)
    assert listed.code == 0
    assert "said stop" in listed.out and "cannot be reached" in listed.out and "4 champions" in listed.out
    assert str(ids["dev"]) in listed.out
    for secret in ("private worry", "111111", "uuid-ben", "333333"):
        assert secret not in listed.out


# --- broadcasts ---------------------------------------------------------------------------------


def test_preview_shows_counts_and_text_verbatim_and_sends_nothing(db_url, env, tmp_path):
    """Markup, emoji, other scripts and injection strings appear exactly as typed; nothing is stored."""
    seed(db_url)
    text = "<b>PRG</b> Thursday 2pm & papers p4-9 🙂\n'; DROP TABLE champions; --\n{{name}} مرحبا 你好 $(rm -rf /)"
    message_file = tmp_path / "note.txt"
    message_file.write_text(text, encoding="utf-8")
    result = run_tool(["broadcast", "preview", "--to", "all", "--text-file", str(message_file)], env)
    assert result.code == 0, result.err
    assert "Reaches:  2 champions (telegram 1, web 1)" in result.out
    assert "Left out: 1 said stop, 1 cannot be reached" in result.out
    assert text in result.out and "Nothing has been sent." in result.out
    same = run_tool(["broadcast", "preview", "--to", "all", "--text", text], env)
    assert text in same.out
    assert broadcasts(db_url) == []


def test_send_asks_and_only_yes_sends(db_url, env):
    """y sends; n (or just Enter) does not; without a terminal and without --yes it refuses, not hangs."""
    seed(db_url)
    no = run_tool(["broadcast", "send", "--to", "all", "--text", "First"], env, terminal=[("[y/N]", "n\n")])
    assert no.code == 1 and "Send to 2 champions? [y/N]" in no.out and "Not sent." in no.out
    enter = run_tool(["broadcast", "send", "--to", "all", "--text", "First"], env, terminal=[("[y/N]", "\n")])
    assert enter.code == 1
    no_terminal = run_tool(["broadcast", "send", "--to", "all", "--text", "First"], env, timeout=30)
    assert no_terminal.code == 2 and "no terminal to confirm on" in no_terminal.err and "--yes" in no_terminal.err
    assert broadcasts(db_url) == []
    yes = run_tool(["broadcast", "send", "--to", "all", "--text", "First", "--by", "Alice"], env, terminal=[("[y/N]", "y\n")])
    assert yes.code == 0, yes.err
    assert "Broadcast 1 is on its way" in yes.out and "broadcast report 1" in yes.out
    scripted = run_tool(["broadcast", "send", "--to", "all", "--text", "Second", "--yes"], env)
    assert scripted.code == 0 and "Send to" not in scripted.out
    stored = broadcasts(db_url)
    assert [(b.text, b.created_by, b.status, b.target_kind) for b in stored][0] == ("First", "Alice", "scheduled", "all")
    assert len(stored) == 2


def test_scheduling_with_british_times(db_url, env):
    """--at "Thursday 2pm" is the coming Thursday at 14:00 London time; past and nonsense are refused."""
    seed(db_url)
    result = run_tool(["broadcast", "send", "--to", "all", "--text", "PRG", "--at", "Thursday 2pm", "--yes"], env)
    assert result.code == 0, result.err
    (stored,) = broadcasts(db_url)
    send_at = stored.send_at.replace(tzinfo=timezone.utc).astimezone(LONDON)
    assert (send_at.strftime("%A"), send_at.hour, send_at.minute) == ("Thursday", 14, 0)
    assert timedelta(0) < send_at - datetime.now(timezone.utc) <= timedelta(days=7)
    assert f"scheduled for {send_at.strftime('%a %d %b %Y')}, 14:00 (London time)" in result.out
    future = (datetime.now(LONDON) + timedelta(days=30)).replace(hour=9, minute=30, second=0, microsecond=0)
    iso = run_tool(["broadcast", "send", "--to", "all", "--text", "ISO", "--yes", "--at", future.strftime("%Y-%m-%dT%H:%M")], env)
    assert iso.code == 0 and broadcasts(db_url)[-1].send_at.replace(tzinfo=timezone.utc) == future.astimezone(timezone.utc)
    past = run_tool(["broadcast", "send", "--to", "all", "--text", "Late", "--yes", "--at", "yesterday 9am"], env)
    assert past.code == 2 and "already passed" in past.err
    nonsense = run_tool(["broadcast", "send", "--to", "all", "--text", "?", "--yes", "--at", "when pigs fly"], env)
    assert nonsense.code == 2 and "can't read 'when pigs fly' as a time" in nonsense.err
    assert len(broadcasts(db_url)) == 2


def test_list_cancel_and_report(db_url, env):
    """A sent broadcast's report counts who got it and who was left out; a scheduled one can be cancelled."""
    seed(db_url)
    run_tool(["broadcast", "send", "--to", "all", "--text", "Now", "--yes", "--by", "Alice"], env)
    run_tool(["broadcast", "send", "--to", "all", "--text", "Later\nsecond line", "--yes", "--at", "tomorrow 10am"], env)
    engine = make_engine(env["DATABASE_URL"])
    try:
        sessions = make_session_factory(engine)
        assert start_due_broadcasts(sessions) == 1  # what the delivery process does
        with sessions() as session:
            assert session.execute(select(func.count()).select_from(OutboundMessage)).scalar_one() == 2
    finally:
        engine.dispose()
    listed = run_tool(["broadcast", "list"], env)
    assert listed.code == 0
    lines = listed.out.splitlines()
    assert lines[1].split()[:2] == ["2", "scheduled"] and "Later…" in lines[1]
    assert lines[2].split()[:2] == ["1", "sending"] and "Alice" in lines[2]
    report = run_tool(["broadcast", "report", "1"], env)
    assert "Broadcast 1 to everyone: sending" in report.out
    assert "Waiting:       2 queued, 0 being sent" in report.out
    assert "Left out:      1 said stop, 1 cannot be reached" in report.out
    cancelled = run_tool(["broadcast", "cancel", "2"], env)
    assert cancelled.code == 0 and "Broadcast 2 is cancelled: nobody will get it." in cancelled.out
    twice = run_tool(["broadcast", "cancel", "2"], env)
    assert twice.code == 2 and "already cancelled" in twice.err
    assert "Not started" in run_tool(["broadcast", "report", "2"], env).out
    missing = run_tool(["broadcast", "report", "42"], env)
    assert missing.code == 2 and "no broadcast 42" in missing.err


def test_bad_messages_and_targets_are_refused_clearly(db_url, env, tmp_path):
    """Empty and huge text, unknown groups, bad kinds and unreadable targets: exit 2 and a reason."""
    ids = seed(db_url)
    huge = tmp_path / "huge.txt"
    huge.write_text("word " * 2000, encoding="utf-8")
    cases = [
        (["--to", "all", "--text", "   "], "message is empty"),
        (["--to", "all", "--text-file", str(huge)], "keep it to 4,000 or fewer"),
        (["--to", "group:cohort:Nobody", "--text", "Hi"], "no cohort group called 'Nobody'"),
        (["--to", "group:team:Blue", "--text", "Hi"], "not a kind of group"),
        (["--to", "everybody", "--text", "Hi"], "use all, group:<kind>:<name> or champion:<id>"),
        (["--to", "champion:999", "--text", "Hi"], "no champion with id 999"),
    ]
    for args, reason in cases:
        result = run_tool(["broadcast", "send", "--yes", *args], env)
        assert (result.code, reason in result.err) == (2, True), (args, result.err)
    only_stopped = run_tool(["broadcast", "send", "--yes", "--to", f"champion:{ids['cat']}", "--text", "Hi"], env)
    assert only_stopped.code == 2 and "Nobody would get this message" in only_stopped.err
    assert broadcasts(db_url) == []


def test_tool_works_on_postgresql_too(database_url):
    """The same tool against the real PostgreSQL server (and on SQLite): migrate, group, send, report."""
    migrate(database_url)
    ids = seed(database_url)
    env = tool_env(database_url)
    assert run_tool(["group", "create", "project", "Stroke pathway"], env).code == 0
    assert run_tool(["group", "add", "project", "stroke pathway", str(ids["ana"]), str(ids["ben"])], env).code == 0
    sent = run_tool(["broadcast", "send", "--to", "group:project:Stroke Pathway", "--text", "Hi 🙂", "--yes"], env)
    assert sent.code == 0, sent.err
    report = run_tool(["broadcast", "report", "1"], env)
    assert "Broadcast 1 to project: Stroke pathway: scheduled" in report.out


# --- reading times ------------------------------------------------------------------------------

SUNDAY_NOON = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "typed, london",
    [
        ("Thursday 2pm", datetime(2026, 11, 26, 14, 0)),
        ("thu 9:30am", datetime(2026, 11, 26, 9, 30)),
        ("tomorrow 10am", datetime(2026, 11, 23, 10, 0)),
        ("27/11/2026 14:00", datetime(2026, 11, 27, 14, 0)),
        ("3/4/2027 10am", datetime(2027, 4, 3, 10, 0)),  # 3rd of April, in summer time
        ("1 December 2026 9am", datetime(2026, 12, 1, 9, 0)),
        ("2026-11-27T14:00", datetime(2026, 11, 27, 14, 0)),
        ("2027-07-01 08:15", datetime(2027, 7, 1, 8, 15)),
        ("in 2 hours", datetime(2026, 11, 22, 14, 0)),
    ],
)
def test_times_are_read_the_british_way_in_london(typed, london):
    """Day before month, London's clock (GMT or BST), the coming day; stored as UTC."""
    when = parse_when(typed, now=SUNDAY_NOON)
    assert when.tzinfo is not None and when.utcoffset() == timedelta(0)
    assert when == london.replace(tzinfo=LONDON).astimezone(timezone.utc)


@pytest.mark.parametrize("typed, reason", [
    ("yesterday 9am", "already passed"),
    ("1/1/2020 10:00", "already passed"),
    ("2026-11-22T11:00", "already passed"),
    ("when pigs fly", "can't read"),
    ("   ", "Say when"),
])
def test_past_and_unreadable_times_are_refused(typed, reason):
    """A time that has gone or cannot be read is an error, never a guess."""
    with pytest.raises(TeamInputError, match=reason):
        parse_when(typed, now=SUNDAY_NOON)
