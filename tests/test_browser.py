"""The chat page in a real browser (headless Chromium): typing, buttons, reloads and markup safety."""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from bot.web import build_app, load_interface

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2,
         "is_mobile": True, "has_touch": True}
WAIT_MS = 60_000  # a live reply can be slow on a busy 2-core machine
PAGE = load_interface()["page"]
TROUBLE = load_interface()["replies"]["trouble"]
MARKUP = "<b>bold</b><script>alert(1)</script>"
# Screenshots for a person to look at: set SCREENSHOT_DIR to keep them.
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR")


@pytest_asyncio.fixture
async def browser():
    """Debian's Chromium driven by Playwright (the test is skipped where it is not installed)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (scripts/browser-deps.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


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
