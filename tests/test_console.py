"""The engagement team's console (bot/console): sign-in, CSRF, champions and groups, messages, reflections, audit."""
from __future__ import annotations

import csv
import io
import re
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Dict, Optional

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from bench.reflection_sample import seed
from bot.console.accounts import SignInRefused, TeamAccounts
from bot.console.app import SESSION_COOKIE, build_app, load_wording
from bot.db import make_engine, make_session_factory, migrate
from bot.groups import TeamInputError
from bot.models import Champion, utcnow

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
PASSWORD = "correct horse battery staple"
WORDS = load_wording()
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
MARKUP = "<script>alert('x')</script><b>bold</b>"


@pytest.fixture
def sessions(app_settings):
    """A migrated SQLite app database for the console, with three champions."""
    migrate(app_settings.database_url)
    engine = make_engine(app_settings.database_url)
    factory = make_session_factory(engine)
    with factory() as session:
        session.add_all([
            Champion(channel="telegram", external_id="5001", display_name="Ada Lovelace", organisation="leeds"),
            Champion(channel="web", external_id="w-abc", display_name=MARKUP),
            Champion(channel="telegram", external_id="5003"),
        ])
        session.commit()
    yield factory
    engine.dispose()


@pytest.fixture
def accounts(sessions):
    """The console's accounts with one team member, "sam"."""
    accounts = TeamAccounts(sessions)
    accounts.create_member("sam", PASSWORD)
    return accounts


@pytest_asyncio.fixture
async def client(app_settings, accounts):
    """A test client on the console (signed out)."""
    async with TestClient(TestServer(build_app(app_settings))) as test_client:
        yield test_client


def csrf_of(page: str) -> str:
    """The CSRF token in a page's first form."""
    match = CSRF_FIELD.search(page)
    assert match, page[:500]
    return match.group(1)


async def sign_in(client: TestClient, username: str = "sam", password: str = PASSWORD, next_path: str = "/"):
    """Fill in the sign-in form as a browser would; returns the response (redirects not followed)."""
    page = await (await client.get("/sign-in")).text()
    return await client.post(
        "/sign-in", data={"csrf_token": csrf_of(page), "username": username, "password": password, "next": next_path},
        allow_redirects=False,
    )


@pytest_asyncio.fixture
async def signed_in(client):
    """The client, signed in as sam; returns (client, the session's CSRF token)."""
    answer = await sign_in(client)
    assert answer.status == 303
    home = await client.get("/")
    assert home.status == 200
    return client, csrf_of(await home.text())


# --- signing in ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/champions", "/messages", "/messages/1", "/reflections",
                                  "/reflections/export.csv", "/reflections/report.html", "/audit"])
async def test_a_signed_out_visitor_is_sent_to_sign_in(client, path):
    """Every page but sign-in needs a session: a signed-out visitor (a champion, say) lands on the sign-in form."""
    answer = await client.get(path, allow_redirects=False)
    assert answer.status == 303
    assert answer.headers["Location"].startswith("/sign-in?next=")
    answer = await client.get(path)
    assert "Sign in" in await answer.text() and "csrf_token" in await answer.text()


@pytest.mark.parametrize("path", ["/champions/groups", "/groups", "/messages/preview", "/messages/send",
                                  "/messages/1/cancel", "/sign-out"])
async def test_a_signed_out_form_changes_nothing(client, path):
    """A form posted without a session is refused (401) with a page that says to sign in again."""
    answer = await client.post(path, data={"to": "everyone", "text": "hi", "do": "send"}, allow_redirects=False)
    assert answer.status == 401
    assert WORDS["problems"]["signed_out"]["title"] in await answer.text()


