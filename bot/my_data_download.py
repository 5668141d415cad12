"""GET /api/my-data.json: everything held about a web chat champion, as a JSON file (bot/my_data.py).

Like the plan download (bot/plan_download.py), the champion is identified by their web sender
id, the random id only their own browser holds (the same id GET /api/history reads their
transcript with). A champion who asked for their data to be deleted gets 404, as does an
unknown id. Rasa's stored conversation comes from the tracker store in RASA_ENDPOINTS.
"""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Optional

from aiohttp import web

from bot.db import make_engine, make_session_factory
from bot.my_data import FILENAME, MyDataFiles
from bot.rasa_tracker import TrackerEvents
from bot.settings import Settings

log = logging.getLogger(__name__)

PATH = "/api/my-data.json"
CHANNEL = "web"
SENDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

MY_DATA_FILES = web.AppKey("my_data_files", MyDataFiles)


def add_my_data_routes(app: web.Application, settings: Settings, engine_key: Optional[web.AppKey] = None) -> None:
    """Serve GET /api/my-data.json?sender_id=<web sender id> on app (call before it starts).

    With engine_key, the app database is read through the engine the app already opened
    under that key (set by an earlier cleanup context); without it, through one of its own.
    """

    async def my_data_resources(app: web.Application):
        """Open the app database and Rasa's store when the app starts; close them when it stops."""
        engine = app[engine_key] if engine_key is not None else make_engine(settings.database_url)
        files = MyDataFiles(make_session_factory(engine), TrackerEvents.from_settings(settings))
        app[MY_DATA_FILES] = files
        try:
            yield
        finally:
            files.close()
            if engine_key is None:
                engine.dispose()

    app.cleanup_ctx.append(my_data_resources)
    app.router.add_get(PATH, download_my_data)


async def download_my_data(request: web.Request) -> web.StreamResponse:
    """The champion's data as an attachment; 404 when there is no such web champion."""
    sender_id = request.query.get("sender_id", "")
    if not SENDER_ID.fullmatch(sender_id):
        return web.json_response({"error": "sender_id is required."}, status=400)
    try:
        body = await asyncio.to_thread(request.app[MY_DATA_FILES].for_sender, CHANNEL, sender_id)
    except Exception:  # noqa: BLE001 - the app database or Rasa's store is away
        log.exception("could not build a my-data file")
        return web.json_response({"error": "Your data could not be loaded just now."}, status=503)
    if body is None:
        return web.json_response({"error": "There is no data about you."}, status=404)
    return web.Response(
        body=body,
        content_type="application/json",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{FILENAME}"', "Cache-Control": "no-store"},
    )

