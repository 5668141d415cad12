"""GET /api/plan.md: a champion's five steps plan as a Markdown file to send to their project lead."""
from __future__ import annotations

import asyncio
import logging
import re
from typing import Optional, Tuple

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from bot.db import make_engine, make_session_factory
from bot.models import utcnow
from bot.plan_models import Project
from bot.plans import Answer, PlanRepository, filename_for, load_content, plan_markdown
from bot.settings import Settings

log = logging.getLogger(__name__)

PATH = "/api/plan.md"
# The web chat's champions: Rasa knows them as "web-<sender id>", the app database as ("web", <sender id>).
CHANNEL = "web"
SENDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PROJECT_ID = re.compile(r"[0-9]{1,12}")

PLAN_SETTINGS = web.AppKey("plan_settings", Settings)
PLAN_REPOSITORY = web.AppKey("plan_repository", PlanRepository)


def add_plan_routes(
    app: web.Application, settings: Settings, engine_key: Optional[web.AppKey] = None
) -> None:
    """Serve GET /api/plan.md?sender_id=<web sender id>&project=<id> on app (call before it starts).

    With engine_key, plans are read through the engine the app already opened under that
    key (set by an earlier cleanup context); without it, through an engine of its own.
    """
    app[PLAN_SETTINGS] = settings

    async def plan_database(app: web.Application):
        """Open the plan repository when the app starts; close an engine of its own when it stops."""
        engine = app[engine_key] if engine_key is not None else make_engine(settings.database_url)
        app[PLAN_REPOSITORY] = PlanRepository(make_session_factory(engine))
        try:
            yield
        finally:
            if engine_key is None:
                engine.dispose()

    app.cleanup_ctx.append(plan_database)
    app.router.add_get(PATH, download_plan)


def _load(repo: PlanRepository, sender_id: str, project_id: str) -> Optional[Tuple[Project, dict]]:
    """The web champion's project and its answers, or None if either is not theirs or not there."""
    champion = repo.find_champion(CHANNEL, sender_id)
    if champion is None:
        return None
    project = repo.project(champion.id, project_id)
    if project is None:
        return None
    answers: dict[str, Answer] = repo.answers(project.id)
    return project, answers


def _json_error(status: int, message: str) -> web.Response:
    """A small JSON error body, as the rest of the web chat's API gives."""
    return web.json_response({"error": message}, status=status)


async def download_plan(request: web.Request) -> web.StreamResponse:
    """The plan as an attachment; 404 unless the project belongs to that sender."""
    sender_id = request.query.get("sender_id", "")
    project_id = request.query.get("project", "")
    if not SENDER_ID.fullmatch(sender_id) or not PROJECT_ID.fullmatch(project_id):
        return _json_error(400, "sender_id and project are required.")
    try:
        found = await asyncio.to_thread(_load, request.app[PLAN_REPOSITORY], sender_id, project_id)
    except SQLAlchemyError:
        log.exception("could not read a plan")
        return _json_error(503, "The plan could not be loaded just now.")
    if found is None:
        return _json_error(404, "There is no such plan.")
    project, answers = found
    body = plan_markdown(load_content(), project, answers, utcnow())
    filename = filename_for(project)
    return web.Response(
        text=body,
        content_type="text/markdown",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
