"""A fake Telegram Bot API server (aiohttp) for tests and benchmarks, in-process or standalone.

In-process::

    async with FakeTelegram() as fake:
        bot = telegram.Bot(fake.token, base_url=fake.base_url)
        fake.push_update(fake.text_update(42, "hello"))
        ...
        assert [m.text for m in fake.messages_for(42)] == [...]

Standalone: ``python -m bench.fake_telegram --port 8081`` (control endpoints under /_fake/: stats,
sent, updates, user/text, user/tap, callback_answers, block, fail, reset).

It speaks the HTTP side of the Bot API as python-telegram-bot sends it (form-encoded or
multipart bodies whose non-string values are JSON-encoded; JSON bodies work too), enforces
Telegram's flood limits (429 with retry_after), refuses blocked chats (403), checks HTML
parse mode, message length and callback_data size like Telegram does (400), and can drop
connections or answer 502 on demand. Everything it accepts is recorded for assertions.
"""
from __future__ import annotations

import argparse
import asyncio
import html
import ipaddress
import itertools
import json
import logging
import math
import re
import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_TOKEN = "123456:TEST-fake-telegram-token"
MAX_TEXT = 4096
MAX_CALLBACK_DATA_BYTES = 64
# Tags Telegram's HTML parse mode understands (https://core.telegram.org/bots/api#html-style).
HTML_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler",
    "a", "tg-emoji", "code", "pre", "blockquote",
}
HTML_TOKEN = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^<>]*)?)>|&(#\d+|#x[0-9A-Fa-f]+|lt|gt|amp|quot);|[<>&]")
# Parameters python-telegram-bot JSON-encodes when it sends a form (everything not a string).
JSON_FIELDS = {
    "reply_markup", "commands", "allowed_updates", "scope", "entities", "caption_entities",
    "link_preview_options", "reply_parameters",
}
INT_FIELDS = {
    "chat_id", "message_id", "offset", "limit", "timeout", "cache_time", "max_connections",
    "from_chat_id", "message_thread_id",
}
BOOL_FIELDS = {
    "show_alert", "drop_pending_updates", "disable_notification", "protect_content",
    "disable_web_page_preview", "allow_sending_without_reply",
}
SEND_METHODS = {"sendMessage"}  # the methods the flood limits apply to


class TelegramError(Exception):
    """A Bot API error answer: HTTP status, description and optional parameters."""

    def __init__(self, code: int, description: str, parameters: Optional[Dict[str, Any]] = None) -> None:
        """Remember what to answer."""
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


@dataclass
class SentMessage:
    """One message the bot sent (or its latest state after edits)."""

    message_id: int
    chat_id: int
    text: str  # exactly as sent (HTML source when parse_mode is HTML)
    plain: str  # what the user sees: tags removed, entities decoded
    parse_mode: Optional[str]
    reply_markup: Optional[Dict[str, Any]]
    at: float
    edits: int = 0

    def buttons(self) -> List[Dict[str, Any]]:
        """The inline keyboard's buttons, row after row."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]


@dataclass
class Failure:
    """A planned failure for the next matching requests."""

    kind: str  # "drop" (connection closed, nothing done), "lost_reply" (done, then dropped), "502"
    remaining: int
    methods: Optional[Set[str]]


def _bool(value: Any) -> bool:
    """A Bot API boolean from JSON or a form field."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def normalise_params(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Decode form values the way Telegram does: JSON objects, integers and booleans by field."""
    params: Dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, str):
            if name in JSON_FIELDS:
                try:
                    value = json.loads(value)
                except ValueError:
                    raise TelegramError(400, f"Bad Request: can't parse {name} JSON object") from None
            elif name in INT_FIELDS and re.fullmatch(r"-?\d+", value.strip()):
                value = int(value)
            elif name in BOOL_FIELDS:
                value = _bool(value)
        params[name] = value
    return params


