"""The team console in a real browser (headless Chromium) against the real processes.

The console (`python -m bot.console serve`), the web chat (`python -m bot.web`), the delivery process
(`python -m bot.delivery`, running the Telegram bot) and the fake Telegram Bot API
(bench/fake_telegram.py) run as their own processes on one SQLite database; Rasa is not needed
(RASA_URL points where nothing listens). A team member signs in, puts a Telegram champion and a
web chat champion into a group, schedules a message for a minute or so ahead in London time and
sees it arrive on both; downloads the reflections as CSV; every console page passes axe-core's
checks (nothing "serious" or "critical") at laptop and tablet sizes; and the console works by
keyboard alone.

Screenshots of every page at both sizes go to SCREENSHOT_DIR when it is set (else a temporary
directory, named in the output of `pytest -s`).
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional
from zoneinfo import ZoneInfo

import pytest

from bench.reflection_sample import seed
from bench.stack import free_port
from bot.console.app import load_wording
from bot.team import format_when
from bot.web import load_interface
from tests.conftest import CHROMIUM

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BOT_TOKEN = "424242:console-browser-token"  # the fake refuses any other token (401)
USERNAME = "sam"
PASSWORD = "correct horse battery staple"
TELEGRAM_CHAT = 920001
TELEGRAM_NAME = "Priya"
LONDON = ZoneInfo("Europe/London")
WORDS = load_wording()
CHAT_PAGE = load_interface()["page"]
START_WAIT = 120.0  # seconds for a process to come up on a busy 2-core machine
WAIT_MS = 60_000  # a page or a poll on a busy machine
DELIVERY_WAIT = 180.0  # a minute until the scheduled time, then the courier: a generous deadline
LAPTOP = {"width": 1280, "height": 800}
TABLET = {"width": 768, "height": 1024}
SIZES = {"laptop": LAPTOP, "tablet": TABLET}
BLOCKING_IMPACTS = {"serious", "critical"}
# The browser logs a refused sign-in (401) and the not-found page (404) as errors: those are meant.
EXPECTED_ERROR = re.compile(r"Failed to load resource: the server responded with a status of 40[14]")


# --- the running system --------------------------------------------------------------------------


def _http_json(method: str, url: str, body: Any = None, timeout: float = 30) -> Any:
    """One JSON request (the fake Bot API's control endpoints); the decoded answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


@dataclass
class System:
    """The console, web chat, delivery process and fake Bot API, with their addresses and logs."""

    data_dir: Path
    database_file: Path
    console_url: str
    web_url: str
    fake_url: str
    seeded: Dict[str, int]
    processes: Dict[str, subprocess.Popen] = field(default_factory=dict)

    def logs(self, lines: int = 40) -> str:
        """The last lines of every process's log, for a failure message."""
        parts = []
        for log in sorted(self.data_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def telegram_sent(self, chat_id: int) -> List[Dict[str, Any]]:
        """What the bot sent to chat_id (as the fake Bot API recorded it)."""
        return _http_json("GET", f"{self.fake_url}/_fake/sent?chat_id={chat_id}")

    def telegram_user_types(self, chat_id: int, text: str, first_name: str = "Sam") -> None:
        """The person in chat_id (with that first name on Telegram) types text (or a /command) to the bot."""
        _http_json("POST", f"{self.fake_url}/_fake/user/text",
                   {"chat_id": chat_id, "text": text, "first_name": first_name})

    def champion_id(self, channel: str, external_id: str) -> Optional[int]:
        """The app database's id for a champion, or None while there is none."""
        connection = sqlite3.connect(self.database_file, timeout=30)
        try:
            row = connection.execute("SELECT id FROM champions WHERE channel = ? AND external_id = ?",
                                     (channel, external_id)).fetchone()
        finally:
            connection.close()
        return row[0] if row else None


def _wait_until(what: str, probe: Callable[[], Any], timeout: float, system: Optional[System] = None,
                process: Optional[subprocess.Popen] = None) -> Any:
    """Poll probe() until it returns something truthy; fail (with the logs) at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            last = probe()
            if last:
                return last
        time.sleep(0.25)
    pytest.fail(f"gave up waiting for {what} (last seen: {last!r})\n{system.logs() if system else ''}")


async def _await_until(what: str, probe: Callable[[], Any], timeout: float, system: System) -> Any:
    """_wait_until for async tests: the probe runs in a thread, the event loop keeps going."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            last = await asyncio.to_thread(probe)
            if last:
                return last
        await asyncio.sleep(0.5)
    pytest.fail(f"gave up waiting for {what} (last seen: {last!r})\n{system.logs()}")


def _healthy(url: str) -> bool:
    """True when url answers 2xx."""
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.status < 300


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process (and its children, its own session), then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="module")
def system(tmp_path_factory) -> Iterator[System]:
    """Every process the console's messages pass through, started once for the module."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (scripts/browser-deps.sh installs it)")
    from bot.console.accounts import TeamAccounts
    from bot.db import make_engine, make_session_factory, migrate

    data_dir = tmp_path_factory.mktemp("console-browser")
    database_file = data_dir / "app.db"
    database_url = f"sqlite:///{database_file}"
    # No Rasa conversation store: the erasure and retention passes must not touch the repository's data/.
    endpoints = data_dir / "endpoints.yml"
    endpoints.write_text("tracker_store:\n  type: in_memory\n", encoding="utf-8")
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        sessions = make_session_factory(engine)
        TeamAccounts(sessions).create_member(USERNAME, PASSWORD)
        seeded = seed(sessions)  # the known sample of reflections (bench/reflection_sample.py)
    finally:
        engine.dispose()

    fake_port, web_port, console_port = free_port(), free_port(), free_port()
    fake_url = f"http://127.0.0.1:{fake_port}"
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), SQLALCHEMY_SILENCE_UBER_WARNING="1",
        DATA_DIR=str(data_dir), DATABASE_URL=database_url, RASA_URL="http://127.0.0.1:9", RASA_TIMEOUT_SECONDS="5",
        RASA_ENDPOINTS=str(endpoints), TELEGRAM_BOT_TOKEN=BOT_TOKEN, TELEGRAM_API_BASE_URL=f"{fake_url}/bot",
        TELEGRAM_MODE="polling", DELIVERY_POLL_SECONDS="0.5", REMINDER_TICK_SECONDS="1", TEAM_TOKEN="",
        PUBLIC_BASE_URL="", WEB_HOST="127.0.0.1", WEB_PORT=str(web_port),
        CONSOLE_HOST="127.0.0.1", CONSOLE_PORT=str(console_port), CONSOLE_SECURE_COOKIE="false",
    )
    commands = {
        "fake_telegram": ["-m", "bench.fake_telegram", "--port", str(fake_port), "--token", BOT_TOKEN],
        "web": ["-m", "bot.web"],
        "console": ["-m", "bot.console", "serve"],
        "delivery": ["-m", "bot.delivery"],
    }
    running = System(data_dir, database_file, f"http://127.0.0.1:{console_port}", f"http://127.0.0.1:{web_port}",
                     fake_url, seeded)
    try:
        for name, args in commands.items():
            with open(data_dir / f"{name}.log", "wb") as log:
                running.processes[name] = subprocess.Popen(
                    [PYTHON, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            if name == "fake_telegram":  # the delivery process needs it before it starts the bot
                _wait_until("the fake Bot API", lambda: _http_json("GET", f"{fake_url}/_fake/stats", timeout=3),
                            START_WAIT, running, running.processes[name])
        _wait_until("the web chat", lambda: _healthy(f"{running.web_url}/healthz"), START_WAIT, running,
                    running.processes["web"])
        _wait_until("the console", lambda: _healthy(f"{running.console_url}/healthz"), START_WAIT, running,
                    running.processes["console"])
        _wait_until("the delivery process polling the fake Bot API",
                    lambda: _http_json("GET", f"{fake_url}/_fake/stats")["requests"].get("getUpdates", 0) >= 1,
                    START_WAIT, running, running.processes["delivery"])
        yield running
    finally:
        for process in reversed(list(running.processes.values())):
            _stop(process)


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where the screenshots go: SCREENSHOT_DIR, or a temporary directory."""
    chosen = os.environ.get("SCREENSHOT_DIR")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- helpers -------------------------------------------------------------------------------------


async def new_page(browser, size: Dict[str, int] = LAPTOP):
    """A fresh browser (its own cookies) at size; errors in the page's console are recorded."""
    context = await browser.new_context(viewport=size, accept_downloads=True, locale="en-GB",
                                        timezone_id="Europe/London")
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and not EXPECTED_ERROR.match(msg.text)
            and page.console_errors.append(msg.text))
    return page


