"""Companion messages rendered for Telegram: escaped HTML, light formatting, parts below the limit, keyboards."""
from __future__ import annotations

from typing import List

import pytest

from bench.fake_telegram import parse_html
from bot.db import make_session_factory
from bot.telegram_format import (
    CALLBACK_PREFIX,
    CallbackRepository,
    load_wording,
    render,
    split_html,
    utf16_len,
)

NEVER = lambda payload: pytest.fail(f"stored a short payload: {payload}")  # noqa: E731


def _visible(parts) -> List[str]:
    """What the champion sees of each part, checked the way Telegram parses HTML."""
    return [parse_html(text) for text, _ in parts]


def test_everything_is_escaped_and_our_formatting_rendered() -> None:
    """Markup and entities in the text show literally; **bold**, bullets and links are rendered."""
    text = "<script>alert(1)</script> & &amp; <b>x</b> **Step 3** matters\n- first\n* second\n• third\n[NHS 111](https://111.nhs.uk/?a=1&b=2)"
    [(html, markup)] = render(text, None, NEVER)
    assert markup is None
    assert html == (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &amp;amp; &lt;b&gt;x&lt;/b&gt; <b>Step 3</b> matters\n"
        "• first\n• second\n• third\n"
        '<a href="https://111.nhs.uk/?a=1&amp;b=2">NHS 111</a>'
    )
    assert _visible([(html, None)]) == [
        "<script>alert(1)</script> & &amp; <b>x</b> Step 3 matters\n• first\n• second\n• third\nNHS 111"
    ]
    # Unclosed or odd markers stay as typed; a javascript: "link" is not a link.
    [(odd, _)] = render("2 ** 3 = 8, **not closed, [x](javascript:alert(1))", None, NEVER)
    assert parse_html(odd) == "2 ** 3 = 8, **not closed, [x](javascript:alert(1))"
    assert "<a" not in odd


def test_long_text_splits_at_paragraphs_then_lines_then_words() -> None:
    """A 10,000-character answer becomes parts below 4,096 characters, cut between paragraphs."""
    paragraphs = [f"Paragraph {n}: " + "equal partners from the start " * 12 for n in range(30)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    assert len(text) > 10000
    parts = split_html(text)
    assert len(parts) == 3
    assert all(utf16_len(p) < 4096 for p in parts)
    assert all(p.startswith("Paragraph") and p.endswith("start") for p in parts)
    assert "\n\n".join(parts) == text
    lines = split_html("\n".join(p.strip() for p in paragraphs))
    assert all(p.startswith("Paragraph") for p in lines) and len(lines) == 3
    words = split_html("word " * 3000)
    assert all(utf16_len(p) <= 4000 and p.startswith("word") and p.endswith("word") for p in words)


def test_entities_tags_emoji_and_huge_words_are_never_cut() -> None:
    """Escaped characters, bold spans and emoji survive splitting intact; a giant word is cut between characters."""
    for text in ("&<>" * 4000, "😀" * 5000, "**bold words here** " * 600, "x" * 9000, "Привет " * 2000):
        parts = split_html(text)
        assert len(parts) > 1
        assert all(utf16_len(p) <= 4000 for p in parts)
        seen = "".join(parse_html(p) for p in parts)  # raises if a tag or an entity was cut
        assert seen.replace(" ", "") == text.replace("**", "").replace(" ", "")


def test_keyboard_is_on_the_last_part_one_button_per_row() -> None:
    """Buttons become an inline keyboard on the last part only, one button per row."""
    buttons = [{"title": "Tell me more", "payload": "/tell_me_more"}, {"title": "Step 1 ✨", "payload": "/ask_step_1"}]
    parts = render("A long answer. " * 700, buttons, NEVER)
    assert len(parts) == 3
    assert [markup is None for _, markup in parts] == [True, True, False]
    rows = parts[-1][1].inline_keyboard
    assert [[(b.text, b.callback_data) for b in row] for row in rows] == [
        [("Tell me more", "/tell_me_more")], [("Step 1 ✨", "/ask_step_1")]
    ]
    # Buttons without words still need a line of text; nothing at all sends nothing.
    [(text, markup)] = render("  ", buttons, NEVER)
    assert text == load_wording()["replies"]["buttons_only"] and markup is not None
    assert render("", None, NEVER) == []


def test_payloads_over_64_bytes_use_short_keys_and_links_need_a_public_address() -> None:
    """callback_data is the payload up to 64 bytes (UTF-8), else a stored key; download links only
    become buttons when a public address is configured."""
    stored = {}

    def store(payload: str) -> str:
        stored[payload] = f"{CALLBACK_PREFIX}{len(stored)}"
        return stored[payload]

    exactly_64 = "/" + "a" * 63
    accented = "/" + "é" * 32  # 33 characters, 65 bytes
    buttons = [
        {"title": "fits", "payload": exactly_64},
        {"title": "too long in bytes", "payload": accented},
        {"title": "Download my plan", "url": "/api/plan.md?sender_id=x&project=1"},
    ]
    [(_, markup)] = render("Choose", buttons, store)
    assert [row[0].callback_data for row in markup.inline_keyboard] == [exactly_64, "cb:0"]
    assert stored == {accented: "cb:0"}
    [(_, markup)] = render("Choose", buttons, store, public_base_url="https://companion.example.org/app/")
    assert markup.inline_keyboard[-1][0].url == "https://companion.example.org/api/plan.md?sender_id=x&project=1"


def test_long_payloads_are_stored_once_and_found_after_a_restart(engine) -> None:
    """The callbacks table keeps each long payload once under a stable key, across repository instances."""
    payload = '/inform{"note": "' + "ünïcode and a long note " * 10 + '"}'
    first = CallbackRepository(make_session_factory(engine))
    key = first.store(payload)
    assert key.startswith(CALLBACK_PREFIX) and len(key.encode()) <= 64
    assert first.store(payload) == key
    assert CallbackRepository(make_session_factory(engine)).store(payload) == key  # no duplicate row
    fresh = CallbackRepository(make_session_factory(engine))
    assert fresh.resolve(key) == payload
    assert fresh.resolve("/ask_five_steps") == "/ask_five_steps"
    assert fresh.resolve(CALLBACK_PREFIX + "unknown") is None
