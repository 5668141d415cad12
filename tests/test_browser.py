"""The chat page in a real browser (headless Chromium): typing, buttons, reloads and markup safety."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from bot.web import build_app, load_interface

pytestmark = pytest.mark.browser

PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
WAIT_MS = 60_000  # a live reply can be slow on a busy 2-core machine
PAGE = load_interface()["page"]
TROUBLE = load_interface()["replies"]["trouble"]
MARKUP = "<b>bold</b><script>alert(1)</script>"
# Screenshots for a person to look at: set SCREENSHOT_DIR to keep them.
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR")


async def open_chat(browser, url):
    """A phone-sized page on the chat, loaded and ready; dialogs (e.g. alert) are recorded."""
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    await page.goto(url)
    await page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    return page


async def send_and_wait(page, text):
    """Type text, press Enter, and return the companion messages that answer it."""
    from playwright.async_api import expect

    outs = page.locator(".msg--out .msg__text")
    before = await outs.count()
    box = page.get_by_role("textbox", name=PAGE["input_label"])
    await box.fill(text)
    await box.press("Enter")
    await expect(page.locator(".msg--in .msg__text").last).to_have_text(text, timeout=WAIT_MS)
    await expect(page.locator("#typing-text")).to_be_hidden(timeout=WAIT_MS)
    return [await outs.nth(i).inner_text() for i in range(before, await outs.count())]


async def tap_first_button(page):
    """Tap the first button under the latest reply; return (its title, the new companion messages)."""
    from playwright.async_api import expect

    choice = page.locator(".choices .choice").first
    await expect(choice).to_be_visible(timeout=WAIT_MS)
    title = await choice.inner_text()
    outs = page.locator(".msg--out .msg__text")
    before = await outs.count()
    await choice.tap()
    await expect(page.locator(".msg--in .msg__text").last).to_have_text(title, timeout=WAIT_MS)
    await expect(page.locator("#typing-text")).to_be_hidden(timeout=WAIT_MS)
    return title, [await outs.nth(i).inner_text() for i in range(before, await outs.count())]


async def check_accessibility_basics(page):
    """The text box has a label, the transcript is a polite live log, and tap targets are big."""
    box = page.get_by_role("textbox", name=PAGE["input_label"])
    assert await box.count() == 1
    assert await page.evaluate("document.getElementById('message').labels.length") == 1
    log = page.get_by_role("log")
    assert await log.get_attribute("aria-live") == "polite"
    send = page.get_by_role("button", name=PAGE["send"])
    assert (await send.bounding_box())["height"] >= 44
    # Nothing sticks out sideways at 360 px.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360


async def check_markup_is_text(page):
    """Markup typed by a person shows as literal text; no element is made and no script runs."""
    await send_and_wait(page, MARKUP)
    bubble = page.locator(".msg--in .msg__text").last
    assert await bubble.inner_text() == MARKUP
    assert await bubble.evaluate("el => el.children.length") == 0
    assert await page.locator("#transcript b").count() == 0
    assert await page.locator("#transcript script").count() == 0
    assert page.dialogs == []


async def shot(page, name):
    """Keep a screenshot when SCREENSHOT_DIR is set."""
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{name}.png"), full_page=True)


async def test_page_with_fake_rasa(browser, app_settings, fake_rasa):
    """The whole page flow against a stand-in Rasa: no trained model needed."""
    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url)
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/"))
        page = await open_chat(browser, url)
        await check_accessibility_basics(page)
        # A first visit shows the welcome with its buttons (not stored).
        assert await page.locator(".msg--out .msg__text").first.inner_text() == PAGE["welcome"]
        await shot(page, "fake-1-welcome")

        replies = await send_and_wait(page, "line one\nline two")
        assert replies == ["You said: line one\nline two", "Anything else?"]
        assert await page.evaluate("document.activeElement.id") == "message"
        white_space = await page.locator(".msg--in .msg__text").last.evaluate(
            "el => getComputedStyle(el).whiteSpace")
        assert white_space == "pre-wrap"

        title, replies = await tap_first_button(page)
        assert title == "Tell me more" and replies == ["You chose /tell_me_more"]
        assert fake_rasa.requests[-1]["message"] == "/tell_me_more"
        assert await page.evaluate("document.activeElement.id") == "message"

        # Too long: the companion asks to shorten it and the words go back in the box.
        long_text = "x" * (settings.max_message_chars + 1)
        box = page.get_by_role("textbox", name=PAGE["input_label"])
        await box.fill(long_text)
        await box.press("Enter")
        from playwright.async_api import expect

        await expect(page.locator(".msg--out .msg__text").last).to_have_text(
            load_interface()["replies"]["too_long"], timeout=WAIT_MS)
        assert await box.input_value() == long_text
        await box.fill("")

        await check_markup_is_text(page)
        await shot(page, "fake-2-conversation")

        # A reload (same browser storage) brings the conversation back.
        await page.reload()
        await page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        ins = await page.locator(".msg--in .msg__text").all_inner_texts()
        assert ins == ["line one\nline two", "Tell me more", MARKUP]
        assert await page.locator("#transcript b").count() == 0
        assert page.dialogs == [] and page.console_errors == []
        await shot(page, "fake-3-reloaded")
    finally:
        await server.close()


async def test_live_chat(browser, live_stack):
    """The real assistant: a question, a button, a reload, and markup shown as text."""
    page = await open_chat(browser, live_stack.web_url)
    await check_accessibility_basics(page)

    replies = await send_and_wait(page, "what is co-production?")
    assert replies and TROUBLE not in replies, replies
    assert re.search(r"co-?production", " ".join(replies), re.IGNORECASE), replies

    title, replies = await tap_first_button(page)
    assert replies and TROUBLE not in replies, (title, replies)
    await shot(page, "live-1-conversation")

    await page.reload()
    await page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    ins = await page.locator(".msg--in .msg__text").all_inner_texts()
    assert ins[:2] == ["what is co-production?", title]
    assert await page.locator(".msg--out .msg__text").count() >= 2

    await check_markup_is_text(page)
    await shot(page, "live-2-markup")


# --- messages the assistant sends on its own -----------------------------------------------------

PUSH_WAIT_MS = 15_000  # the page looks every 3 seconds while visible
SENDER_KEY = "coproduction-companion.sender-id"


class Pusher:
    """Sends a message to a web champion the way the delivery process does: outbox, then the courier."""

    def __init__(self, database_url: str) -> None:
        """Open the web chat's database (already migrated by the running web app)."""
        from bot.db import make_engine, make_session_factory

        self.engine = make_engine(database_url)
        self.sessions = make_session_factory(self.engine)

    async def push(self, sender_id: str, text: str, buttons=None) -> None:
        """Queue text for the web champion sender_id and deliver it with one courier pass."""
        from bot.delivery import Courier, WebSender
        from bot.outbox import OutboxRepository
        from bot.repository import ChatRepository

        champion = ChatRepository(self.sessions).get_or_create_champion("web", sender_id)
        outbox = OutboxRepository(self.sessions)
        outbox.enqueue(champion.id, text, kind="broadcast", source_key=f"browser-test:{sender_id}:{text}",
                       buttons=buttons)
        courier = Courier(self.sessions, {"web": WebSender(outbox)})
        assert await courier.run_once() == 1

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()


