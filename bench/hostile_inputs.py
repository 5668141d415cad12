"""A deterministic suite of hostile and odd inputs for every way into the assistant (issue 7, "Bad input").

Three kinds of case, all generated from fixed lists plus a seeded random mix (the same seed gives
the same cases, in the same order, on every machine):

- ``text_cases()``: what a person might type (or a script might send) as a chat message: empty and
  whitespace-only, 4,096 and 100,000 characters, emoji, right-to-left and CJK text, control
  characters, null bytes, lone surrogates, zero-width and combining characters, very long words,
  nested brackets, SQL, HTML, script and template injection, CRLF and path traversal, huge
  numbers, Rasa-looking payloads (``/crisis``, ``/ask_acronym{"acronym":"<script>"}``,
  ``/EXTERNAL_...``, giant entity JSON, intents that exist but were never offered as buttons).
  Each is sent as a web chat message, to Rasa's REST channel and as a Telegram message.
- ``web_http_cases()``: raw HTTP requests to every endpoint of the web chat (bot/web.py,
  bot/plan_download.py, bot/my_data_download.py, the static files): malformed JSON, wrong content
  types, wrong methods, missing, mistyped and oversized fields, odd query strings, invalid UTF-8.
- ``rest_http_cases()``: the same kind of raw requests to Rasa's REST channel.

``telegram_callback_cases()`` are button payloads a Telegram client could send that were never
offered. ``python -m bench.hostile_inputs`` prints the counts per category;
``python -m bench.hostile_inputs --timed`` runs tests/test_hostile_input.py against the whole stack
and prints the reply times per channel against issue 7's target (every reply within 2 seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import quote

SEED = 20261107
# The web chat's default MAX_MESSAGE_CHARS (bot/settings.py); tests pass the running value.
DEFAULT_MAX_CHARS = 2000
HUGE = 100_000
TARGET_SECONDS = 2.0  # issue 7: every reply within 2 seconds
TELEGRAM_MAX = 4096

# Intents of the domain (domain/*.yml) and Rasa's own defaults, as a script would send them.
INTENTS = (
    "greet", "goodbye", "thank", "help", "bot_challenge", "out_of_scope", "abuse", "medical_question",
    "crisis", "tell_me_more", "affirm", "deny", "choose_organisation", "skip_organisation",
    "ask_engagement_team", "opt_out_messages", "opt_in_messages", "list_pledges", "pledge_done",
    "check_in_answer", "check_in_when", "ask_acronym", "ask_glossary_help", "ask_what_is_coproduction",
    "ask_levels", "ask_ladder", "ask_five_steps", "ask_step_1", "ask_step_5", "my_data", "reflect",
    "make_pledge", "set_reminder", "list_reminders", "cancel_reminder", "snooze_reminder", "cant_attend",
    "set_time_zone", "start_walkthrough", "continue_walkthrough", "new_project", "show_plan",
    "edit_answer", "pause_walkthrough", "skip_question", "go_back",
    # Rasa's defaults, and things that are not intents at all
    "restart", "session_start", "back", "out_of_scope", "nlu_fallback", "action_listen",
    "action_restart", "utter_greet", "EXTERNAL_reminder", "EXTERNAL_checkin", "no_such_intent",
)
# Entities the domain's forms and actions read, with hostile values.
ENTITIES = (
    "acronym", "organisation", "fs_project", "fs_step", "fs_question", "my_data_choice", "tz_zone",
    "rm_meeting", "rm_reminder", "rm_scope", "rm_snooze", "ci_id", "ci_pledge", "ci_answer", "ci_when",
    "rf_meeting", "requested_slot", "session_started_metadata",
)
# The intents whose buttons carry a row id, with the entity that holds it (knowledge/*.yml, actions/).
ID_PAYLOADS = (
    ("show_plan", "fs_project"), ("continue_walkthrough", "fs_project"), ("cancel_reminder", "rm_meeting"),
    ("cant_attend", "rm_meeting"), ("set_reminder", "rm_meeting"), ("snooze_reminder", "rm_reminder"),
    ("check_in_answer", "ci_id"), ("check_in_when", "ci_id"), ("check_in_answer", "ci_pledge"),
    ("pledge_done", "ci_pledge"), ("reflect", "rf_meeting"), ("edit_answer", "fs_step"),
)
# Ids no table holds: negative, zero, beyond 32 and 64 bits, not numbers at all.
BAD_IDS = ("-1", "0", "2147483648", "9223372036854775808", "99999999999999999999999", "1e309", "1 OR 1=1",
           "../../x", "", " 7 ", "0x10", "NaN")

SQL = (
    "' OR '1'='1", "'; DROP TABLE champions; --", "\"; DROP TABLE chat_messages; --",
    "1; DELETE FROM telegram_callbacks WHERE 1=1", "' UNION SELECT external_id, text FROM chat_messages --",
    "admin'--", "1' AND SLEEP(5)--", "'; SELECT pg_sleep(5); --", "%' OR 1=1 OR '%'='",
    "Robert'); DROP TABLE students;--", "') OR ('a'='a", "\\'; TRUNCATE events; --",
    "1 OR 1=1", "' || (SELECT sqlite_version()) || '", "$$; DROP TABLE events; $$",
)
HTML = (
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg/onload=alert(1)>",
    "<b>bold</b> <i>it</i>", "</p><h1>big</h1>", "<a href=\"javascript:alert(1)\">tap</a>",
    "<iframe src=//example.invalid></iframe>", "\"><script>alert(document.cookie)</script>",
    "'><body onload=alert(1)>", "<style>body{display:none}</style>", "&lt;script&gt;", "&amp;&#x3C;&#60;",
    "<!-- comment -->", "<![CDATA[x]]>", "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
    "<tg-spoiler>secret</tg-spoiler>", "<pre><code>x</code></pre>", "<a href=\"tg://user?id=1\">me</a>",
    "</b></i></a>", "<b><i>unclosed", "<<<>>>&&&", "javascript:alert(1)", "data:text/html,<script>alert(1)</script>",
    "[click](javascript:alert(1))", "*bold* _it_ `code` ~strike~ ||spoiler||",
)
TEMPLATES = (
    "{0}", "{}", "{organisation}", "{title}", "{{7*7}}", "${7*7}", "#{7*7}", "<%= 7*7 %>",
    "%s%s%s%s%n", "%(text)s", "${jndi:ldap://example.invalid/a}", "{% raw %}", "{{ config }}",
    "__import__('os').system('id')", "`id`", "$(id)", "; ls -la", "| cat /etc/passwd",
)
TRAVERSAL = (
    "../../../../etc/passwd", "..\\..\\..\\windows\\win.ini", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "file:///etc/passwd", "/static/../bot/settings.py", "....//....//etc/passwd", "..%c0%af..%c0%af",
)
CRLF = (
    "hello\r\nSet-Cookie: owned=1", "hi\r\n\r\n<script>alert(1)</script>", "line1\rline2\rline3",
    "%0d%0aLocation: http://example.invalid", "a\u2028b\u2029c", "\n\n\n\nhello\n\n\n\n",
    "tab\there\ttoo", "\r\n", "\u0085next line",
)
NUMBERS = (
    "9" * 400, "1e309", "-1e309", "NaN", "Infinity", "-0", "0x7fffffffffffffff", "-9223372036854775809",
    "18446744073709551616", "1" * 4301, "0.000000000000000000000000000001", "3.14159" * 50,
    "remind me in 99999999999999 days", "remind me at 25:61 on 32/13/2026",
    "remind me on 31/02/2026 at 99pm", "my project number is -1",
)
EMOJI = (
    "😀", "😀😃😄😁😆", "👍🏽", "👩‍👩‍👧‍👦", "🏳️‍🌈", "🇬🇧🇪🇺", "❤️" * 200, "🙂" * 1000,
    "🤖❓", "🆘", "🔥💯", "🧑🏿‍🦽‍➡️", "#️⃣*️⃣", "🫠🫶🪿", "\U0001F9D1\u200D\U0001F4BB",
)
RTL = (
    "مرحبا، ما هو الإنتاج المشترك؟", "שלום, מה זה שיתוף?", "سلام", "ما هو ICB؟",
    "\u202eevil text reversed\u202c", "abc \u202e123\u202c def", "\u200fright-to-left mark\u200e",
    "English then עברית then English", "اردو میں مدد", "ܫܠܡܐ", "\u061c\u200f\u202b nested \u202a marks\u202c",
)
CJK = (
    "什么是共同生产？", "共同生産とは何ですか", "공동 생산이란 무엇입니까?", "你好", "こんにちは",
    "ＩＣＢとは", "（（（全角括弧）））", "漢字" * 500, "ｗｈａｔ ｉｓ ｃｏ－ｐｒｏｄｕｃｔｉｏｎ", "／ｃｒｉｓｉｓ",
    "ภาษาไทย", "हिन्दी में बताइए", "বাংলা", "Ελληνικά;", "Привет, что такое ICB?",
)
ZERO_WIDTH = (
    "\u200b", "\u200b\u200c\u200d\u2060\ufeff", "hel\u200blo", "\ufeffhello", "w\u200dh\u200da\u200dt is ICB",
    "I\u200b want\u200b to\u200b die", "ICB\u0301\u0302\u0303", "Z\u0351\u0352\u0353\u0354\u0355" * 40,
    "e\u0301" * 300, "\u034f\u034f\u034f", "\u180e", "\u2061\u2062\u2063\u2064", "\ufe0f" * 50,
    "a" + "\u0300" * 2000,
)
CONTROL = (
    "\x00", "hello\x00world", "\x00" * 50, "\x07\x08\x1b[31mred\x1b[0m", "\x1b]0;title\x07",
    "".join(chr(c) for c in range(0, 32)), "\x7f\x7f", "".join(chr(c) for c in range(0x80, 0xA0)),
    "\x0b\x0c vertical tab and form feed", "back\bspace", "what is ICB\x00?", "\x1a\x04 EOF",
)
SURROGATES = ("\ud800", "a\udfffb", "\udbff\udc00 swapped", "😀\ud83d", "\ud83dx", "what is \udcff ICB")
PRIVATE = (
    "\ue000\uf8ff", "\U000f0000\U0010fffd", "\ufffe\uffff", "\ufffd\ufffd", "\U0010ffff",
    "\U0001d5db\U0001d5f2\U0001d5f9\U0001d5f9\U0001d5fc", "ⓘⓒⓑ", "𝓌𝒽𝒶𝓉 𝒾𝓈 𝐼𝒞𝐵",
)
PAYLOADS = (
    "/crisis", "/crisis{\"x\":1}", "/ask_acronym{\"acronym\":\"<script>alert(1)</script>\"}",
    "/ask_acronym{\"acronym\":\"' OR 1=1 --\"}", "/ask_acronym{\"acronym\":\"\\u0000\"}",
    "/ask_acronym{\"acronym\":null}", "/ask_acronym{\"acronym\":[1,2,3]}", "/ask_acronym{\"acronym\":{\"a\":1}}",
    "/ask_acronym{\"acronym\":1e309}", "/ask_acronym{\"acronym\":" + "9" * 5000 + "}",
    "/ask_acronym{bad json", "/ask_acronym{}", "/ask_acronym{{\"acronym\":\"ICB\"}}", "/ask_acronym[\"ICB\"]",
    "/EXTERNAL_reminder", "/EXTERNAL_checkin{\"reminder_id\":\"1\"}", "EXTERNAL: hello",
    "{\"json\":1}", "[1,2,3]", "null", "true", "\"a string\"", "/", "//", "/ ", "/\x00", "/@", "/greet@0.5",
    "/greet@NaN", "/greet@1e309", "/greet@-1", "/greet@", "/greet{\"x\":1}@0.1", "/greet\n/crisis",
    "/restart", "/session_start", "/session_start{\"session_started_metadata\":{\"a\":1}}",
    "/action_restart", "/action_session_start", "/back", "/nlu_fallback", "/out_of_scope",
    "/utter_greet", "/action_delete_my_data", "/form{\"name\":\"reminder_form\"}",
    "/choose_organisation{\"organisation\":\"../../etc/passwd\"}",
    "/choose_organisation{\"organisation\":\"<b>Leeds</b>\"}",
    "/continue_walkthrough{\"fs_project\":\"-1\"}", "/continue_walkthrough{\"fs_project\":\"1 OR 1=1\"}",
    "/show_plan{\"fs_project\":\"99999999999999999999999\"}", "/show_plan{\"fs_project\":\"../../x\"}",
    "/edit_answer{\"fs_step\":\"-7\"}", "/edit_answer{\"fs_question\":\"<script>\"}",
    "/edit_answer{\"fs_step\":\"1e309\"}", "/set_time_zone{\"tz_zone\":\"../../etc/localtime\"}",
    "/set_time_zone{\"tz_zone\":\"Europe/\\u0000\"}", "/delete_my_data{\"my_data_choice\":\"no\"}",
    "/delete_my_data{\"my_data_choice\":\"maybe\"}", "/delete_my_data{\"my_data_choice\":\"NO\"}",
    "/check_in_answer{\"ci_answer\":\"done\"}", "/check_in_when{\"ci_when\":\"-1 days\"}",
    "/snooze_reminder{\"rm_snooze\":\"-1\"}", "/cancel_reminder{\"rm_meeting\":\"1; DROP TABLE reminders\"}",
    "/cancel_reminder{\"rm_scope\":\"all_confirmed\"}", "/set_time_zone{\"tz_zone\":\"ask\"}",
    "/requested_slot{\"requested_slot\":\"x\"}",
    "/ask_acronym{\"acronym\":\"" + "A" * 3000 + "\"}",
    "/ask_acronym{" + ",".join(f"\"e{i}\":\"{i}\"" for i in range(300)) + "}",
    "/greet{" + "\"a\":{" * 200 + "}" * 200 + "}",
)
BRACKETS = (
    "(" * 1000 + ")" * 1000, "[" * 1000, "{" * 1000, "]" * 500 + "[" * 500, "{{{{}}}}" * 100,
    "((((((((((what is ICB))))))))))", "<" * 500 + ">" * 500, "\"" * 500, "'" * 500, "`" * 500,
    "\\" * 1000, "{\"a\":" * 500 + "1" + "}" * 500, "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]",
)
LONG_WORDS = (
    "a" * 1999, "supercalifragilistic" * 99, "https://example.invalid/" + "a/" * 900,
    "ICB" * 666, "x" * 2000, "🙂" * 2000, "漢" * 2000,
)
# Serious words wrapped in hostile material: the crisis reply must still come (knowledge/safety.yml).
CRISIS_WRAPPED = (
    "<script>alert(1)</script> I want to kill myself",
    "I want to kill myself' OR '1'='1",
    "\u200bI want to end my life\u200b",
    "I WANT TO KILL MYSELF 😭😭😭",
    "i want to die \x00\x00",
    "/ask_acronym I want to end my life",
    "I want to kill myself " + "!" * 1500,
)
WHITESPACE = (
    "", " ", "   ", "\t", "\n", "\r\n", " \t\n\r ", "\u00a0", "\u3000", "\u2003\u2009\u202f", "\n" * 500,
    " " * 4096, "\t" * 100, "\u00a0" * 100, "\u2028\u2029", "\x0b\x0c\x1c\x1d\x1e\x1f",
)
GREETINGS = ("hello", "what is co-production?", "what does ICB mean", "help", "thanks")
# Fragments the random mix draws from.
_POOLS = (SQL, HTML, TEMPLATES, TRAVERSAL, CRLF, EMOJI, RTL, CJK, ZERO_WIDTH, CONTROL, PRIVATE, GREETINGS)
_RANGES = (
    (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x590, 0x6FF), (0x900, 0x97F), (0x2000, 0x206F),
    (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFE00, 0xFE0F), (0x1F300, 0x1F6FF),
    (0x1D400, 0x1D4FF), (0xE000, 0xE0FF), (0x0, 0x1F),
)


@dataclass(frozen=True)
class TextCase:
    """One chat message: an id, its category and the text as sent."""

    id: str
    category: str
    text: str
    # "crisis": the reply must include the crisis signposting, whatever else was in the message.
    expect: str = "reply"


@dataclass(frozen=True)
class HttpCase:
    """One raw HTTP request (method, path with its query, headers, body) and what it must get."""

    id: str
    category: str
    method: str
    path: str
    body: Optional[bytes] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    # "4xx": refused as the caller's mistake; "ok": any status below 500 (2xx or 4xx).
    expect: str = "ok"
    # Statuses the case may get (empty: any below 500 for "ok", 400-499 for "4xx").
    statuses: Tuple[int, ...] = field(default=())


def _rng() -> random.Random:
    """The suite's random generator, always from the same seed."""
    return random.Random(SEED)