async def sign_in(page, system: System) -> None:
    """Fill in the sign-in form and land on the start page."""
    from playwright.async_api import expect

    await page.goto(f"{system.console_url}/sign-in")
    await page.get_by_label("Username").fill(USERNAME)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Team console")


def london_minute_ahead(least_seconds: float = 20.0) -> datetime:
    """The next whole minute in London that is at least least_seconds away (what a person would type)."""
    now = datetime.now(LONDON)
    target = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    if (target - now).total_seconds() < least_seconds:
        target += timedelta(minutes=1)
    return target


def champion_row(page, champion_id: int):
    """The champions table's row for the champion with that number."""
    number = page.locator("td:nth-child(3)", has_text=re.compile(rf"^{champion_id}$"))
    return page.locator("tbody tr", has=number)


def sent_count(page):
    """The "Sent" figure in a message's delivery table."""
    return page.locator("tr", has=page.locator("th", has_text=re.compile(r"^Sent$"))).locator("td")


async def reload_until(page, locator, text: str, timeout: float, system: System) -> None:
    """Reload the page (as the notice says to) until locator shows text."""
    deadline = time.monotonic() + timeout
    while True:
        if (await locator.inner_text()).strip() == text:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{page.url} never showed {text!r} (last: {await locator.inner_text()!r})\n{system.logs()}")
        await asyncio.sleep(2)
        await page.reload()


