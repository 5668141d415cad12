"""The web chat: serves the chat page and relays its messages to Rasa (run with `python -m bot.web`)."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timezone
from pathlib import Path
from typing import Any, Dict, Optional

import aiohttp
import yaml
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.db import make_engine, make_session_factory, migrate
from bot.models import DIRECTION_IN, DIRECTION_OUT, ChatMessage
from bot.organisations import DirectoryCache, OrganisationError
from bot.my_data_download import add_my_data_routes
from bot.plan_download import add_plan_routes
from bot.rasa_client import RasaClient
from bot.rasa_replies import reply
from bot.repository import ChatRepository
from bot.settings import ROOT, Settings, load_settings
from bot.text import clean_text

log = logging.getLogger(__name__)

WEB_DIR = ROOT / "web"
INTERFACE_FILE = ROOT / "knowledge" / "interface.yml"
# The first visit also asks which organisation the champion volunteers with: the question's
# wording is the assistant's own (domain/champions.yml), the choices come from ORGANISATIONS_FILE.
CHAMPIONS_DOMAIN_FILE = ROOT / "domain" / "champions.yml"
ORGANISATION_QUESTION = "utter_ask_organisation"
CHANNEL = "web"
SENDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
HISTORY_DEFAULT = 200
HISTORY_MAX = 1000
# A message id for GET /api/history?after=... (digits, no sign, below 2**63).
AFTER_ID = re.compile(r"[0-9]{1,18}")
# Generous enough for a 100,000-character message of \u-escaped emoji; larger bodies get a 413.
CLIENT_MAX_SIZE = 4 * 1024 * 1024
REQUIRED_REPLIES = ("empty_message", "too_long", "trouble", "no_reply")

SETTINGS = web.AppKey("settings", Settings)
INTERFACE = web.AppKey("interface", dict)
REPOSITORY = web.AppKey("repository", ChatRepository)
ENGINE = web.AppKey("engine", Engine)
HTTP = web.AppKey("http", aiohttp.ClientSession)
RASA = web.AppKey("rasa", RasaClient)
DIRECTORIES = web.AppKey("directories", DirectoryCache)
QUESTION_TEXT = web.AppKey("question_text", str)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def load_interface(path: Path = INTERFACE_FILE) -> Dict[str, Any]:
    """Read the chat's own wording from knowledge/interface.yml, checking every reply is there."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    replies = data.get("replies") or {}
    missing = [key for key in REQUIRED_REPLIES if not isinstance(replies.get(key), str)]
    if missing:
        raise ValueError(f"{path} lacks replies: {', '.join(missing)}")
    data.setdefault("page", {})
    return data