def _random_text(rng: random.Random) -> str:
    """A seeded mix of hostile fragments and random code points (at most 1,500 characters)."""
    parts: List[str] = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.6:
            parts.append(rng.choice(rng.choice(_POOLS)))
        else:
            low, high = rng.choice(_RANGES)
            parts.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 40))))
    return rng.choice(("", " ", "\n", "\u200b")).join(parts)[:1500]


def _random_payload(rng: random.Random) -> str:
    """A Rasa-looking payload: an intent (real, default or made up) with random hostile entities."""
    intent = rng.choice(INTENTS)
    if rng.random() < 0.3:
        return f"/{intent}"
    values = [rng.choice(SQL + HTML + TRAVERSAL + NUMBERS[:9] + EMOJI + SURROGATES[:2]) for _ in range(rng.randint(1, 3))]
    entities = {rng.choice(ENTITIES): value for value in values}
    body = json.dumps(entities, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.2:
        body = body[: rng.randint(1, max(1, len(body) - 1))]  # cut short: not JSON any more
    confidence = rng.choice(("", "", "@0.9", "@2", "@-5", "@abc"))
    return f"/{intent}{confidence}{body}"


def text_cases(max_chars: int = DEFAULT_MAX_CHARS) -> List[TextCase]:
    """Every chat message case, fixed lists first, then the seeded random mix (about 660)."""
    cases: List[TextCase] = []

    def add(category: str, texts, expect: str = "reply") -> None:
        for number, text in enumerate(texts):
            cases.append(TextCase(f"{category}-{number:03d}", category, text, expect))

    add("whitespace", WHITESPACE)
    add("length", (
        "a" * max_chars, "a" * (max_chars + 1), "word " * (max_chars // 5), "x" * TELEGRAM_MAX,
        "ICB " * (TELEGRAM_MAX // 4), "🙂" * TELEGRAM_MAX, "a" * (TELEGRAM_MAX + 1), "a" * HUGE,
        "what is ICB? " * (HUGE // 13), "🙂" * HUGE, "<script>" * (HUGE // 8), "\x00" * HUGE,
        " " * HUGE + "hello", "漢" * HUGE,
    ))
    add("emoji", EMOJI)
    add("rtl", RTL)
    add("cjk", CJK)
    add("control", CONTROL)
    add("surrogate", SURROGATES)
    add("zero_width", ZERO_WIDTH)
    add("unicode_odd", PRIVATE)
    add("long_word", LONG_WORDS)
    add("brackets", BRACKETS)
    add("sql", SQL)
    add("html", HTML)
    add("template", TEMPLATES)
    add("traversal", TRAVERSAL)
    add("crlf", CRLF)
    add("numbers", NUMBERS)
    add("rasa_payload", PAYLOADS)
    add("never_offered", [f"/{intent}" for intent in INTENTS])
    add("bad_id", [f"/{intent}{{{json.dumps(entity)}:{json.dumps(value)}}}" for intent, entity in ID_PAYLOADS for value in BAD_IDS])
    add("crisis_wrapped", CRISIS_WRAPPED, expect="crisis")
    rng = _rng()
    add("random_mix", [_random_text(rng) for _ in range(100)])
    add("random_payload", [_random_payload(rng) for _ in range(60)])
    return cases


def telegram_callback_cases() -> List[TextCase]:
    """callback_data a Telegram client could send for buttons that were never offered (at most 64 bytes
    each, as Telegram allows), plus a few longer ones only a hostile client could make."""
    data = [
        "/crisis", "/delete_my_data", "/restart", "/session_start", "/affirm", "/deny", "/go_back",
        "/skip_question", "/pause_walkthrough", "/edit_answer{\"fs_step\":\"-1\"}", "/show_plan{\"fs_project\":\"1\"}",
        "/continue_walkthrough{\"fs_project\":\"0\"}", "/ask_acronym{\"acronym\":\"<b>x</b>\"}",
        "/ask_acronym{bad", "/EXTERNAL_reminder", "/snooze_reminder{\"reminder_id\":\"-1\"}",
        "/no_such_intent", "{\"json\":1}", "hello", "' OR 1=1 --", "<script>alert(1)</script>",
        "cb:", "cb:AAAAAAAAAAAAAAAAAAAAAAAA", "cb:../../etc/passwd", "cb:' OR 1=1 --", "cb:\x00",
        "\x00", "\x00/crisis", "/greet\x00", "\ud800", "/greet\udfff", " ", "\t\n", "🙂" * 16, "漢" * 21,
        "\u202e/crisis", "\u200b/help", "/help\r\nX: 1", "../../../../etc/passwd", "9" * 64, "-1",
        "/ask_acronym{\"acronym\":\"" + "A" * 200 + "\"}", "x" * 4096,
    ]
    data += [f"/{intent}{{{json.dumps(entity)}:\"99999999999999999999\"}}" for intent, entity in ID_PAYLOADS]
    return [TextCase(f"callback-{n:03d}", "callback", d) for n, d in enumerate(data)]


# --- raw HTTP requests ------------------------------------------------------------------------

JSON_TYPE = (("Content-Type", "application/json"),)
# Bodies that are not JSON at all, or not the JSON object an endpoint needs: always a 4xx.
BAD_JSON = (
    b"", b" ", b"{", b"}", b"{\"sender_id\":", b"{'sender_id': 'x'}", b"{\"sender_id\":\"x\",}",
    b"{\"sender_id\":\"x\" \"text\":\"y\"}", b"NaN", b"{\"text\": NaN}", b"[" * 100_000, b"{\"a\":" * 50_000,
    b"\x00\x01\x02", b"\xff\xfe\xfd", b"{\"sender_id\":\"x\",\"text\":\"\xff\xfe\"}",
    b"{\"sender_id\":\"x\",\"text\":\"\xc3\x28\"}", b"<xml><text>hi</text></xml>", b"sender_id=x&text=hi",
    b"{\"text\":\"hi\"}garbage", b"{\"n\":" + b"9" * 5000 + b"}", b"\"just a string\"", b"12345", b"null",
    b"true", b"[]", b"{}", b"[{\"sender_id\":\"x\",\"text\":\"hi\"}]", b"{\"n\":1e999999}",
)
def odd_json(sender: str, sender_key: str = "sender_id", text_key: str = "text") -> List[bytes]:
    """Bodies that are odd but decode to a message (another encoding, a BOM, the bytes of a lone
    surrogate, escaped NULs and surrogates, padding): a clear answer, 2xx or 4xx."""

    def document(text_json: str) -> str:
        return "{" + f"{json.dumps(sender_key)}: {json.dumps(sender)}, {json.dumps(text_key)}: {text_json}" + "}"

    hello = document('"hi"')
    return [
        b"\xef\xbb\xbf" + hello.encode(), hello.encode("utf-16"), hello.encode("utf-32"),
        document('"@"').encode().replace(b"@", b"\xed\xa0\x80"), document('"' + "9" * 5000 + '"').encode(),
        document('"\\ud800"').encode(), document('"a\\u0000b"').encode(), f"  \n{hello}\n  ".encode(),
    ]


CONTENT_TYPES = (
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
    "application/xml", "text/html", "application/json-patch+json", "application/jsonx",
    "application/json; charset=latin-1", "APPLICATION/JSON", "application/json; charset=utf-16",
    "application/octet-stream", "image/png", "*/*", "application/json, text/plain", "",
)
SENDER_IDS = (
    None, "", " ", "a" * 65, "../../etc/passwd", "a b", "a\nb", "a\x00b", "<script>", "' OR 1=1 --",
    "😀", "ｆｕｌｌ", "a;b", "a/b", "a%2Fb", "\ud800", "x\u200b", 12345, 1.5, True, [], {}, ["x"], {"id": "x"},
)
QUERY_VALUES = (
    "", "-1", "0", "abc", "1e3", "1.5", "99999999999999999999", "9" * 400, "-9223372036854775809",
    "%00", "%0d%0aSet-Cookie:x=1", "..%2F..%2Fetc%2Fpasswd", "%FF%FE", "%E2%80%AE", "%F0%9F%98%80",
    "' OR 1=1 --", "<script>", "NaN", "Infinity", "0x10", " 1", "1 ", "+1", "１２", "%",
)


def _json_body(value) -> bytes:
    """value as a JSON body (ASCII-escaped, so lone surrogates travel as \\uXXXX escapes)."""
    return json.dumps(value).encode("ascii")


def web_http_cases(sender_id: str, max_chars: int = DEFAULT_MAX_CHARS) -> List[HttpCase]:
    """Raw requests to every web chat endpoint; sender_id names a champion who may hold data."""
    cases: List[HttpCase] = []

    def add(category: str, method: str, path: str, body: Optional[bytes] = None,
            headers=JSON_TYPE, expect: str = "ok", statuses: Tuple[int, ...] = ()) -> None:
        cases.append(HttpCase(f"{category}-{len(cases):03d}", category, method, path, body, tuple(headers), expect, statuses))

    for body in BAD_JSON:
        add("malformed_json", "POST", "/api/messages", body, expect="4xx")
    for body in odd_json(sender_id):
        add("odd_json", "POST", "/api/messages", body)
    for content_type in CONTENT_TYPES:
        headers = () if content_type is None else (("Content-Type", content_type),)
        good = _json_body({"sender_id": sender_id, "text": "hello"})
        add("content_type", "POST", "/api/messages", good, headers, expect="ok")
    # Missing and mistyped fields.
    for value in SENDER_IDS:
        body = {"text": "hello"} if value is None else {"sender_id": value, "text": "hello"}
        add("sender_id", "POST", "/api/messages", _json_body(body), expect="4xx")
    for value in (None, 1, 1.5, True, [], {}, ["hi"], {"text": "hi"}, 10 ** 30):
        add("text_type", "POST", "/api/messages", _json_body({"sender_id": sender_id, "text": value}), expect="4xx")
    for payload, title in ((1, "x"), ([], "x"), ({}, None), ("/greet", 5), ("/greet", ["x"]), (True, False)):
        add("payload_type", "POST", "/api/messages",
            _json_body({"sender_id": sender_id, "payload": payload, "title": title}), expect="4xx")
    for payload, title in (
        ("/crisis", "never offered"), ("/restart", None), ("", "empty payload"), ("   ", None),
        ("/delete_my_data{\"my_data_choice\":\"no\"}", "No"), ("/ask_acronym{\"acronym\":\"<script>\"}", "<b>x</b>"),
        ("/greet", "x" * (max_chars + 1)), ("x" * (max_chars + 1), "short"), ("\x00", "\x00"),
        ("/greet", "\ud800"), ("\ud800", None), ("/EXTERNAL_reminder", "ok"), ("{\"json\":1}", "json"),
    ):
        add("payload_odd", "POST", "/api/messages", _json_body({"sender_id": sender_id, "payload": payload, "title": title}))
    add("oversized", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "a" * (5 * 1024 * 1024)}), expect="4xx", statuses=(413,))
    add("oversized", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "🙂" * HUGE}), statuses=(200,))
    add("oversized", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "a" * HUGE}), statuses=(200,))
    add("oversized", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "hi", "extra": ["x" * 1000] * 1000}))
    add("oversized", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "hi", **{f"k{i}": i for i in range(20_000)}}))
    add("extra_fields", "POST", "/api/messages",
        b"{\"sender_id\":\"" + sender_id.encode() + b"\",\"text\":\"a\",\"text\":\"duplicate key\"}")
    add("extra_fields", "POST", "/api/messages",
        _json_body({"sender_id": sender_id, "text": "hi", "payload": None, "metadata": {"a": 1}, "__proto__": {}}))
    # Wrong methods on every route (405; HEAD on a GET route is a GET without a body).
    routes = ("/", "/healthz", "/api/interface", "/api/history", "/api/messages", "/api/plan.md",
              "/api/my-data.json", "/static/chat.js")
    for route in routes:
        right = "POST" if route == "/api/messages" else "GET"
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"):
            if method != right:  # the right method is covered elsewhere
                add("method", method, route, b"{}", expect="4xx", statuses=(405,))
    # Query strings of the GET endpoints (percent-encoded as a browser would; raw ones further down).
    for raw in QUERY_VALUES:
        value = quote(raw, safe="%")
        add("history_query", "GET", f"/api/history?sender_id={sender_id}&after={value}")
        add("history_query", "GET", f"/api/history?sender_id={sender_id}&limit={value}")
        add("history_query", "GET", f"/api/history?sender_id={value}")
        add("plan_query", "GET", f"/api/plan.md?sender_id={sender_id}&project={value}")
        add("my_data_query", "GET", f"/api/my-data.json?sender_id={value}")
    for path in (
        "/api/history", "/api/history?", "/api/history?sender_id", "/api/history?sender_id=&sender_id=x",
        f"/api/history?sender_id={sender_id}&sender_id=other&after=1&after=2",
        f"/api/history?sender_id={sender_id}&after=-1", f"/api/history?sender_id={sender_id}&after=-99999999999999999999",
        f"/api/history?sender_id={quote(sender_id)}%00", "/api/history?sender_id=" + "a" * 5000,
        "/api/plan.md", "/api/plan.md?project=1", f"/api/plan.md?sender_id={sender_id}",
        "/api/my-data.json", "/api/my-data.json?sender_id=" + "a" * 65, "/api/interface?x=<script>",
        "/api/interface?" + "&".join(f"k{i}=v" for i in range(2000)), "/healthz?sender_id=x",
    ):
        add("query_odd", "GET", path)
    # Static files and paths that are not there.
    for path in (
        "/static/../bot/settings.py", "/static/%2e%2e/bot/settings.py", "/static/..%2fbot%2fsettings.py",
        "/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/static/....//....//etc/passwd", "/static/chat.js%00.png",
        "/static/", "/static", "/static/nonexistent.js", "/static/chat.js/", "/static/./chat.js",
        "/static/%2fetc%2fpasswd", "/static//etc/passwd", "/static/..\\..\\bot\\settings.py",
        "/static/" + "a" * 4000, "/%2e%2e/%2e%2e/etc/passwd", "/api/../web/chat.js", "/api/nonexistent",
        "/api/", "/api", "/.env", "/.git/config", "/index.html", "/static/index.html?<script>",
        "/static/%FF%FE", "/static/%E2%80%AE.js", "/%7f", "/%00",
    ):
        add("static", "GET", path, None, ())
    # Request lines no browser would send: raw spaces, control characters, non-ASCII, a huge path.
    for path in (
        "/api/history?sender_id=a b", "/api/history?sender_id=\x7f", "/api/history?sender_id=\x00",
        "/api/history?sender_id=１２", "/static/\u202e.js", "/\x01", "/api/history?sender_id=" + "a" * 20_000,
        "*", "http://example.invalid/", "../../etc/passwd", "",
    ):
        add("raw_request", "GET", path, None, ())
    # Headers: odd Accept, Host, huge cookies, conflicting encodings.
    for headers in (
        (("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
        (("Content-Type", "application/json"), ("Content-Encoding", "br")),
        (("Content-Type", "application/json"), ("Accept", "text/html")),
        (("Content-Type", "application/json"), ("Cookie", "a=" + "b" * 4000)),
        (("Content-Type", "application/json"), ("X-Forwarded-For", "' OR 1=1 --")),
        (("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")),
    ):
        add("headers", "POST", "/api/messages", _json_body({"sender_id": sender_id, "text": "hello"}), headers)
    return cases


def rest_http_cases(sender: str) -> List[HttpCase]:
    """Raw requests to Rasa's REST channel (POST /webhooks/rest/webhook) that are not a proper message."""
    cases: List[HttpCase] = []
    path = "/webhooks/rest/webhook"

    def add(category: str, method: str, body: Optional[bytes], headers=JSON_TYPE, expect: str = "ok",
            route: str = path) -> None:
        cases.append(HttpCase(f"{category}-{len(cases):03d}", category, method, route, body, tuple(headers), expect))

    for body in BAD_JSON:
        add("malformed_json", "POST", body, expect="4xx")
    for body in odd_json(sender, "sender", "message"):
        add("odd_json", "POST", body)
    for value in (None, 1, 1.5, True, [], {}, ["hi"], {"text": "hi"}, 10 ** 30, "\ud800", "a" * HUGE):
        add("message_type", "POST", _json_body({"sender": sender, "message": value}))
    for value in (None, 1, [], {}, "", "a" * 5000, "../../x", "\x00", "\ud800", "<script>"):
        add("sender_type", "POST", _json_body({"sender": value, "message": "hello"}))
    for extra in ({"metadata": "not a dict"}, {"metadata": [1, 2]}, {"metadata": {"a": "b" * 10000}},
                  {"input_channel": 5}, {"input_channel": "../../x"}, {"stream": "yes"}):
        add("extra_fields", "POST", _json_body({"sender": sender, "message": "hello", **extra}))
    for content_type in CONTENT_TYPES:
        headers = () if content_type is None else (("Content-Type", content_type),)
        add("content_type", "POST", _json_body({"sender": sender, "message": "hello"}), headers)
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        add("method", method, b"{}", expect="4xx")
    for query in ("?stream=true", "?stream=%00", "?stream=" + "a" * 3000, "?token=../../x"):
        add("query_odd", "POST", _json_body({"sender": sender, "message": "hello"}), route=path + query)
    return cases


def summary() -> Dict[str, Counter]:
    """How many cases of each category each generator makes."""
    return {
        "text": Counter(case.category for case in text_cases()),
        "telegram_callback": Counter(case.category for case in telegram_callback_cases()),
        "web_http": Counter(case.category for case in web_http_cases("hostile-sender")),
        "rest_http": Counter(case.category for case in rest_http_cases("hostile-sender")),
    }


def _percentile(values: List[float], share: float) -> float:
    """The value below which `share` of values lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(share * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def timed() -> int:
    """Run the hostile-input tests against the whole stack and print reply times per channel."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timings.json"
        env = dict(os.environ, HOSTILE_TIMINGS_FILE=str(out))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_hostile_input.py"], cwd=root, env=env, check=False)
        if not out.exists():
            print("the tests wrote no timings", file=sys.stderr)
            return run.returncode or 1
        timings = json.loads(out.read_text(encoding="utf-8"))
    print(f"\nreply times (target: every reply within {TARGET_SECONDS:.0f} s); "
          f"load average %.1f on {os.cpu_count()} CPUs" % os.getloadavg()[0])
    print(f"{'channel':18} {'who answered':14} {'n':>5} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} {'over':>5}")
    for channel in sorted({t["channel"] for t in timings}):
        for rasa, who in ((True, "Rasa"), (False, "refused early")):
            values = [t["seconds"] for t in timings if t["channel"] == channel and t["rasa"] == rasa]
            if values:
                over = sum(1 for v in values if v > TARGET_SECONDS)
                print(f"{channel:18} {who:14} {len(values):5} {_percentile(values, 0.5):6.2f} "
                      f"{_percentile(values, 0.95):6.2f} {_percentile(values, 0.99):6.2f} {max(values):6.2f} {over:5}")
    return run.returncode


def main() -> None:
    """Print the number of cases per generator and category, or (--timed) the reply times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timed", action="store_true", help="run the suite against the stack and print reply times")
    if parser.parse_args().timed:
        sys.exit(timed())
    total = 0
    for kind, counts in summary().items():
        print(f"{kind}: {sum(counts.values())}")
        for category, count in sorted(counts.items()):
            print(f"  {category:16} {count}")
        total += sum(counts.values())
    print(f"total distinct cases: {total}")


if __name__ == "__main__":
    main()
