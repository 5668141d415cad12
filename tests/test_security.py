"""Security (SECURITY.md): what the running system exposes, and what its logs never hold.

The fast tests check the pieces (the web chat's access log, database errors, the Procfiles, the team
tool's refusals). The live tests start the whole system once: Rasa, the action server, the web chat
and the delivery process with the Telegram bot in webhook mode against the fake Bot API, every
process at its default log level. A champion writes a marked message with a password in it on the
web chat and on Telegram, downloads their data, and the team broadcasts a marked message; then
Rasa's HTTP API is probed, the listening sockets are read from /proc, and after the stop every
process log is searched for the marker, the password, the web chat's sender id, the bot token, the
team token and the webhook secret. A Python audit hook in every process records any attempt to
reach an address off this machine (Rasa's telemetry and crash reports must stay off).
"""
from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from bench.stack import MODEL, ROOT, VENV_BIN, Stack, free_port, running_stack
from bot.db import make_engine

# How long the stack may take to come up (as in conftest.py).
LIVE_STACK_TIMEOUT = float(os.environ.get("LIVE_STACK_TIMEOUT", "180"))
WAIT = 90.0  # seconds: generous deadlines for replies on a busy 2-core machine

# Secrets of this test run (the fake Bot API accepts only its own token).
BOT_TOKEN = "424242:security-test-" + uuid.uuid4().hex[:16]
TEAM_TOKEN = "team-" + uuid.uuid4().hex
WEBHOOK_SECRET = "hook_" + uuid.uuid4().hex
MARKER = "zq" + uuid.uuid4().hex[:12]
PASSWORD = "Hunter2-" + uuid.uuid4().hex[:10]
TELEGRAM_CHAT = 820001

# Loaded by every Python process of the stack (through PYTHONPATH): records each attempt to look up
# or connect to an address that is not this machine's loopback, one file per process.
OUTBOUND_AUDIT = '''
import ipaddress, os, sys

_DIR = os.environ.get("COMPANION_OUTBOUND_AUDIT_DIR")


def _outside(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or host in ("", "localhost"):
        return None
    try:
        return None if ipaddress.ip_address(host.split("%")[0]).is_loopback else host
    except ValueError:
        return host


def _hook(event, args):
    try:
        if event == "socket.getaddrinfo":
            host = _outside(args[0])
        elif event == "socket.connect" and isinstance(args[1], tuple) and args[1]:
            host = _outside(args[1][0])
        else:
            return
        if host:
            with open(os.path.join(_DIR, "%d.txt" % os.getpid()), "a") as out:
                out.write("%s %s %s\\n" % (event, host, " ".join(sys.argv[:3])))
    except Exception:
        pass


if _DIR:
    sys.addaudithook(_hook)
    open(os.path.join(_DIR, "loaded-%d" % os.getpid()), "w").close()
'''


# --- the pieces -------------------------------------------------------------------------------