def parse_html(text: str) -> str:
    """The visible text of an HTML parse-mode message; TelegramError(400) where Telegram refuses it."""
    out: List[str] = []
    stack: List[str] = []
    pos = 0
    for match in HTML_TOKEN.finditer(text):
        out.append(text[pos:match.start()])
        pos = match.end()
        token = match.group(0)
        if match.group(2):
            closing, tag = match.group(1) == "/", match.group(2).lower()
            if tag not in HTML_TAGS:
                raise TelegramError(400, f"Bad Request: can't parse entities: Unsupported start tag \"{tag}\" at byte offset {match.start()}")
            if closing:
                if not stack or stack[-1] != tag:
                    raise TelegramError(400, f"Bad Request: can't parse entities: Unmatched end tag at byte offset {match.start()}, expected \"</{stack[-1] if stack else ''}>\", found \"</{tag}>\"")
                stack.pop()
            else:
                stack.append(tag)
        elif match.group(4):
            out.append(html.unescape(token))
        else:  # a bare <, > or & that is not part of a tag or an entity
            if token == ">":
                out.append(">")  # Telegram tolerates a bare '>'
                continue
            raise TelegramError(400, f"Bad Request: can't parse entities: Unexpected character \"{token}\" at byte offset {match.start()}")
    out.append(text[pos:])
    if stack:
        raise TelegramError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"{stack[-1]}\"")
    return "".join(out)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts message length."""
    return len(text.encode("utf-16-le")) // 2


def _public_url(url: str) -> bool:
    """True when Telegram would accept url on a URL button (http(s) to a public host, or tg://)."""
    parts = urlsplit(url)
    if parts.scheme == "tg":
        return True
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host
    return address.is_global


def check_markup(markup: Any) -> None:
    """Refuse reply markup Telegram would refuse (callback_data over 64 bytes, private URLs)."""
    if markup is None:
        return
    if not isinstance(markup, dict):
        raise TelegramError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard") or []:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise TelegramError(400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")
            data, url = button.get("callback_data"), button.get("url")
            if data is not None and not (1 <= len(str(data).encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES):
                raise TelegramError(400, "Bad Request: BUTTON_DATA_INVALID")
            if url is not None and not _public_url(str(url)):
                raise TelegramError(400, f"Bad Request: inline keyboard button URL '{url}' is invalid: Wrong HTTP URL")
            if data is None and url is None:
                raise TelegramError(400, "Bad Request: can't parse inline keyboard button: Field \"callback_data\" or \"url\" must be present")


class FakeTelegram:
    """A local fake of the Telegram Bot API with recorders, flood limits and failure injection."""

    def __init__(
        self,
        token: Optional[str] = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: bool = True,
        max_per_second: int = 30,
        per_chat_max: int = 1,
        per_chat_seconds: float = 1.0,
        latency: float = 0.0,
        bot_id: int = 7000001,
        bot_username: str = "companion_test_bot",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the fake; token None accepts any token; clock times the flood limits. Nothing listens until start()."""
        self.token = token or DEFAULT_TOKEN
        self.check_token = token is not None
        self.host, self.port = host, port
        self.limits = limits
        self.max_per_second = max_per_second
        self.per_chat_max = per_chat_max
        self.per_chat_seconds = per_chat_seconds
        self.latency = latency
        self.clock = clock
        self.bot_user = {
            "id": bot_id, "is_bot": True, "first_name": "Companion", "username": bot_username,
            "can_join_groups": False, "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self._runner: Optional[web.AppRunner] = None
        self._http: Optional[aiohttp.ClientSession] = None
        self._tasks: Set[asyncio.Task] = set()
        self.reset()

    # --- recorders -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything recorded (keeps configuration, blocked chats and the server)."""
        self.sent: List[SentMessage] = []
        self.by_chat: Dict[int, List[SentMessage]] = defaultdict(list)
        self.messages: Dict[Tuple[int, int], SentMessage] = {}
        self.callback_answers: List[Dict[str, Any]] = []
        self.edits: List[Dict[str, Any]] = []
        self.chat_actions: List[Dict[str, Any]] = []
        self.commands: List[Dict[str, Any]] = []
        self.requests: Counter = Counter()  # method -> how many requests arrived
        self.too_many_requests = 0  # 429s answered
        self.forbidden = 0  # 403s answered
        self.bad_requests: List[Tuple[str, str]] = []  # (method, description) of every 400
        self.injected = 0  # failures injected (drops and 502s)
        self.webhook: Dict[str, Any] = {}
        self.webhook_deliveries: List[Tuple[int, int]] = []  # (update_id, HTTP status or 0)
        self.blocked: Set[int] = getattr(self, "blocked", set())
        self._updates: Deque[Dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._user_message_ids = itertools.count(100000)
        self._callback_ids = itertools.count(1)
        self._open_callbacks: Set[str] = set()
        self._failures: List[Failure] = []
        self._window: Deque[float] = deque()
        self._chat_windows: Dict[int, Deque[float]] = defaultdict(deque)
        if getattr(self, "_changed", None) is not None:
            self._notify()
        else:
            self._changed = None

    def messages_for(self, chat_id: int) -> List[SentMessage]:
        """The messages sent to chat_id, in order."""
        return list(self.by_chat.get(int(chat_id), []))

    def texts_for(self, chat_id: int) -> List[str]:
        """What chat_id saw, message by message (tags removed)."""
        return [m.plain for m in self.messages_for(chat_id)]

    def stats(self) -> Dict[str, Any]:
        """Counters for a benchmark or a failure message."""
        return {
            "sent": len(self.sent),
            "chats": len(self.by_chat),
            "too_many_requests": self.too_many_requests,
            "forbidden": self.forbidden,
            "bad_requests": len(self.bad_requests),
            "injected": self.injected,
            "pending_updates": len(self._updates),
            "requests": dict(self.requests),
        }

    # --- test hooks --------------------------------------------------------------------------

    def fail_next(self, count: int = 1, kind: str = "drop", methods: Optional[Iterable[str]] = ("sendMessage",)) -> None:
        """Fail the next count requests to methods (None: any method) with a dropped connection
        ("drop": nothing done), a lost answer ("lost_reply": done, then dropped) or "502"."""
        if kind not in ("drop", "lost_reply", "502"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self._failures.append(Failure(kind, count, set(methods) if methods is not None else None))

    def block(self, chat_id: int) -> None:
        """From now on, chat_id has blocked the bot (sends get 403)."""
        self.blocked.add(int(chat_id))

    def push_update(self, update: Dict[str, Any]) -> Dict[str, Any]:
        """Queue an update for getUpdates (or POST it to the webhook); assigns update_id if missing."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        if self.webhook.get("url"):
            self._spawn(self._deliver_webhook(update))
        else:
            self._updates.append(update)
            self._notify()
        return update

    def _user(self, chat_id: int, first_name: str) -> Dict[str, Any]:
        """The user behind a private chat."""
        return {"id": int(chat_id), "is_bot": False, "first_name": first_name, "language_code": "en"}

    def _chat(self, chat_id: int, first_name: str) -> Dict[str, Any]:
        """A private chat."""
        return {"id": int(chat_id), "type": "private", "first_name": first_name}

    def _incoming(self, chat_id: int, first_name: str, **content: Any) -> Dict[str, Any]:
        """A message from the user of chat_id with the given content."""
        return {
            "message_id": next(self._user_message_ids),
            "date": int(time.time()),
            "chat": self._chat(chat_id, first_name),
            "from": self._user(chat_id, first_name),
            **content,
        }

    def text_update(self, chat_id: int, text: str, *, first_name: str = "Sam") -> Dict[str, Any]:
        """An update carrying a text message (a leading /command gets its bot_command entity)."""
        content: Dict[str, Any] = {"text": text}
        command = re.match(r"/[A-Za-z0-9_]+(@\w+)?", text)
        if command:
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command.group(0))}]
        return {"message": self._incoming(chat_id, first_name, **content)}

    def command_update(self, chat_id: int, command: str, args: str = "", *, first_name: str = "Sam") -> Dict[str, Any]:
        """An update carrying /command (and optional arguments)."""
        text = f"/{command.lstrip('/')}" + (f" {args}" if args else "")
        return self.text_update(chat_id, text, first_name=first_name)

    def media_update(self, chat_id: int, kind: str = "sticker", *, first_name: str = "Sam") -> Dict[str, Any]:
        """An update carrying a non-text message: "sticker", "photo", "voice", "document" or "location"."""
        file = {"file_id": f"file-{kind}-{chat_id}", "file_unique_id": f"u-{kind}-{chat_id}"}
        content = {
            "sticker": {"sticker": {**file, "type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}},
            "photo": {"photo": [{**file, "width": 90, "height": 90}]},
            "voice": {"voice": {**file, "duration": 3}},
            "document": {"document": {**file, "file_name": "notes.pdf"}},
            "location": {"location": {"latitude": 51.5, "longitude": -0.12}},
        }[kind]
        return {"message": self._incoming(chat_id, first_name, **content)}

    def callback_update(self, chat_id: int, data: str, message_id: Optional[int] = None, *, first_name: str = "Sam") -> Dict[str, Any]:
        """An update for a tap on an inline button with callback_data data, under the bot's
        message message_id (default: the latest message sent to chat_id)."""
        if message_id is None:
            mine = self.by_chat.get(int(chat_id))
            message_id = mine[-1].message_id if mine else 0
        stored = self.messages.get((int(chat_id), message_id))
        message: Dict[str, Any] = {
            "message_id": message_id,
            "date": int(stored.at if stored else time.time()),
            "chat": self._chat(chat_id, first_name),
            "from": self.bot_user,
            "text": stored.plain if stored else "",
        }
        if stored and stored.reply_markup:
            message["reply_markup"] = stored.reply_markup
        query_id = str(next(self._callback_ids))
        self._open_callbacks.add(query_id)
        return {
            "callback_query": {
                "id": query_id,
                "from": self._user(chat_id, first_name),
                "chat_instance": f"ci-{chat_id}",
                "data": data,
                "message": message,
            }
        }

    def member_update(self, chat_id: int, status: str = "kicked", *, first_name: str = "Sam") -> Dict[str, Any]:
        """A my_chat_member update: the user blocked the bot ("kicked") or restarted it ("member")."""
        old = "member" if status == "kicked" else "kicked"

        def member(state: str) -> Dict[str, Any]:
            value: Dict[str, Any] = {"user": self.bot_user, "status": state}
            if state == "kicked":
                value["until_date"] = 0
            return value

        if status == "kicked":
            self.blocked.add(int(chat_id))
        else:
            self.blocked.discard(int(chat_id))
        return {
            "my_chat_member": {
                "chat": self._chat(chat_id, first_name),
                "from": self._user(chat_id, first_name),
                "date": int(time.time()),
                "old_chat_member": member(old),
                "new_chat_member": member(status),
            }
        }

    async def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.02) -> None:
        """Wait until predicate() is true (e.g. lambda: len(fake.messages_for(1)) == 2)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s; fake stats: {self.stats()}")
            await asyncio.sleep(interval)

    # --- server life -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The base URL to give python-telegram-bot (it appends the token)."""
        return f"http://{self.host}:{self.port}/bot"

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{self.host}:{self.port}"

    def application(self) -> web.Application:
        """The aiohttp application serving the Bot API and the /_fake/ control endpoints."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/_fake/stats", self._control_stats)
        app.router.add_get("/_fake/sent", self._control_sent)
        app.router.add_post("/_fake/updates", self._control_push)
        app.router.add_post("/_fake/user/text", self._control_user_text)
        app.router.add_post("/_fake/user/tap", self._control_user_tap)
        app.router.add_get("/_fake/callback_answers", self._control_callback_answers)
        app.router.add_post("/_fake/block", self._control_block)
        app.router.add_post("/_fake/fail", self._control_fail)
        app.router.add_post("/_fake/reset", self._control_reset)
        return app

    async def start(self) -> "FakeTelegram":
        """Start listening (port 0 picks a free port)."""
        self._changed = asyncio.Event()
        self._runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=0.5)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Wake long polls, stop webhook deliveries and close the server."""
        self._notify()
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeTelegram":
        """Start the server."""
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        """Stop the server."""
        await self.stop()

    def _notify(self) -> None:
        """Wake every long poll waiting for updates."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _spawn(self, coro) -> None:
        """Run coro in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- HTTP --------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> Dict[str, Any]:
        """The request's parameters from its query string and JSON, form or multipart body."""
        raw: Dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise TelegramError(400, "Bad Request: can't parse JSON body") from None
                if not isinstance(body, dict):
                    raise TelegramError(400, "Bad Request: the JSON body must be an object")
                raw.update(body)
            else:
                form = await request.post()
                for name, value in form.items():
                    if isinstance(value, str):
                        raw[name] = value
        return normalise_params(raw)

    def _take_failure(self, method: str) -> Optional[str]:
        """The kind of failure planned for this request, if any."""
        for failure in self._failures:
            if failure.remaining > 0 and (failure.methods is None or method in failure.methods):
                failure.remaining -= 1
                self.injected += 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure.kind
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Route /bot<token>/<method> to the method's handler and wrap its answer."""
        method = request.match_info["method"]
        self.requests[method] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.check_token and request.match_info["token"] != self.token:
            return self._error_response(TelegramError(401, "Unauthorized"))
        failure = self._take_failure(method)
        if failure == "502":
            return self._error_response(TelegramError(502, "Bad Gateway"))
        if failure == "drop":
            return self._drop(request)
        handler = getattr(self, f"_m_{method.lower()}", None)
        try:
            params = await self._params(request)
            if handler is None:
                raise TelegramError(404, "Not Found")
            result = await handler(params)
        except TelegramError as error:
            if error.code == 400:
                self.bad_requests.append((method, error.description))
            return self._error_response(error)
        if failure == "lost_reply":
            return self._drop(request)
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the connection without an answer (the client sees a network error)."""
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError()

    def _error_response(self, error: TelegramError) -> web.Response:
        """A Bot API error body with the matching HTTP status."""
        body: Dict[str, Any] = {"ok": False, "error_code": error.code, "description": error.description}
        if error.parameters:
            body["parameters"] = error.parameters
        return web.json_response(body, status=error.code)

    # --- limits ------------------------------------------------------------------------------

    def _check_limits(self, chat_id: int) -> None:
        """Raise a 429 when one more message would break the overall or the per-chat limit."""
        if not self.limits:
            return
        now = self.clock()
        window = self._window
        while window and now - window[0] >= 1.0:
            window.popleft()
        chat_window = self._chat_windows[chat_id]
        while chat_window and now - chat_window[0] >= self.per_chat_seconds:
            chat_window.popleft()
        wait = 0.0
        if len(window) >= self.max_per_second:
            wait = max(wait, window[0] + 1.0 - now)
        if self.per_chat_max and len(chat_window) >= self.per_chat_max:
            wait = max(wait, chat_window[0] + self.per_chat_seconds - now)
        if wait > 0:
            self.too_many_requests += 1
            retry_after = max(1, math.ceil(wait))
            raise TelegramError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})
        window.append(now)
        chat_window.append(now)

    def _check_chat(self, params: Dict[str, Any]) -> int:
        """The request's chat_id as an int; 400 if missing, 403 if that user blocked the bot."""
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            raise TelegramError(400, "Bad Request: chat not found")
        if chat_id in self.blocked:
            self.forbidden += 1
            raise TelegramError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _render(self, params: Dict[str, Any]) -> Tuple[str, str, Optional[str]]:
        """(text, visible text, parse mode) of a message to send or edit, checked like Telegram does."""
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        parse_mode = params.get("parse_mode") or None
        if parse_mode and parse_mode.lower() == "html":
            plain = parse_html(text)
        elif parse_mode is None:
            plain = text
        else:
            plain = text  # MarkdownV2 is not checked by this fake
        if not plain.strip():
            raise TelegramError(400, "Bad Request: message text is empty")
        if utf16_len(plain) > MAX_TEXT:
            raise TelegramError(400, "Bad Request: message is too long")
        check_markup(params.get("reply_markup"))
        return text, plain, parse_mode

    def _message_json(self, message: SentMessage) -> Dict[str, Any]:
        """A Message object as Telegram returns it."""
        body: Dict[str, Any] = {
            "message_id": message.message_id,
            "date": int(message.at),
            "chat": (
                {"id": message.chat_id, "type": "private", "first_name": "Sam"}
                if message.chat_id > 0
                else {"id": message.chat_id, "type": "group", "title": "Group"}
            ),
            "from": self.bot_user,
            "text": message.plain,
        }
        if message.edits:
            body["edit_date"] = int(time.time())
        if message.reply_markup and message.reply_markup.get("inline_keyboard"):
            body["reply_markup"] = message.reply_markup
        return body

    # --- Bot API methods ---------------------------------------------------------------------

    async def _m_getme(self, params: Dict[str, Any]) -> Any:
        """getMe."""
        return self.bot_user

    async def _m_logout(self, params: Dict[str, Any]) -> Any:
        """logOut."""
        return True

    async def _m_getupdates(self, params: Dict[str, Any]) -> Any:
        """getUpdates with real long polling: confirms updates below offset, waits up to timeout."""
        if self.webhook.get("url"):
            raise TelegramError(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
        offset = params.get("offset")
        limit = max(1, min(100, int(params.get("limit") or 100)))
        timeout = max(0, int(params.get("timeout") or 0))
        allowed = params.get("allowed_updates")
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(offset, int) and offset > 0:
                while self._updates and self._updates[0]["update_id"] < offset:
                    self._updates.popleft()
            ready = [
                u for u in itertools.islice(self._updates, 0, limit)
                if not allowed or any(key in u for key in allowed)
            ]
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0 or self._runner is None:
                return ready
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def _m_deletewebhook(self, params: Dict[str, Any]) -> Any:
        """deleteWebhook (optionally dropping pending updates)."""
        self.webhook = {}
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _m_setwebhook(self, params: Dict[str, Any]) -> Any:
        """setWebhook: later pushed updates are POSTed to url with the secret token header."""
        url = params.get("url") or ""
        if not url:
            self.webhook = {}
            return True
        if not url.startswith(("http://", "https://")):
            raise TelegramError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise TelegramError(400, "Bad Request: bad webhook: secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook = {"url": url, "secret_token": secret, "allowed_updates": params.get("allowed_updates")}
        pending, self._updates = list(self._updates), deque()
        for update in pending:
            self._spawn(self._deliver_webhook(update))
        return True

    async def _m_getwebhookinfo(self, params: Dict[str, Any]) -> Any:
        """getWebhookInfo."""
        return {
            "url": self.webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    async def _deliver_webhook(self, update: Dict[str, Any]) -> None:
        """POST one update to the webhook, as Telegram does, with the secret token header."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        headers = {}
        if self.webhook.get("secret_token"):
            headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
        try:
            async with self._http.post(self.webhook["url"], json=update, headers=headers) as response:
                self.webhook_deliveries.append((update["update_id"], response.status))
        except (aiohttp.ClientError, asyncio.TimeoutError, KeyError) as exc:
            log.warning("webhook delivery failed: %s", exc)
            self.webhook_deliveries.append((update["update_id"], 0))

    async def _m_setmycommands(self, params: Dict[str, Any]) -> Any:
        """setMyCommands: recorded in `commands`."""
        commands = params.get("commands")
        if not isinstance(commands, list) or not all(
            isinstance(c, dict) and re.fullmatch(r"[a-z0-9_]{1,32}", str(c.get("command", ""))) and 1 <= len(str(c.get("description", ""))) <= 256
            for c in commands
        ):
            raise TelegramError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = commands
        return True

    async def _m_getmycommands(self, params: Dict[str, Any]) -> Any:
        """getMyCommands."""
        return self.commands

    async def _m_deletemycommands(self, params: Dict[str, Any]) -> Any:
        """deleteMyCommands."""
        self.commands = []
        return True

    async def _m_sendmessage(self, params: Dict[str, Any]) -> Any:
        """sendMessage: checked, limited, recorded; returns the Message."""
        chat_id = self._check_chat(params)
        text, plain, parse_mode = self._render(params)
        self._check_limits(chat_id)
        message = SentMessage(
            message_id=next(self._message_ids),
            chat_id=chat_id,
            text=text,
            plain=plain,
            parse_mode=parse_mode,
            reply_markup=params.get("reply_markup"),
            at=time.time(),
        )
        self.sent.append(message)
        self.by_chat[chat_id].append(message)
        self.messages[(chat_id, message.message_id)] = message
        return self._message_json(message)

    async def _m_sendchataction(self, params: Dict[str, Any]) -> Any:
        """sendChatAction: recorded in `chat_actions`."""
        chat_id = self._check_chat(params)
        self.chat_actions.append({"chat_id": chat_id, "action": params.get("action")})
        return True

    async def _m_answercallbackquery(self, params: Dict[str, Any]) -> Any:
        """answerCallbackQuery: each query can be answered once; recorded in `callback_answers`."""
        query_id = str(params.get("callback_query_id") or "")
        if query_id not in self._open_callbacks:
            raise TelegramError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(query_id)
        self.callback_answers.append({
            "callback_query_id": query_id,
            "text": params.get("text"),
            "show_alert": bool(params.get("show_alert", False)),
        })
        return True

    def _edited(self, params: Dict[str, Any]) -> SentMessage:
        """The stored bot message an edit refers to."""
        chat_id = self._check_chat(params)
        message = self.messages.get((chat_id, params.get("message_id")))
        if message is None:
            raise TelegramError(400, "Bad Request: message to edit not found")
        return message

    async def _m_editmessagereplymarkup(self, params: Dict[str, Any]) -> Any:
        """editMessageReplyMarkup (no markup removes the keyboard)."""
        message = self._edited(params)
        markup = params.get("reply_markup") or None
        check_markup(markup)
        if (markup or None) == (message.reply_markup or None):
            raise TelegramError(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
        message.reply_markup = markup
        message.edits += 1
        self.edits.append({"method": "editMessageReplyMarkup", "chat_id": message.chat_id, "message_id": message.message_id, "reply_markup": markup})
        return self._message_json(message)

    async def _m_editmessagetext(self, params: Dict[str, Any]) -> Any:
        """editMessageText."""
        message = self._edited(params)
        text, plain, parse_mode = self._render(params)
        markup = params.get("reply_markup") or None
        if text == message.text and markup == message.reply_markup:
            raise TelegramError(400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
        message.text, message.plain, message.parse_mode, message.reply_markup = text, plain, parse_mode, markup
        message.edits += 1
        self.edits.append({"method": "editMessageText", "chat_id": message.chat_id, "message_id": message.message_id, "text": text, "reply_markup": markup})
        return self._message_json(message)

    # --- control endpoints (for the standalone server) ---------------------------------------

    async def _control_stats(self, request: web.Request) -> web.Response:
        """GET /_fake/stats."""
        return web.json_response(self.stats())

    async def _control_sent(self, request: web.Request) -> web.Response:
        """GET /_fake/sent[?chat_id=N]: the sent messages."""
        chat = request.query.get("chat_id")
        rows = self.messages_for(int(chat)) if chat else self.sent
        return web.json_response([asdict(m) for m in rows])

    async def _control_push(self, request: web.Request) -> web.Response:
        """POST /_fake/updates: push one update (a dict) or several (a list)."""
        body = await request.json()
        updates = body if isinstance(body, list) else [body]
        return web.json_response([self.push_update(u) for u in updates])

    async def _control_user_text(self, request: web.Request) -> web.Response:
        """POST /_fake/user/text {"chat_id": N, "text": "..."}: the user types text (or a /command)."""
        body = await request.json()
        update = self.text_update(int(body["chat_id"]), str(body["text"]), first_name=body.get("first_name", "Sam"))
        return web.json_response(self.push_update(update))

    async def _control_user_tap(self, request: web.Request) -> web.Response:
        """POST /_fake/user/tap {"chat_id": N, "data": "...", "message_id": M|null}: the user taps an
        inline button under the bot's message M (default: the latest one sent to the chat)."""
        body = await request.json()
        update = self.callback_update(
            int(body["chat_id"]), str(body["data"]), body.get("message_id"), first_name=body.get("first_name", "Sam")
        )
        return web.json_response(self.push_update(update))

    async def _control_callback_answers(self, request: web.Request) -> web.Response:
        """GET /_fake/callback_answers: every answerCallbackQuery, and the queries still unanswered."""
        return web.json_response({"answers": self.callback_answers, "open": sorted(self._open_callbacks)})

    async def _control_block(self, request: web.Request) -> web.Response:
        """POST /_fake/block {"chat_id": N, "blocked": true}."""
        body = await request.json()
        (self.blocked.add if body.get("blocked", True) else self.blocked.discard)(int(body["chat_id"]))
        return web.json_response({"blocked": sorted(self.blocked)})

    async def _control_fail(self, request: web.Request) -> web.Response:
        """POST /_fake/fail {"count": N, "kind": "drop"|"lost_reply"|"502", "methods": [...]|null}."""
        body = await request.json()
        self.fail_next(int(body.get("count", 1)), body.get("kind", "drop"), body.get("methods", ["sendMessage"]))
        return web.json_response({"ok": True})

    async def _control_reset(self, request: web.Request) -> web.Response:
        """POST /_fake/reset: forget what was recorded."""
        self.reset()
        return web.json_response({"ok": True})


async def _serve(args: argparse.Namespace) -> None:
    """Run a FakeTelegram until interrupted."""
    fake = FakeTelegram(
        None if args.any_token else args.token,
        host=args.host,
        port=args.port,
        limits=not args.no_limits,
        max_per_second=args.max_per_second,
        per_chat_seconds=args.per_chat_seconds,
        latency=args.latency,
    )
    async with fake:
        print(f"fake Telegram Bot API on {fake.base_url} (token {fake.token})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            print(json.dumps(fake.stats()), flush=True)


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: python -m bench.fake_telegram --port N."""
    parser = argparse.ArgumentParser(description="A fake Telegram Bot API server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--any-token", action="store_true", help="accept any bot token")
    parser.add_argument("--no-limits", action="store_true", help="never answer 429")
    parser.add_argument("--max-per-second", type=int, default=30)
    parser.add_argument("--per-chat-seconds", type=float, default=1.0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