def _error(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error body with the given HTTP status."""
    return web.json_response({"error": message, **extra}, status=status)


def _rejected(app: web.Application, reason: str, status: int = 200) -> web.Response:
    """A friendly reply to a message that was not passed on (nothing stored)."""
    wording = app[INTERFACE]["replies"]
    key = {"empty": "empty_message", "too_long": "too_long"}[reason]
    return web.json_response(
        {"accepted": False, "reason": reason, "messages": [reply(wording[key])]}, status=status
    )


def _message_json(message: ChatMessage) -> Dict[str, Any]:
    """A stored message as GET /api/history returns it (with its id, which only ever grows)."""
    created = message.created_at
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)  # SQLite drops the zone; we store UTC
    return {
        "id": message.id,
        "direction": message.direction,
        "text": message.text,
        "buttons": message.buttons or [],
        "created_at": created.isoformat() if created else None,
    }


async def _read_json(request: web.Request) -> Any:
    """The request body as JSON, or an HTTP error response to return instead."""
    if request.content_type != "application/json":
        return _error(400, "Send JSON with Content-Type: application/json.")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _rejected(request.app, "too_long", status=413)
    except (web.RequestPayloadError, HttpProcessingError):  # e.g. "Content-Encoding: gzip" on a body that is not gzip
        return _error(400, "The request body could not be read.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _error(400, "The request body is not valid JSON.")


async def post_message(request: web.Request) -> web.Response:
    """POST /api/messages: store the champion's message, ask Rasa, store and return its replies (with their ids)."""
    app = request.app
    settings = app[SETTINGS]
    body = await _read_json(request)
    if isinstance(body, web.Response):
        return body
    if not isinstance(body, dict):
        return _error(400, "The JSON body must be an object.")
    sender_id = body.get("sender_id")
    if not isinstance(sender_id, str) or not SENDER_ID.fullmatch(sender_id):
        return _error(400, "sender_id must be 1-64 letters, digits, '-' or '_'.")

    if body.get("payload") is not None:
        payload, title = body.get("payload"), body.get("title")
        if not isinstance(payload, str) or not isinstance(title, (str, type(None))):
            return _error(400, "payload and title must be strings.")
        to_rasa = clean_text(payload)
        shown = clean_text(title or "") or to_rasa
        stored_payload: Optional[str] = to_rasa
    else:
        text = body.get("text")
        if not isinstance(text, str):
            return _error(400, "Send either text, or payload and title, as strings.")
        to_rasa = shown = clean_text(text)
        # Typed words are read as words: a leading "/" would make Rasa take them as an intent
        # (a forged button), and could skip the crisis check. Buttons send `payload` instead.
        to_rasa = to_rasa.lstrip("/").strip()
        stored_payload = None
    if not to_rasa:
        return _rejected(app, "empty")
    if max(len(to_rasa), len(shown)) > settings.max_message_chars:
        return _rejected(app, "too_long")

    repository = app[REPOSITORY]
    wording = app[INTERFACE]["replies"]
    try:
        champion = await asyncio.to_thread(repository.get_or_create_champion, CHANNEL, sender_id)
        stored_in = await asyncio.to_thread(
            repository.add_message, champion, DIRECTION_IN, shown, None, stored_payload
        )
    except SQLAlchemyError:
        log.exception("could not store an incoming web message")
        return web.json_response(
            {"accepted": False, "reason": "unavailable", "messages": [reply(wording["trouble"])]},
            status=503,
        )

    reason = None
    messages = await app[RASA].replies(app[HTTP], f"{CHANNEL}-{sender_id}", to_rasa)
    if messages is None:
        messages, reason = [reply(wording["trouble"])], "rasa_unavailable"
    elif not messages:
        messages = [reply(wording["no_reply"])]

    try:
        for message in messages:
            stored = await asyncio.to_thread(
                repository.add_message, champion, DIRECTION_OUT, message["text"], message["buttons"]
            )
            message["id"] = stored.id
    except SQLAlchemyError:
        log.exception("could not store the companion's reply")
    # The stored ids let the page skip these messages when it polls GET /api/history?after=...
    result: Dict[str, Any] = {"accepted": True, "id": stored_in.id, "messages": messages}
    if reason:
        result["reason"] = reason
    return web.json_response(result)


async def get_history(request: web.Request) -> web.Response:
    """GET /api/history?sender_id=...: the stored transcript, oldest first.

    With after=<message id>: only the messages stored since (the first `limit` of them), which is
    how the open page picks up messages the assistant sends on its own (bot.delivery.WebSender).
    """
    sender_id = request.query.get("sender_id", "")
    if not SENDER_ID.fullmatch(sender_id):
        return _error(400, "sender_id must be 1-64 letters, digits, '-' or '_'.")
    try:
        limit = int(request.query.get("limit", HISTORY_DEFAULT))
    except ValueError:
        return _error(400, "limit must be a whole number.")
    limit = max(1, min(limit, HISTORY_MAX))
    after: Optional[int] = None
    if "after" in request.query:
        raw_after = request.query["after"]
        if not AFTER_ID.fullmatch(raw_after):
            return _error(400, "after must be a message id (a whole number).")
        after = int(raw_after)
    repository = request.app[REPOSITORY]
    try:
        champion = await asyncio.to_thread(repository.find_champion, CHANNEL, sender_id)
        if champion is None:
            rows = []
        elif after is None:
            rows = await asyncio.to_thread(repository.history, champion, limit)
        else:
            rows = await asyncio.to_thread(repository.history_after, champion, after, limit)
    except SQLAlchemyError:
        log.exception("could not read a web transcript")
        return _error(503, "The conversation could not be loaded just now.")
    return web.json_response({"messages": [_message_json(row) for row in rows]})


def load_question_text(path: Path = CHAMPIONS_DOMAIN_FILE) -> str:
    """The assistant's "which organisation do you volunteer with?" wording ("" if it can't be read)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        text = data["responses"][ORGANISATION_QUESTION][0]["text"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        log.exception("no %s in %s: the first visit won't ask for the organisation", ORGANISATION_QUESTION, path)
        return ""
    return text if isinstance(text, str) else ""


def organisation_question(app: web.Application) -> Optional[Dict[str, Any]]:
    """The question and its buttons for a first visit, or None (no organisations, or the file is broken)."""
    text = app[QUESTION_TEXT]
    if not text:
        return None
    try:
        directory = app[DIRECTORIES].get(app[SETTINGS].organisations_file)
    except (OSError, OrganisationError):
        log.exception("the organisations file can't be used: the first visit won't ask for the organisation")
        return None
    if not directory.organisations:
        return None
    return {"text": text, "buttons": directory.buttons()}


async def get_interface(request: web.Request) -> web.Response:
    """GET /api/interface: the page's own wording, the message length limit and the organisation question."""
    return web.json_response(
        {
            "page": request.app[INTERFACE]["page"],
            "max_message_chars": request.app[SETTINGS].max_message_chars,
            "organisation_question": await asyncio.to_thread(organisation_question, request.app),
        }
    )


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the app database answers."""

    def ping() -> None:
        with request.app[ENGINE].connect() as connection:
            connection.execute(sql_text("SELECT 1"))

    try:
        await asyncio.to_thread(ping)
    except SQLAlchemyError:
        return web.json_response({"status": "error", "database": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


async def index(_request: web.Request) -> web.FileResponse:
    """GET /: the chat page."""
    return web.FileResponse(WEB_DIR / "index.html")


@web.middleware
async def json_errors(request: web.Request, handler):
    """Give API callers a JSON body for every error, and never a bare traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception as exc:  # noqa: BLE001 - last resort: log it, answer kindly
        if isinstance(exc, OSError) and request.path.startswith("/static/"):
            # A static file name the file system refuses (e.g. too long): there is no such file.
            log.info("no static file for a request: %s", exc.strerror)
            raise web.HTTPNotFound() from None
        log.exception("unexpected error on %s %s", request.method, request.path)
        if not request.path.startswith("/api/"):
            raise
        trouble = request.app[INTERFACE]["replies"]["trouble"]
        return web.json_response(
            {"error": "Internal error.", "messages": [reply(trouble)]}, status=500
        )


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Add a strict content security policy and friends to every response."""
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"
    else:
        response.headers.setdefault("Cache-Control", "no-cache")


async def _resources(app: web.Application):
    """Migrate the database, then open the engine and the Rasa HTTP session; close them on exit."""
    settings = app[SETTINGS]
    await asyncio.to_thread(migrate, settings.database_url)
    engine = make_engine(settings.database_url)
    app[ENGINE] = engine
    app[REPOSITORY] = ChatRepository(make_session_factory(engine))
    app[HTTP] = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.rasa_timeout_seconds)
    )
    app[RASA] = RasaClient(settings.rasa_urls)
    try:
        yield
    finally:
        await app[HTTP].close()
        engine.dispose()


class PathOnlyAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without the query string: a web chat's sender_id (its key to the
    transcript) travels in the query of GET /api/history, /api/my-data.json and /api/plan.md."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """One line per request: method, path, status, bytes sent and seconds taken."""
        self.logger.info(
            '"%s %s" %s %s %.3fs', request.method, request.path, response.status, response.body_length, time
        )


class QuietMalformedRequests(logging.Filter):
    """aiohttp logs each malformed HTTP request it refuses (400), and a body it could not decode, as an
    error with a traceback and the request's own bytes, which may hold a sender id: log one line
    naming the kind of fault instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record of a refused malformed request; let every other record through."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (HttpProcessingError, web.RequestPayloadError)):
            code = getattr(error, "code", 400)
            record.msg, record.args = "refused a malformed HTTP request (%s): %s", (code, type(error).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def build_app(settings: Settings) -> web.Application:
    """The web chat application; the database is migrated when it starts."""
    app = web.Application(middlewares=[json_errors], client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[INTERFACE] = load_interface()
    app[DIRECTORIES] = DirectoryCache()
    app[QUESTION_TEXT] = load_question_text()
    app.cleanup_ctx.append(_resources)
    add_plan_routes(app, settings, engine_key=ENGINE)
    add_my_data_routes(app, settings, engine_key=ENGINE)
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/interface", get_interface)
    app.router.add_get("/api/history", get_history)
    app.router.add_post("/api/messages", post_message)
    app.router.add_static("/static/", WEB_DIR, follow_symlinks=False)
    return app


def main() -> None:
    """Run the web chat on WEB_HOST:WEB_PORT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.server").addFilter(QuietMalformedRequests())
    settings = load_settings()
    log.info("web chat on http://%s:%s (Rasa at %s)", settings.web_host, settings.web_port, settings.rasa_url)
    web.run_app(
        build_app(settings), host=settings.web_host, port=settings.web_port, print=None,
        access_log_class=PathOnlyAccessLogger,
    )


if __name__ == "__main__":
    main()