async def test_signing_in_goes_back_to_the_page_asked_for(client):
    """After sign-in the member lands where they were going; a link off the site is not followed."""
    answer = await sign_in(client, next_path="/messages")
    assert answer.status == 303 and answer.headers["Location"] == "/messages"
    cookie = answer.cookies[SESSION_COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict"
    answer = await sign_in(client, next_path="//evil.example/")
    assert answer.headers["Location"] == "/"


async def test_wrong_password_then_the_limit(client, accounts):
    """Wrong passwords say so; after five the username is locked even for the right password (429)."""
    for _ in range(5):
        answer = await sign_in(client, password="not the password")
        assert answer.status == 401
        assert WORDS["sign_in"]["wrong"] in await answer.text()
    answer = await sign_in(client)
    assert answer.status == 429
    assert WORDS["sign_in"]["locked"].format(minutes=15) in await answer.text()
    assert SESSION_COOKIE not in answer.cookies


def test_the_limit_ends_after_the_lockout(accounts):
    """Locked now, free again once the failures are older than the lockout window."""
    start = utcnow()
    for _ in range(5):
        with pytest.raises(SignInRefused):
            accounts.sign_in("sam", "wrong password!", now=start)
    with pytest.raises(SignInRefused) as refused:
        accounts.sign_in("sam", PASSWORD, now=start)
    assert refused.value.reason == "locked"
    assert accounts.sign_in("sam", PASSWORD, now=start + timedelta(minutes=16))


def test_unknown_names_are_limited_too_and_passwords_are_hashed(accounts, app_settings):
    """An unknown username fails like a wrong password; the stored password is an Argon2 hash."""
    with pytest.raises(SignInRefused):
        accounts.sign_in("nobody", PASSWORD)
    db = sqlite3.connect(app_settings.database_url.removeprefix("sqlite:///"))
    [(stored,)] = db.execute("SELECT password_hash FROM team_members").fetchall()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_sessions_expire_when_idle_and_at_their_longest(accounts):
    """A session lasts while in use, up to its longest life; after that the member signs in again."""
    start = utcnow()
    token = accounts.sign_in("sam", PASSWORD, now=start)
    assert accounts.session(token, now=start + timedelta(minutes=29))
    assert accounts.session(token, now=start + timedelta(minutes=58))  # used, so extended
    assert accounts.session(token, now=start + timedelta(minutes=58 + 31)) is None  # idle too long
    token = accounts.sign_in("sam", PASSWORD, now=start)
    moment = start
    while moment + timedelta(minutes=20) < start + timedelta(hours=8):
        moment += timedelta(minutes=20)
        assert accounts.session(token, now=moment)
    assert accounts.session(token, now=start + timedelta(hours=8, minutes=1)) is None


async def test_signing_out_ends_the_session(signed_in):
    """After sign-out the same cookie opens nothing."""
    client, csrf = signed_in
    answer = await client.post("/sign-out", data={"csrf_token": csrf}, allow_redirects=False)
    assert answer.status == 303
    assert (await client.get("/", allow_redirects=False)).status == 303


def test_passwords_must_be_long_and_names_plain(accounts):
    """Short passwords and odd usernames are refused with a reason; a taken name too."""
    with pytest.raises(TeamInputError, match="12 characters"):
        accounts.create_member("kim", "short")
    with pytest.raises(TeamInputError, match="username"):
        accounts.create_member("<kim>", PASSWORD)
    with pytest.raises(TeamInputError, match="already"):
        accounts.create_member("SAM", PASSWORD)


def test_the_command_creates_the_first_team_account(app_env, tmp_path):
    """`python -m bot.console create-member` with the password piped in; then the member can sign in."""
    env = dict(app_env, PATH="/usr/bin:/bin")
    run = subprocess.run([PYTHON, "-m", "bot.console", "create-member", "Jo.Bloggs"], input=PASSWORD + "\n",
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "jo.bloggs" in run.stdout and PASSWORD not in run.stdout + run.stderr
    short = subprocess.run([PYTHON, "-m", "bot.console", "create-member", "kim"], input="short\n",
                           capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert short.returncode == 2 and "12 characters" in short.stderr
    engine = make_engine(app_env["DATABASE_URL"])
    try:
        assert TeamAccounts(make_session_factory(engine)).sign_in("jo.bloggs", PASSWORD)
    finally:
        engine.dispose()


# --- CSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "forged-token"])
async def test_a_form_without_its_csrf_token_is_refused(signed_in, token):
    """A signed-in member's browser posting a form without the right token (another site's form) changes nothing."""
    client, _csrf = signed_in
    data: Dict[str, str] = {"kind": "cohort", "name": "Forged"}
    if token is not None:
        data["csrf_token"] = token
    answer = await client.post("/groups", data=data, allow_redirects=False)
    assert answer.status == 403
    assert WORDS["problems"]["csrf"]["title"] in await answer.text()
    page = await (await client.get("/champions")).text()
    assert "Forged" not in page


async def test_the_sign_in_form_needs_its_token_too(client):
    """A sign-in posted without the form's token is refused (no logging people in from another site)."""
    answer = await client.post("/sign-in", data={"username": "sam", "password": PASSWORD}, allow_redirects=False)
    assert answer.status == 403


# --- champions and groups -----------------------------------------------------------------------


async def test_champions_are_listed_searched_and_escaped(signed_in):
    """Names, numbers, organisations and channels are listed; search narrows; markup shows as text."""
    client, _csrf = signed_in
    page = await (await client.get("/champions")).text()
    assert "Ada Lovelace" in page and "Champion 3" in page and "3 champions." in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    page = await (await client.get("/champions", params={"q": "lovelace"})).text()
    assert "Ada Lovelace" in page and "Champion 3" not in page
    page = await (await client.get("/champions", params={"q": "\"><img src=x onerror=alert(1)>"})).text()
    assert "<img src=x" not in page


async def test_put_champions_in_a_group_and_take_them_out(signed_in, accounts):
    """Make a group, tick two champions, add them, remove one: the page shows it and the audit log says who."""
    client, csrf = signed_in
    answer = await client.post("/groups", data={"csrf_token": csrf, "kind": "cohort", "name": "Spring 2027"})
    assert WORDS["notices"]["group_created"] in await answer.text()
    page = await answer.text()
    group_id = re.search(r'<option value="(\d+)">cohort: Spring 2027', page).group(1)
    answer = await client.post("/champions/groups", data=[
        ("csrf_token", csrf), ("group", group_id), ("champion", "1"), ("champion", "2"), ("action", "add"),
        ("back", "/champions")])
    page = await answer.text()
    assert WORDS["notices"]["group_add"] in page and "cohort: Spring 2027 (2)" in page
    answer = await client.post("/champions/groups", data=[
        ("csrf_token", csrf), ("group", group_id), ("champion", "2"), ("action", "remove"), ("back", "/champions")])
    assert "cohort: Spring 2027 (1)" in await answer.text()
    actions = [(e.actor, e.action) for e in accounts.audit_log()]
    assert ("sam", "group remove") in actions and ("sam", "group add") in actions and ("sam", "group create") in actions
    answer = await client.post("/champions/groups", data={"csrf_token": csrf, "group": group_id, "action": "add",
                                                          "back": "/champions"})
    assert "Tick at least one champion" in await answer.text()


# --- messages -----------------------------------------------------------------------------------


async def test_preview_then_send_to_a_group(signed_in, accounts, sessions):
    """Compose, preview (as on a phone, with who it reaches), send: the report shows it and the audit log records it."""
    client, csrf = signed_in
    await client.post("/groups", data={"csrf_token": csrf, "kind": "cohort", "name": "Spring 2027"})
    await client.post("/champions/groups", data=[("csrf_token", csrf), ("group", "1"), ("champion", "1"),
                                                  ("champion", "3"), ("action", "add"), ("back", "/champions")])
    form = {"csrf_token": csrf, "to": "group", "group": "1", "text": f"Papers are out {MARKUP}", "when": "now"}
    preview = await client.post("/messages/preview", data=form)
    page = await preview.text()
    assert preview.status == 200 and "Check your message" in page
    assert "Papers are out &lt;script&gt;" in page and "<script>alert" not in page
    assert re.search(r"reach now</dt><dd>2", page)
    answer = await client.post("/messages/send", data=dict(form, do="send"))
    page = await answer.text()
    assert answer.url.path == "/messages/1" and WORDS["notices"]["sending"] in page
    assert "cohort: Spring 2027" in page
    [entry] = [e for e in accounts.audit_log() if e.action == "message send"]
    assert entry.actor == "sam" and "broadcast 1" in entry.detail and "Papers" not in entry.detail


async def test_schedule_then_cancel(signed_in, accounts):
    """A message for later is scheduled in London time and can be cancelled until it goes."""
    client, csrf = signed_in
    form = {"csrf_token": csrf, "to": "champion", "champion": "1", "text": "See you Thursday", "when": "later",
            "send_at": "2099-11-26T14:00"}
    page = await (await client.post("/messages/preview", data=form)).text()
    assert "Thu 26 Nov 2099, 14:00 (London time)" in page and "Schedule it" in page
    page = await (await client.post("/messages/send", data=dict(form, do="send"))).text()
    assert WORDS["notices"]["scheduled"] in page and "scheduled" in page
    answer = await client.post("/messages/1/cancel", data={"csrf_token": csrf})
    page = await answer.text()
    assert WORDS["notices"]["cancelled"] in page and "cancelled" in page
    assert {"message schedule", "message cancel"} <= {e.action for e in accounts.audit_log()}
    again = await client.post("/messages/1/cancel", data={"csrf_token": csrf})
    assert "already cancelled" in await again.text()


@pytest.mark.parametrize("change, problem", [
    ({"text": "   "}, "empty"),
    ({"to": "group", "group": ""}, WORDS["problems"]["pick_group"]),
    ({"to": "champion", "champion": "abc"}, WORDS["problems"]["champion_id"]),
    ({"to": "champion", "champion": "999"}, "999"),
    ({"when": "later", "send_at": ""}, WORDS["problems"]["pick_time"]),
    ({"when": "later", "send_at": "2001-01-01T10:00"}, "already passed"),
    ({"text": "x" * 5000}, "characters"),
])
async def test_a_message_that_cannot_go_says_why_and_keeps_the_text(signed_in, change, problem):
    """Each problem is explained above the form, and what they wrote is still in the form (nothing lost)."""
    client, csrf = signed_in
    form = dict({"csrf_token": csrf, "to": "everyone", "text": "Keep this text", "when": "now"}, **change)
    answer = await client.post("/messages/preview", data=form)
    page = await answer.text()
    assert answer.status == 400
    assert problem.lower() in page.lower().replace("&#39;", "'")
    if form["text"].strip() and len(form["text"]) < 100:
        assert form["text"] in page


async def test_change_it_goes_back_to_the_form_with_the_text(signed_in):
    """"Change it" on the preview returns to the form, filled in as it was; nothing is sent."""
    client, csrf = signed_in
    form = {"csrf_token": csrf, "to": "everyone", "text": "Draft with a typo", "when": "now", "do": "edit"}
    page = await (await client.post("/messages/send", data=form)).text()
    assert "Draft with a typo</textarea>" in page and "No messages yet" in page


async def test_an_unknown_message_number_is_a_plain_404(signed_in):
    """A report for a message that doesn't exist says so."""
    client, _ = signed_in
    answer = await client.get("/messages/424242")
    assert answer.status == 404 and WORDS["problems"]["no_message"]["title"] in await answer.text()


# --- reflections --------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def with_reflections(signed_in, sessions):
    """The known sample of reflections (bench/reflection_sample.py) in the database."""
    seed(sessions)
    return signed_in


async def test_reflections_report_and_exports_honour_sharing(with_reflections, accounts):
    """The report shows shared reflections with charts; private ones never appear; both downloads are audited."""
    client, _ = with_reflections
    page = await (await client.get("/reflections", params={"from": "1/11/2026", "to": "30/11/2026"})).text()
    assert "<svg" in page and "Take-aways, in full" in page
    for secret in ("SECRET", "UNANSWERED", "ERASED"):
        assert secret not in page
    answer = await client.get("/reflections/export.csv", params={"from": "1/11/2026", "to": "30/11/2026"})
    assert answer.status == 200 and answer.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO((await answer.read()).decode("utf-8-sig"))))
    assert len(rows) > 1 and not any("SECRET" in cell for row in rows for cell in row)
    answer = await client.get("/reflections/report.html", params={"organisation": "leeds"})
    assert answer.status == 200 and "<svg" in await answer.text()
    actions = [e.action for e in accounts.audit_log()]
    assert "reflections export csv" in actions and "reflections export report" in actions


async def test_bad_reflection_filters_say_what_is_wrong(with_reflections):
    """An impossible date range is explained, not a crash."""
    client, _ = with_reflections
    answer = await client.get("/reflections", params={"from": "30/11/2026", "to": "1/11/2026"})
    assert answer.status == 400 and "after the end date" in await answer.text()
    answer = await client.get("/reflections/export.csv", params={"from": "not a date"})
    assert answer.status == 400


# --- the page itself ----------------------------------------------------------------------------


async def test_pages_are_locked_down(signed_in):
    """A strict content security policy, no framing, nothing cached, on every page."""
    client, _ = signed_in
    for path in ("/", "/champions", "/messages", "/reflections", "/audit", "/sign-in"):
        answer = await client.get(path)
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Frame-Options"] == "DENY" and answer.headers["Cache-Control"] == "no-store"


async def test_odd_requests_get_a_short_page(signed_in):
    """Unknown pages and wrong methods get a plain page, never a traceback."""
    client, _ = signed_in
    for method, path in (("GET", "/nope"), ("GET", "/messages/1/cancel"), ("PUT", "/messages")):
        answer = await client.request(method, path)
        assert 400 <= answer.status < 500
        assert "Traceback" not in await answer.text()


def _cookie_value(answer, name: str) -> Optional[str]:
    """A cookie set by a response, or None."""
    morsel = answer.cookies.get(name)
    return morsel.value if morsel else None