def test_the_web_chats_access_log_leaves_out_the_query_string() -> None:
    """GET /api/history?sender_id=... is logged as its path: the sender id opens the transcript."""
    from aiohttp.test_utils import make_mocked_request
    from aiohttp import web

    from bot.web import PathOnlyAccessLogger

    stream = io.StringIO()
    logger = logging.getLogger("test_security.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        sender_id = uuid.uuid4().hex
        access_log = PathOnlyAccessLogger(logger, "")
        for path in (f"/api/history?sender_id={sender_id}&after=3", f"/api/my-data.json?sender_id={sender_id}"):
            access_log.log(make_mocked_request("GET", path), web.json_response({}), 0.01)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [line.split(" 200 ")[0] for line in lines] == ['"GET /api/history"', '"GET /api/my-data.json"']
    assert sender_id not in stream.getvalue()


def test_database_errors_do_not_carry_what_was_written(database_url) -> None:
    """A failed statement's error (which is logged) names the statement, never the champion's words."""
    engine = make_engine(database_url)
    table = f"security_probe_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as connection:
            connection.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, body VARCHAR(200))"))
        words = f"my password is {PASSWORD} ({MARKER})"
        with pytest.raises(IntegrityError) as raised:
            with engine.begin() as connection:
                for _ in range(2):
                    connection.execute(text(f"INSERT INTO {table} (id, body) VALUES (1, :body)"), {"body": words})
        message = str(raised.value)
        assert f"INSERT INTO {table}" in message
        assert MARKER not in message and PASSWORD not in message
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_rasas_own_tracker_store_hides_values_too(tmp_path) -> None:
    """The Rasa launcher makes Rasa's SQL tracker store (whose errors Rasa logs) hide statement values."""
    probe = (
        "from components.rasa_server import hide_sql_parameters\n"
        "hide_sql_parameters()\n"
        "from rasa.core.tracker_store import SQLTrackerStore\n"
        "from rasa.shared.core.domain import Domain\n"
        f"store = SQLTrackerStore(Domain.empty(), dialect='sqlite', db={str(tmp_path / 'tracker.db')!r})\n"
        "print('hide_parameters', store.engine.hide_parameters)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT), RASA_TELEMETRY_ENABLED="false"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hide_parameters True" in done.stdout


def _procfile(name: str) -> Dict[str, str]:
    """The commands of a Procfile, by process name."""
    lines = (ROOT / name).read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("procfile", ["Procfile", "Procfile.production"])
def test_the_procfiles_keep_rasas_api_off_and_everything_on_loopback(procfile: str) -> None:
    """Rasa without --enable-api or CORS, on RASA_HOST (127.0.0.1 by default); the action server on
    ACTION_HOST (127.0.0.1 by default) with telemetry off; web and delivery read their own settings."""
    commands = _procfile(procfile)
    rasa = {name: command for name, command in commands.items() if name.startswith("rasa")}
    assert rasa, commands
    for command in rasa.values():
        assert "--enable-api" not in command and "--cors" not in command
        assert '--interface "${RASA_HOST:-127.0.0.1}"' in command
        assert "components.rasa_server" in command  # the launcher: telemetry off, SQL values hidden
    actions = commands["actions"]
    assert 'SANIC_HOST="${ACTION_HOST:-127.0.0.1}"' in actions and "RASA_TELEMETRY_ENABLED=false" in actions
    assert "0.0.0.0" not in "".join(commands.values())


def test_default_settings_listen_on_loopback_only() -> None:
    """With nothing set, the web chat and the Telegram webhook listen on 127.0.0.1; no team token."""
    from bot.settings import load_settings

    settings = load_settings({})
    assert settings.web_host == "127.0.0.1" and settings.telegram_webhook_host == "127.0.0.1"
    assert settings.console_host == "127.0.0.1" and not settings.console_secure_cookie
    assert settings.team_token is None and settings.telegram_bot_token is None


def test_credentials_file_opens_only_the_rest_channel() -> None:
    """credentials.yml lists no channel but REST (no socket.io, no other webhooks with their own secrets)."""
    import yaml

    channels = yaml.safe_load((ROOT / "credentials.yml").read_text()) or {}
    assert set(channels) == {"rest"}


def test_the_team_tool_refuses_without_echoing_either_token(tmp_path) -> None:
    """A wrong team token is refused; neither the configured nor the presented token is printed."""
    from bot.team import main as team_main

    guess = "guess-" + uuid.uuid4().hex
    for environ in (
        {"TEAM_TOKEN": TEAM_TOKEN, "COMPANION_TEAM_TOKEN": guess},
        {"TEAM_TOKEN": "", "COMPANION_TEAM_TOKEN": guess},
        {"TEAM_TOKEN": TEAM_TOKEN},
    ):
        out, err = io.StringIO(), io.StringIO()
        code = team_main(
            ["champion", "list"],
            environ={"DATABASE_URL": f"sqlite:///{tmp_path / 'team.db'}", **environ},
            stdin=io.StringIO(""), out=out, err=err,
        )
        shown = out.getvalue() + err.getvalue()
        assert code != 0 and "Refused" in err.getvalue(), shown
        assert TEAM_TOKEN not in shown and guess not in shown
        assert out.getvalue() == ""


# --- the running system -------------------------------------------------------------------------

def _http(method: str, url: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
          timeout: float = 60) -> Tuple[int, bytes]:
    """One request; its status and body (error statuses included)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _json(method: str, url: str, body: Any = None) -> Any:
    """One JSON request that must succeed; its decoded answer."""
    status, raw = _http(method, url, body)
    assert status == 200, (status, raw[:500])
    return json.loads(raw or b"null")


def _wait(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll probe() until it returns something truthy (returned) or the deadline passes (test fails)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def _log_tails(data_dir: Path, lines: int = 40) -> str:
    """The last lines of each process log, for a failure message."""
    return "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        for log in sorted(data_dir.glob("*.log"))
    )


@dataclass
class Live:
    """The running system and what the tests did to it."""

    stack: Stack
    fake_url: str
    webhook_url: str
    webhook_port: int
    audit_dir: Path
    team_env: Dict[str, str]
    stop: Callable[[], None]
    web_sender: str = field(default_factory=lambda: uuid.uuid4().hex)
    story_told: bool = False

    def telegram_sent(self, chat_id: int) -> List[Dict[str, Any]]:
        """What the bot sent to chat_id, oldest first."""
        return _json("GET", f"{self.fake_url}/_fake/sent?chat_id={chat_id}")

    def web_history(self) -> List[Dict[str, Any]]:
        """The web chat champion's transcript."""
        return _json("GET", f"{self.stack.web_url}/api/history?sender_id={self.web_sender}")["messages"]


def _start_fake(port: int, log_path: Path) -> subprocess.Popen:
    """The fake Bot API as its own process (its log, which names its token, is kept apart)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "bench.fake_telegram", "--port", str(port), "--token", BOT_TOKEN],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=log, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            if _http("GET", f"http://127.0.0.1:{port}/_fake/stats", timeout=2)[0] == 200:
                return process
        time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    pytest.fail(f"the fake Bot API did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    """The whole system, started once, with the Telegram bot in webhook mode behind its secret."""
    if not MODEL.exists():
        pytest.fail(f"{MODEL.relative_to(ROOT)} is missing: the test command trains it first")
    data_dir = tmp_path_factory.mktemp("security-stack")
    apart = tmp_path_factory.mktemp("security-apart")  # not a process log of ours: not searched
    audit_dir = apart / "outbound"
    audit_dir.mkdir()
    hooks = apart / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(OUTBOUND_AUDIT)
    fake_port, webhook_port = free_port(), free_port()
    fake = _start_fake(fake_port, apart / "fake_telegram.log")
    fake_url = f"http://127.0.0.1:{fake_port}"
    webhook_url = f"http://127.0.0.1:{webhook_port}/telegram-{uuid.uuid4().hex[:8]}"
    stack_cm = running_stack(
        data_dir=data_dir,
        timeout=LIVE_STACK_TIMEOUT,
        extra_env={
            "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}",
            "COMPANION_OUTBOUND_AUDIT_DIR": str(audit_dir),
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_API_BASE_URL": f"{fake_url}/bot",
            "TELEGRAM_MODE": "webhook",
            "TELEGRAM_WEBHOOK_URL": webhook_url,
            "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "TELEGRAM_WEBHOOK_PORT": str(webhook_port),
            "TEAM_TOKEN": TEAM_TOKEN,
        },
    )
    try:
        try:
            stack = stack_cm.__enter__()
        except (TimeoutError, OSError) as exc:
            pytest.fail(f"the stack did not start: {exc}\n{_log_tails(data_dir)}")
        stopped = []

        def stop() -> None:
            """Stop every process of the stack (once), so that their logs are complete."""
            if not stopped:
                stopped.append(True)
                stack_cm.__exit__(None, None, None)

        team_env = dict(
            os.environ, PYTHONPATH=str(ROOT), SQLALCHEMY_SILENCE_UBER_WARNING="1", DATA_DIR=str(data_dir),
            DATABASE_URL=f"sqlite:///{data_dir / 'app.db'}", TEAM_TOKEN=TEAM_TOKEN,
            COMPANION_TEAM_TOKEN=TEAM_TOKEN, TELEGRAM_BOT_TOKEN="",
        )
        system = Live(stack, fake_url, webhook_url, webhook_port, audit_dir, team_env, stop)
        _wait("the bot to register its webhook with the fake Bot API",
              lambda: _json("GET", f"{fake_url}/_fake/stats")["requests"].get("setWebhook", 0) >= 1)
        try:
            yield system
        finally:
            stop()
    finally:
        fake.terminate()
        try:
            fake.wait(timeout=10)
        except subprocess.TimeoutExpired:
            fake.kill()
            fake.wait(timeout=10)


def _tell_the_story(live: Live) -> None:
    """Once per stack: a marked message with a password in it on both channels, the champion's data
    downloaded, the team's marked broadcast delivered to both (what the log test searches for)."""
    if live.story_told:
        return
    words = f"hello, my password is {PASSWORD} and my code word is {MARKER}"
    answer = _json("POST", f"{live.stack.web_url}/api/messages", {"sender_id": live.web_sender, "text": words})
    assert answer["accepted"] and answer["messages"], answer
    status, my_data = _http("GET", f"{live.stack.web_url}/api/my-data.json?sender_id={live.web_sender}")
    assert status == 200 and MARKER.encode() in my_data

    _json("POST", f"{live.fake_url}/_fake/user/text", {"chat_id": TELEGRAM_CHAT, "text": words})
    _wait("the bot's reply on Telegram", lambda: live.telegram_sent(TELEGRAM_CHAT))

    broadcast = f"Team note {MARKER}: the meeting's password is {PASSWORD}"
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "bot.team", "broadcast", "send", "--to", "all", "--text", broadcast, "--yes"],
        cwd=ROOT, env=live.team_env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _wait("the broadcast on Telegram", lambda: any(m["plain"] == broadcast for m in live.telegram_sent(TELEGRAM_CHAT)))
    _wait("the broadcast in the web chat", lambda: any(m["text"] == broadcast for m in live.web_history()))
    live.story_told = True