async def history_polls(page, count: int) -> None:
    """Wait until the page has asked for new messages `count` more times (each after the last)."""
    for _ in range(count):
        async with page.expect_response(lambda r: "/api/history" in r.url and "after=" in r.url,
                                        timeout=PUSH_WAIT_MS):
            pass


async def texts_of(page, selector=".msg--out .msg__text"):
    """Every text shown for selector, in order."""
    return await page.locator(selector).all_inner_texts()


async def test_pushed_messages_appear_live_exactly_once(browser, app_settings, fake_rasa):
    """A message the team sends shows up on the open page without a reload, once, read out as new;
    one sent while the page was closed is there when it opens again."""
    from playwright.async_api import expect

    settings = dataclasses.replace(app_settings, rasa_url=fake_rasa.url)
    server = TestServer(build_app(settings), host="127.0.0.1")
    await server.start_server()
    pusher = Pusher(settings.database_url)
    try:
        page = await open_chat(browser, str(server.make_url("/")))
        sender = await page.evaluate(f"localStorage.getItem('{SENDER_KEY}')")
        # A first visit asks which organisation they volunteer with, with the file's choices.
        assert PAGE["welcome"] in await texts_of(page)
        assert "Leeds" in await page.locator(".choices .choice").all_inner_texts()

        replies = await send_and_wait(page, "hello")
        assert replies == ["You said: hello", "Anything else?"]

        news = "Patient Reference Group meets Thursday at 2pm <b>papers</b> are out"
        await pusher.push(sender, news, [{"title": "Thanks", "payload": "/thank"}])
        pushed = page.locator(".msg--out .msg__text", has_text="Patient Reference Group")
        await expect(pushed).to_have_count(1, timeout=PUSH_WAIT_MS)
        assert await pushed.inner_text() == news
        assert await page.locator("#transcript b").count() == 0
        # Announced by the polite live log, labelled as a new message for screen readers.
        label = pushed.locator("xpath=..").locator(".visually-hidden")
        assert await label.inner_text() == PAGE["new_message"]
        assert await page.locator("[role=log][aria-live=polite] .msg").last.text_content() == PAGE["new_message"] + news
        # Its button replaces the older reply's ones.
        assert await page.locator(".choices .choice").all_inner_texts() == ["Thanks"]
        await shot(page, "push-1-live")

        # Later polls add nothing: no second copy, and the POST replies were never repeated.
        await history_polls(page, 2)
        outs = await texts_of(page)
        assert outs.count(news) == 1 and outs.count("You said: hello") == 1 and outs.count("Anything else?") == 1
        assert await texts_of(page, ".msg--in .msg__text") == ["hello"]

        # Replying after a push: the reply comes once, and the push stays once.
        replies = await send_and_wait(page, "thanks")
        assert replies == ["You said: thanks", "Anything else?"]
        await history_polls(page, 1)
        outs = await texts_of(page)
        assert outs.count(news) == 1 and outs.count("You said: thanks") == 1

        # Offline, the page keeps quiet (no error in the conversation) and tries again more slowly;
        # back online, it catches up at once.
        context = page.context
        await context.set_offline(True)
        await page.wait_for_timeout(7_000)  # a couple of failed looks
        await pusher.push(sender, "Sent while you were offline")
        await context.set_offline(False)
        await expect(page.locator(".msg--out .msg__text", has_text="Sent while you were offline")).to_have_count(
            1, timeout=PUSH_WAIT_MS)
        assert TROUBLE not in await texts_of(page)
        assert load_interface()["page"]["offline"] not in await texts_of(page)

        # A message sent while the page is closed is waiting when it opens (same browser storage).
        await page.close()
        await pusher.push(sender, "Papers for Thursday: please read pages 4-9")
        page = await context.new_page()
        await page.goto(str(server.make_url("/")))
        await page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        outs = await texts_of(page)
        assert outs.count("Papers for Thursday: please read pages 4-9") == 1 and outs.count(news) == 1
        assert PAGE["welcome"] not in outs
        await history_polls(page, 1)
        assert (await texts_of(page)).count("Papers for Thursday: please read pages 4-9") == 1
        await shot(page, "push-2-reopened")
    finally:
        pusher.close()
        await server.close()