# --- 1. a scheduled message reaches Telegram and the web chat; the CSV download -----------------


async def test_schedule_a_message_to_a_group_and_see_it_arrive(browser, system, tmp_path):
    """Sign in, group a Telegram and a web chat champion, schedule a message for a minute ahead:
    it reaches both (live on the open chat page), the report says so, and the CSV downloads."""
    from playwright.async_api import expect

    # A champion on Telegram: they press Start (the bot knows them even with Rasa down).
    await asyncio.to_thread(system.telegram_user_types, TELEGRAM_CHAT, "/start", TELEGRAM_NAME)
    telegram_id = await _await_until("the Telegram champion",
                                     lambda: system.champion_id("telegram", str(TELEGRAM_CHAT)), 60, system)
    # A champion on the web chat: the page is open on their phone and they say hello.
    chat_context = await browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    chat_context.set_default_timeout(WAIT_MS)
    chat = await chat_context.new_page()
    await chat.goto(system.web_url)
    await chat.wait_for_selector("body[data-ready=true]")
    box = chat.get_by_role("textbox", name=CHAT_PAGE["input_label"])
    await box.fill("hello")
    await box.press("Enter")
    await expect(chat.locator(".msg--in .msg__text").last).to_have_text("hello")
    sender = await chat.evaluate("localStorage.getItem('coproduction-companion.sender-id')")
    web_id = await _await_until("the web chat champion", lambda: system.champion_id("web", sender), 60, system)

    page = await new_page(browser)
    await sign_in(page, system)

    # A new group, and both champions in it.
    await page.get_by_role("link", name="Champions and groups").first.click()
    await page.get_by_label("Kind").select_option("cohort")
    await page.get_by_label("Name", exact=True).fill("Browser test cohort")
    await page.get_by_role("button", name="Make group").click()
    await expect(page.get_by_role("status")).to_have_text(WORDS["notices"]["group_created"])
    await expect(champion_row(page, telegram_id)).to_contain_text(TELEGRAM_NAME)  # their Telegram first name
    await champion_row(page, telegram_id).get_by_role("checkbox").check()
    await champion_row(page, web_id).get_by_role("checkbox").check()
    await page.get_by_label("Group", exact=True).select_option(label="cohort: Browser test cohort (0)")
    await page.get_by_role("button", name="Add to group").click()
    await expect(page.get_by_role("status")).to_have_text(WORDS["notices"]["group_add"])
    await expect(page.get_by_label("Group", exact=True).locator("option", has_text="Browser test cohort")).to_have_text(
        "cohort: Browser test cohort (2)")

    # Write the message, for a minute or so ahead (London time, as the form says).
    text = "Browser test: the papers for Thursday's panel are out & ready"
    await page.get_by_role("link", name="Messages").first.click()
    await page.get_by_label("A group").check()
    await page.get_by_label("Group", exact=True).select_option(label="cohort: Browser test cohort (2)")
    await page.get_by_role("textbox", name=re.compile(r"^Message \(")).fill(text)
    await page.get_by_label("Send later").check()
    when = london_minute_ahead()
    await page.get_by_label("Date and time (London)").fill(when.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="Preview").click()

    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your message")
    await expect(page.locator(".bubble")).to_have_text(text)
    reach = page.locator(".facts div", has_text="Champions it will reach now").locator("dd")
    await expect(reach).to_have_text(re.compile(r"^2\b"))
    await expect(reach).to_contain_text("Telegram: 1")
    await expect(reach).to_contain_text("web chat: 1")
    when_shown = page.locator(".facts div", has=page.locator("dt", has_text=re.compile(r"^When$"))).locator("dd")
    await expect(when_shown).to_have_text(format_when(when.astimezone(timezone.utc)))
    await page.get_by_role("button", name="Schedule it").click()

    await expect(page.get_by_role("status")).to_have_text(WORDS["notices"]["scheduled"])
    await expect(page.locator(".bubble")).to_have_text(text)
    assert re.search(r"/messages/\d+\?notice=scheduled$", page.url), page.url
    report_url = page.url.split("?")[0]

    # It arrives on Telegram (not before its time)...
    def on_telegram():
        """The copies of the message the Telegram champion has."""
        return [m for m in system.telegram_sent(TELEGRAM_CHAT) if m["plain"] == text]

    arrived = await _await_until("the message on Telegram", on_telegram, DELIVERY_WAIT, system)
    assert len(arrived) == 1
    assert arrived[0]["at"] >= when.timestamp() - 1, "sent before the time it was scheduled for"
    # ... and on the open web chat page, without a reload, once.
    await chat.bring_to_front()
    pushed = chat.locator(".msg--out .msg__text", has_text="Browser test: the papers")
    await expect(pushed).to_have_count(1, timeout=90_000)
    assert await pushed.inner_text() == text
    # The report says both went.
    await page.bring_to_front()
    await page.goto(report_url)
    await reload_until(page, sent_count(page), "2", 90, system)
    await reload_until(page, page.locator("h1 .status"), "sent", 60, system)  # marked once nothing waits

    # The reflections as a spreadsheet: shared ones only.
    await page.get_by_role("link", name="What champions tell us").first.click()
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download these as a spreadsheet (CSV)").click()
    download = await download_info.value
    assert download.suggested_filename == "reflections.csv"
    saved = tmp_path / "reflections.csv"
    await download.save_as(saved)
    rows = list(csv.reader(io.StringIO(saved.read_bytes().decode("utf-8-sig"))))
    everything = " ".join(cell for row in rows for cell in row)
    assert len(rows) > 1 and "Patients' stories changed the plan." in everything
    for secret in ("SECRET", "UNANSWERED", "ERASED"):
        assert secret not in everything

    # The audit log has it all, with who.
    await page.get_by_role("link", name="Audit log").first.click()
    log_text = await page.locator("table").inner_text()
    for action in ("group create", "group add", "message schedule", "reflections export csv"):
        assert re.search(rf"{USERNAME}\s+{action}", log_text), (action, log_text)
    assert page.console_errors == [], page.console_errors
    await chat_context.close()
    await page.context.close()