@pytest.mark.model
def test_champions_chat_on_the_web_and_on_telegram(live: Live) -> None:
    """A marked message with a password in it gets a reply on both channels; the champion's own data
    can be downloaded; the team's marked broadcast reaches both."""
    _tell_the_story(live)


@pytest.mark.model
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/status"),
        ("GET", "/version"),
        ("GET", "/domain"),
        ("POST", "/model/parse"),
        ("PUT", "/model"),
        ("POST", "/model/train"),
        ("GET", "/conversations/{sender}/tracker"),
        ("POST", "/conversations/{sender}/messages"),
        ("POST", "/conversations/{sender}/trigger_intent"),
    ],
)
def test_rasas_http_api_is_off(live: Live, method: str, path: str) -> None:
    """Rasa runs without --enable-api: its HTTP API answers nothing (only the REST channel is open)."""
    url = live.stack.rasa_url + path.format(sender=f"web-{live.web_sender}")
    body = {"text": MARKER, "name": "greet"} if method in ("POST", "PUT") else None
    status, raw = _http(method, url, body)
    assert status in (401, 403, 404), (status, raw[:300])
    assert MARKER.encode() not in raw and b'"events"' not in raw


@pytest.mark.model
def test_the_telegram_webhook_refuses_requests_without_the_secret(live: Live) -> None:
    """A POST to the webhook without Telegram's secret-token header, or with a wrong one, gets 403."""
    update = {"update_id": 999999, "message": {"message_id": 1, "date": 0, "text": MARKER,
                                               "chat": {"id": TELEGRAM_CHAT, "type": "private"}}}
    assert _http("POST", live.webhook_url, update)[0] == 403
    wrong = {"X-Telegram-Bot-Api-Secret-Token": "not-" + WEBHOOK_SECRET}
    assert _http("POST", live.webhook_url, update, headers=wrong)[0] == 403


def _socket_inodes(pid: int) -> Set[str]:
    """The socket inodes open in a process and its descendants."""
    inodes: Set[str] = set()
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{current}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:["):-1])
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pids.extend(int(child) for child in (task / "children").read_text().split())
    return inodes


def _address(hex_address: str) -> ipaddress._BaseAddress:
    """An address as /proc/net/tcp{,6} writes it (each 32-bit word in host byte order)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _listening() -> Dict[str, Tuple[ipaddress._BaseAddress, int]]:
    """Every listening TCP socket on this machine: inode -> (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    host, port = fields[1].split(":")
                    found[fields[9]] = (_address(host), int(port, 16))
    return found


@pytest.mark.model
def test_every_process_listens_on_loopback_only(live: Live) -> None:
    """Rasa, the action server, the web chat and the Telegram webhook listen on 127.0.0.1 and nowhere
    else (the action server takes SANIC_HOST; a proxy in front is the only way in)."""
    listening = _listening()
    expected = {
        "rasa": int(live.stack.rasa_url.rsplit(":", 1)[1]),
        "actions": int(live.stack.action_url.rsplit(":", 1)[1]),
        "web": int(live.stack.web_url.rsplit(":", 1)[1]),
        "delivery": live.webhook_port,
    }
    for name, process in live.stack.processes.items():
        sockets = [listening[inode] for inode in _socket_inodes(process.pid) if inode in listening]
        assert sockets, f"{name} listens on nothing"
        assert {port for _, port in sockets} == {expected[name]}, (name, sockets)
        assert all(address.is_loopback for address, _ in sockets), (name, sockets)


@pytest.mark.model
def test_the_logs_hold_no_secret_and_no_message_text(live: Live) -> None:
    """After the story above, no process log holds the marker, the password, the web sender id, the
    bot token (or its secret half), the team token or the webhook secret; no telemetry was tried."""
    _tell_the_story(live)
    live.stop()
    logs = sorted(live.stack.data_dir.glob("*.log"))
    assert {log.stem for log in logs} >= {"rasa", "actions", "web", "delivery"}
    secrets = {
        "the marker from the messages": MARKER,
        "the password from the messages": PASSWORD,
        "the web chat's sender id": live.web_sender,
        "the bot token": BOT_TOKEN,
        "the bot token's secret half": BOT_TOKEN.split(":", 1)[1],
        "the team token": TEAM_TOKEN,
        "the webhook secret": WEBHOOK_SECRET,
    }
    found = []
    for log in logs:
        content = log.read_text(errors="replace")
        assert content.strip(), f"{log.name} is empty: was anything logged at all?"
        found += [f"{what} in {log.name}" for what, secret in secrets.items() if secret in content]
        found += [f"{word} in {log.name}" for word in ("sentry", "segment.io") if word in content.lower()]
    assert not found, found
    assert "aiohttp.access" in (live.stack.data_dir / "web.log").read_text()  # requests are still logged


@pytest.mark.model
def test_no_process_tried_to_reach_another_machine(live: Live) -> None:
    """Telemetry and crash reports are off: no process looked up or connected to any address off
    this machine while champions chatted (the audit hook saw every Python socket call)."""
    _tell_the_story(live)
    live.stop()
    watched = {int(path.name.split("-", 1)[1]) for path in live.audit_dir.glob("loaded-*")}
    assert {process.pid for process in live.stack.processes.values()} <= watched  # the hook was in each
    attempts = [line for record in sorted(live.audit_dir.glob("*.txt")) for line in record.read_text().splitlines()]
    assert attempts == []


def test_the_outbound_audit_hook_sees_a_lookup(tmp_path) -> None:
    """The audit hook the live tests rely on does record a look-up of another machine's name."""
    (tmp_path / "sitecustomize.py").write_text(OUTBOUND_AUDIT)
    records = tmp_path / "records"
    records.mkdir()
    probe = "import socket\ntry:\n    socket.getaddrinfo('example.invalid', 443)\nexcept OSError:\n    pass\n"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60,
                   env=dict(os.environ, PYTHONPATH=str(tmp_path), COMPANION_OUTBOUND_AUDIT_DIR=str(records)))
    lines = [line for record in records.glob("*.txt") for line in record.read_text().splitlines()]
    assert [line.split()[:2] for line in lines] == [["socket.getaddrinfo", "example.invalid"]]