# --- 2 and 4. axe-core on every page, at laptop and tablet sizes; screenshots --------------------


def _describe(violation: Dict[str, Any]) -> str:
    """One violation in a few lines: rule, impact, help and where."""
    where = "; ".join(", ".join(map(str, node["target"])) for node in violation["nodes"][:6])
    return f"{violation['id']} ({violation['impact']}): {violation['help']} [{len(violation['nodes'])}x: {where}]"


@pytest.mark.parametrize("size_name", list(SIZES))
async def test_every_console_page_passes_axe(browser, system, screenshot_dir, size_name):
    """axe-core finds nothing serious or critical on any console page; nothing sticks out sideways."""
    from axe_playwright_python.async_playwright import Axe
    from playwright.async_api import expect

    size = SIZES[size_name]
    axe = Axe()
    page = await new_page(browser, size)
    findings: Dict[str, List[Dict[str, Any]]] = {}
    review: Dict[str, List[Dict[str, Any]]] = {}  # what axe could not decide: for a person to look at
    overflow: List[str] = []

    async def check(name: str) -> None:
        """Run axe-core on the page as it is, note any sideways overflow, and take a screenshot."""
        await page.wait_for_load_state("load")
        results = (await axe.run(page, options={"resultTypes": ["violations", "incomplete"]})).response
        assert results["passes"], f"axe-core checked nothing on {name}"
        findings[name] = results["violations"]
        review[name] = results["incomplete"]
        width = await page.evaluate("document.documentElement.scrollWidth")
        if width > size["width"]:
            overflow.append(f"{name}: {width}px wide")
        await page.screenshot(path=str(screenshot_dir / f"{size_name}-{name}.png"), full_page=True)

    await page.goto(f"{system.console_url}/sign-in")
    await check("sign-in")
    # A wrong password (for a name nobody has, so no one is locked out) shows the error.
    await page.get_by_label("Username").fill("nobody")
    await page.get_by_label("Password").fill("not the password at all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text(WORDS["sign_in"]["wrong"])
    await check("sign-in-refused")

    await sign_in(page, system)
    await check("start")
    await page.goto(f"{system.console_url}/champions")
    await check("champions")
    await page.goto(f"{system.console_url}/messages")
    await check("messages")
    await page.get_by_label("Every champion").check()
    message_box = page.get_by_role("textbox", name=re.compile(r"^Message \("))
    await message_box.fill("Axe check: the panel meets on Thursday 26 November at 2pm.")
    await page.get_by_label("Send later").check()
    await page.get_by_label("Date and time (London)").fill("2099-11-26T14:00")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your message")
    await check("preview")
    await page.get_by_role("button", name="Schedule it").click()
    await expect(page.get_by_role("status")).to_have_text(WORDS["notices"]["scheduled"])
    await check("message-report")
    await page.goto(f"{system.console_url}/reflections?from=1/11/2026&to=30/11/2026")
    await expect(page.locator(".report svg").first).to_be_visible()
    await check("reflections")
    await page.goto(f"{system.console_url}/audit")
    await check("audit")
    await page.goto(f"{system.console_url}/no-such-page")
    await check("not-found")

    blocking = []
    print(f"\naxe-core at {size_name} size ({size['width']}x{size['height']}); screenshots in {screenshot_dir}")
    for name, violations in findings.items():
        for violation in violations:
            print(f"  {name}: {_describe(violation)}")
            if violation["impact"] in BLOCKING_IMPACTS:
                blocking.append(f"{name}: {_describe(violation)}")
        if not violations:
            print(f"  {name}: no violations")
        for item in review[name]:
            print(f"  {name}, to check by eye: {_describe(item)}")
    assert blocking == [], "\n".join(blocking)
    assert overflow == [], overflow
    assert page.console_errors == [], page.console_errors
    await page.context.close()


# --- 3. the keyboard alone -----------------------------------------------------------------------


async def focused(page) -> Dict[str, str]:
    """What has the keyboard focus: tag, id, type, and its text or accessible label."""
    return await page.evaluate(
        """() => { const e = document.activeElement; return {
             tag: e.tagName.toLowerCase(), id: e.id || "", type: e.getAttribute("type") || "",
             text: (e.innerText || e.value || "").trim(), href: e.getAttribute("href") || "" }; }""")


async def tab_to(page, matches: Callable[[Dict[str, str]], bool], what: str, most: int = 40) -> Dict[str, str]:
    """Press Tab until the focused element matches (failing after `most` presses)."""
    seen = []
    for _ in range(most):
        await page.keyboard.press("Tab")
        now = await focused(page)
        if matches(now):
            return now
        seen.append(now.get("id") or now.get("text") or now.get("tag"))
    pytest.fail(f"Tab never reached {what}; it went through {seen}")


async def test_the_console_works_by_keyboard(browser, system):
    """Tab order on the sign-in form, the skip link, and composing and sending a message by keyboard."""
    from playwright.async_api import expect

    page = await new_page(browser)
    await page.goto(f"{system.console_url}/sign-in")
    # The first Tab shows the skip link; Enter moves the focus to the main content.
    await page.keyboard.press("Tab")
    assert (await focused(page))["text"] == "Skip to main content"
    skip = page.get_by_role("link", name="Skip to main content")
    box = await skip.bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["width"] > 1  # visible while focused
    await page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    assert (await focused(page))["id"] == "main"
    # Then username, password and the button, in that order.
    await page.keyboard.press("Tab")
    assert (await focused(page))["id"] == "username"
    await page.keyboard.type(USERNAME)
    await page.keyboard.press("Tab")
    assert (await focused(page))["id"] == "password"
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Tab")
    now = await focused(page)
    assert (now["tag"], now["text"]) == ("button", "Sign in")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Team console")

    # To the messages page by the menu.
    await tab_to(page, lambda f: f["href"] == "/messages", "the Messages link")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Messages")
    # Skip the menu, then: one champion (arrow keys within the choices), their number, the text.
    await page.keyboard.press("Tab")
    assert (await focused(page))["text"] == "Skip to main content"
    await page.keyboard.press("Enter")
    await tab_to(page, lambda f: f["id"] == "to-everyone", "the first recipient choice")
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("ArrowDown")
    await expect(page.get_by_label("One champion")).to_be_checked()
    await tab_to(page, lambda f: f["id"] == "champion", "the champion's number")
    await page.keyboard.type(str(system.seeded["ben"]))  # a web chat champion from the sample
    await tab_to(page, lambda f: f["id"] == "text", "the message box")
    text = "Keyboard test: thank you for coming on Tuesday."
    await page.keyboard.type(text)
    await tab_to(page, lambda f: f["tag"] == "button" and f["text"] == "Preview", "the Preview button")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Check your message")
    await expect(page.locator(".bubble")).to_have_text(text)
    # Space on "Send it now".
    await tab_to(page, lambda f: f["tag"] == "button" and f["text"] == "Send it now", "Send it now")
    await page.keyboard.press("Space")
    await expect(page.get_by_role("status")).to_have_text(WORDS["notices"]["sending"])
    await reload_until(page, sent_count(page), "1", 90, system)
    assert page.console_errors == [], page.console_errors
    await page.context.close()
