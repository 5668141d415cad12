"""The engagement team's console: server-rendered pages (Jinja2, autoescaped) behind a sign-in.

Every page but the sign-in page needs a live session (a random token in an
HttpOnly, SameSite=Strict cookie; bot.console.accounts keeps its hash). Every
form carries a CSRF token: the session's own once signed in, and a
double-submit cookie on the sign-in form. Sending, scheduling, cancelling,
group changes and every export are written to the audit log with who and when.
Pages use the same functions as the command-line tool (bot.broadcasts,
bot.groups, bot.reflection_export, bot.reflection_report).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple
from urllib.parse import urlencode

import yaml
from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.engine import Engine

from bot.broadcasts import MAX_TEXT_CHARS, Broadcasts, Target
from bot.console.accounts import SignedIn, SignInRefused, TeamAccounts, same_token
from bot.db import make_engine, make_session_factory, migrate
from bot.groups import ChampionSummary, GroupRepository, TeamInputError
from bot.organisations import DirectoryCache, OrganisationError
from bot.plans import fill
from bot.reflection_export import ReflectionFilter, csv_bytes, fetch_shared
from bot.reflection_report import STYLE, render_html, render_sections, report_data
from bot.settings import ROOT, Settings
from bot.team import format_when, parse_when
from bot.team_auth import NotAuthorised, authorise_member
from bot.team_models import GROUP_KINDS

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
WORDING_FILE = ROOT / "knowledge" / "console.yml"
SESSION_COOKIE = "console_session"
SIGN_IN_CSRF_COOKIE = "console_sign_in_csrf"
CLIENT_MAX_SIZE = 256 * 1024
CHAMPIONS_SHOWN = 500
SEARCH_MAX = 100

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
ACCOUNTS = web.AppKey("accounts", TeamAccounts)
BROADCASTS = web.AppKey("broadcasts", Broadcasts)
GROUPS = web.AppKey("groups", GroupRepository)
SESSIONS = web.AppKey("sessions", object)
JINJA = web.AppKey("jinja", Environment)
WORDING = web.AppKey("wording", dict)
DIRECTORIES = web.AppKey("directories", DirectoryCache)
MEMBER = "console_member"  # request key: the SignedIn member


def load_wording(path: Path = WORDING_FILE) -> Dict[str, Any]:
    """The console's notices and error wording (knowledge/console.yml)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _short_when(moment: Optional[datetime]) -> str:
    """A time in a table: "26 Nov 2026 14:00" (London), or a dash."""
    return format_when(moment).replace(" (London time)", "") if moment else "-"


def make_jinja() -> Environment:
    """The template environment: every value escaped unless a template says otherwise."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_when
    env.filters["short_when"] = _short_when
    return env


async def _db(call: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking database call off the event loop."""
    return await asyncio.to_thread(call, *args, **kwargs)


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page from template, with the signed-in member, their CSRF token and the wording."""
    member: Optional[SignedIn] = request.get(MEMBER)
    page = request.app[JINJA].get_template(template).render(
        member=member,
        csrf=member.csrf_token if member else "",
        words=request.app[WORDING],
        path=request.path,
        notice=request.app[WORDING]["notices"].get(request.query.get("notice", ""), ""),
        **context,
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def _problem(request: web.Request, key: str, status: int) -> web.Response:
    """A short page saying what went wrong (wording from knowledge/console.yml)."""
    return render(request, "problem.html", status=status, problem=request.app[WORDING]["problems"][key])


def _local_path(target: str) -> str:
    """target when it is a path on this site (for "back to where you were"), else "/"."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target and len(target) < 500:
        return target
    return "/"


# --- sign-in, sessions and CSRF -----------------------------------------------------------------

PUBLIC = {"/sign-in", "/healthz", "/static/console.css", "/static/report.css"}


@web.middleware
async def signed_in_only(request: web.Request, handler) -> web.StreamResponse:
    """Every page but the public ones needs a live session; every POST needs the session's CSRF token."""
    if request.path in PUBLIC:
        return await handler(request)
    member = await _db(request.app[ACCOUNTS].session, request.cookies.get(SESSION_COOKIE))
    if member is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/sign-in?" + urlencode({"next": _local_path(request.path_qs)}))
        return _problem(request, "signed_out", 401)
    request[MEMBER] = member
    if request.method == "POST":
        form = await request.post()
        if not same_token(member.csrf_token, form.get("csrf_token")):
            return _problem(request, "csrf", 403)
    return await handler(request)


async def sign_in_page(request: web.Request) -> web.Response:
    """The sign-in form, with a fresh double-submit CSRF token when the browser has none."""
    token = request.cookies.get(SIGN_IN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "sign_in.html", csrf_sign_in=token, next=_local_path(request.query.get("next", "/")),
                      error="", username="")
    _set_cookie(request, response, SIGN_IN_CSRF_COOKIE, token, max_age=3600)
    return response


async def sign_in(request: web.Request) -> web.Response:
    """Check the name and password (limited failures); on success open a session and go where they were going."""
    form = await request.post()
    expected = request.cookies.get(SIGN_IN_CSRF_COOKIE) or ""
    if not expected or not same_token(expected, form.get("csrf_token")):
        return _problem(request, "csrf", 403)
    username = str(form.get("username", ""))[:200]
    target = _local_path(str(form.get("next", "/")))
    try:
        token = await _db(request.app[ACCOUNTS].sign_in, username, str(form.get("password", "")))
    except SignInRefused as refused:
        words = request.app[WORDING]["sign_in"]
        minutes = f"{request.app[SETTINGS].console_lockout_minutes:g}"
        error = fill(words["locked"], minutes=minutes) if refused.reason == "locked" else words["wrong"]
        status = 429 if refused.reason == "locked" else 401
        response = render(request, "sign_in.html", status=status, csrf_sign_in=expected, next=target,
                          error=error, username=username)
        return response
    log.info("console: a team member signed in")
    response = web.HTTPSeeOther(target)
    _set_cookie(request, response, SESSION_COOKIE, token, max_age=None)
    response.del_cookie(SIGN_IN_CSRF_COOKIE, path="/")
    raise response


async def sign_out(request: web.Request) -> web.Response:
    """End this browser's session and go back to the sign-in page."""
    await _db(request.app[ACCOUNTS].sign_out, request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/sign-in?notice=signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def _set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str,
                max_age: Optional[int]) -> None:
    """An HttpOnly, SameSite=Strict cookie for the whole console (Secure when configured)."""
    response.set_cookie(
        name, value, path="/", httponly=True, samesite="Strict", max_age=max_age,
        secure=request.app[SETTINGS].console_secure_cookie,
    )


def _team_pass(request: web.Request):
    """The TeamPass the shared team functions need, for the signed-in member."""
    return authorise_member(request[MEMBER])


async def _audit(request: web.Request, action: str, detail: str) -> None:
    """Record what the signed-in member did."""
    await _db(request.app[ACCOUNTS].record, request[MEMBER].username, action, detail)


# --- pages --------------------------------------------------------------------------------------


async def home(request: web.Request) -> web.Response:
    """The start page: what the console can do, and the latest messages."""
    broadcasts = await _db(request.app[BROADCASTS].list_broadcasts, 5)
    return render(request, "home.html", broadcasts=broadcasts)


def _matches(champion: ChampionSummary, labels: List[str], query: str) -> bool:
    """True when query (folded) appears in the champion's name, id, organisation, channel or groups."""
    haystack = " ".join([champion.name, str(champion.id), champion.organisation or "", champion.channel, *labels])
    return query in haystack.casefold()


async def champions(request: web.Request) -> web.Response:
    """The champions, searchable, with their groups; forms to group them."""
    groups_repo = request.app[GROUPS]
    everyone, labels, groups = await asyncio.gather(
        _db(groups_repo.list_champions), _db(groups_repo.champion_group_labels), _db(groups_repo.list_groups),
    )
    query = " ".join(request.query.get("q", "").split())[:SEARCH_MAX]
    found = [c for c in everyone if not query or _matches(c, labels.get(c.id, []), query.casefold())]
    return render(
        request, "champions.html", champions=found[:CHAMPIONS_SHOWN], more=max(0, len(found) - CHAMPIONS_SHOWN),
        total=len(everyone), labels=labels, groups=groups, query=query, kinds=GROUP_KINDS,
        error=request.query.get("error", "")[:300],
    )


async def change_groups(request: web.Request) -> web.Response:
    """Put the ticked champions into a group, or take them out."""
    form = await request.post()
    back = _local_path(str(form.get("back", "/champions")))
    groups = {str(g.id): g for g in await _db(request.app[GROUPS].list_groups)}
    group = groups.get(str(form.get("group", "")))
    ids = []
    for value in form.getall("champion", []):
        if str(value).isdigit() and len(str(value)) < 12:
            ids.append(int(value))
    words = request.app[WORDING]["problems"]
    if group is None:
        _redirect_with(back, error=words["pick_group"])
    if not ids:
        _redirect_with(back, error=words["pick_champions"])
    action = str(form.get("action", ""))
    repo = request.app[GROUPS]
    if action == "add":
        changed = await _db(repo.add_members, group.kind, group.name, ids, auth=_team_pass(request))
    elif action == "remove":
        changed = await _db(repo.remove_members, group.kind, group.name, ids, auth=_team_pass(request))
    else:
        _redirect_with(back, error=words["pick_action"])
    await _audit(request, f"group {action}", f"{group.label}: champions {', '.join(map(str, ids[:50]))}")
    _redirect_with(back, notice=f"group_{action}", changed=str(changed))


async def create_group(request: web.Request) -> web.Response:
    """Make a new group (organisation, cohort or project)."""
    form = await request.post()
    try:
        group, created = await _db(request.app[GROUPS].create_group, str(form.get("kind", "")),
                                   str(form.get("name", ""))[:500], auth=_team_pass(request))
    except TeamInputError as problem:
        _redirect_with("/champions", error=str(problem))
    if created:
        await _audit(request, "group create", f"{group.kind}: {group.name}")
    _redirect_with("/champions", notice="group_created" if created else "group_exists")


def _redirect_with(path: str, **query: str) -> NoReturn:
    """303 to path with query values (errors and notices travel this way after a form)."""
    separator = "&" if "?" in path else "?"
    raise web.HTTPSeeOther(path + (separator + urlencode(query) if query else ""))


# --- messages -----------------------------------------------------------------------------------


def _compose_values(form) -> Dict[str, str]:
    """What the team member typed into the compose form, kept so nothing they wrote is lost."""
    return {
        "to": str(form.get("to", "everyone")),
        "group": str(form.get("group", "")),
        "champion": str(form.get("champion", ""))[:20],
        "text": str(form.get("text", ""))[: MAX_TEXT_CHARS * 2],
        "when": str(form.get("when", "now")),
        "send_at": str(form.get("send_at", ""))[:40],
    }


def _target(values: Dict[str, str], groups: Dict[str, Any], words: Dict[str, str]) -> Target:
    """The Target the compose form describes, or TeamInputError saying what to fix."""
    if values["to"] == "everyone":
        return Target.everyone()
    if values["to"] == "group":
        group = groups.get(values["group"])
        if group is None:
            raise TeamInputError(words["pick_group"])
        return Target.group(group.kind, group.name)
    if values["to"] == "champion":
        if not values["champion"].strip().isdigit():
            raise TeamInputError(words["champion_id"])
        return Target.champion(int(values["champion"].strip()))
    raise TeamInputError(words["pick_recipients"])


def _send_at(values: Dict[str, str], words: Dict[str, str]) -> Optional[datetime]:
    """None to send now, or the scheduled time (London) as UTC; TeamInputError if missing, unreadable or past."""
    if values["when"] != "later":
        return None
    if not values["send_at"].strip():
        raise TeamInputError(words["pick_time"])
    return parse_when(values["send_at"])


async def messages(request: web.Request) -> web.Response:
    """The compose form and the list of messages sent and scheduled."""
    return await _compose(request, {"to": "everyone", "group": "", "champion": "", "text": "", "when": "now",
                                    "send_at": ""}, error="")


async def _compose(request: web.Request, values: Dict[str, str], error: str, status: int = 200) -> web.Response:
    """The messages page with values in the form and error (if any) above it."""
    broadcasts, groups = await asyncio.gather(
        _db(request.app[BROADCASTS].list_broadcasts, 50), _db(request.app[GROUPS].list_groups),
    )
    return render(request, "messages.html", status=status, values=values, error=error, broadcasts=broadcasts,
                  groups=groups, max_chars=MAX_TEXT_CHARS)


async def preview_message(request: web.Request) -> web.Response:
    """Check the message and show it as it will look on a phone, with who gets it, before sending."""
    values = _compose_values(await request.post())
    words = request.app[WORDING]["problems"]
    groups = {str(g.id): g for g in await _db(request.app[GROUPS].list_groups)}
    try:
        target = _target(values, groups, words)
        when = _send_at(values, words)
        preview = await _db(request.app[BROADCASTS].preview, target, values["text"])
    except TeamInputError as problem:
        return await _compose(request, values, str(problem), status=400)
    return render(request, "preview.html", values=values, preview=preview, when=when)


async def send_message(request: web.Request) -> web.Response:
    """Send or schedule the previewed message (or go back to change it); recorded in the audit log."""
    form = await request.post()
    values = _compose_values(form)
    if form.get("do") != "send":
        return await _compose(request, values, error="")
    words = request.app[WORDING]["problems"]
    groups = {str(g.id): g for g in await _db(request.app[GROUPS].list_groups)}
    try:
        target = _target(values, groups, words)
        when = _send_at(values, words)
        info = await _db(request.app[BROADCASTS].create_broadcast, values["text"], target,
                         request[MEMBER].username, when, auth=_team_pass(request))
    except TeamInputError as problem:
        return await _compose(request, values, str(problem), status=400)
    action = "message schedule" if when else "message send"
    await _audit(request, action, f"broadcast {info.id} to {info.target}, at {format_when(info.send_at)}")
    _redirect_with(f"/messages/{info.id}", notice="scheduled" if when else "sending")


def _broadcast_id(request: web.Request) -> int:
    """The broadcast id in the path (the route allows digits only)."""
    return int(request.match_info["broadcast_id"])


async def message_report(request: web.Request) -> web.Response:
    """One message: what was sent, to whom, and how delivery went (sent, failed and why, left out)."""
    try:
        report = await _db(request.app[BROADCASTS].report, _broadcast_id(request))
    except TeamInputError:
        return _problem(request, "no_message", 404)
    return render(request, "report.html", report=report, error=request.query.get("error", "")[:300])


async def cancel_message(request: web.Request) -> web.Response:
    """Cancel a scheduled message, or stop what is still queued of a sending one."""
    broadcast_id = _broadcast_id(request)
    try:
        _info, stopped = await _db(request.app[BROADCASTS].cancel_broadcast, broadcast_id, auth=_team_pass(request))
    except TeamInputError as problem:
        _redirect_with(f"/messages/{broadcast_id}", error=str(problem))
    await _audit(request, "message cancel", f"broadcast {broadcast_id}, {stopped} queued messages stopped")
    _redirect_with(f"/messages/{broadcast_id}", notice="cancelled")


# --- reflections --------------------------------------------------------------------------------


def _filter_values(request: web.Request) -> Dict[str, str]:
    """The reflection filters from the query string, trimmed."""
    return {key: request.query.get(key, "")[:200] for key in ("from", "to", "session", "organisation")}


def _filters(values: Dict[str, str]) -> ReflectionFilter:
    """A ReflectionFilter from the form's values, or TeamInputError."""
    return ReflectionFilter.parse(values["from"], values["to"], values["session"], values["organisation"])


def _organisations(request: web.Request) -> List[Tuple[str, str]]:
    """(key, name) of every organisation in the directory, for the filter's choice."""
    try:
        directory = request.app[DIRECTORIES].get(request.app[SETTINGS].organisations_file)
    except OrganisationError:
        return []
    return [(o.key, o.name) for o in directory.organisations]


async def reflections(request: web.Request) -> web.Response:
    """The reflections report with its charts, filtered by dates, session and organisation."""
    values = _filter_values(request)
    try:
        filters = _filters(values)
        selection = await _db(fetch_shared, request.app[SESSIONS], filters, auth=_team_pass(request))
    except TeamInputError as problem:
        return render(request, "reflections.html", status=400, values=values, error=str(problem), report="",
                      organisations=_organisations(request), query="")
    report = render_sections(report_data(selection), heading_level=2)
    query = urlencode({k: v for k, v in values.items() if v})
    return render(request, "reflections.html", values=values, error="", report=report,
                  organisations=_organisations(request), query=query)


async def _selection_or_problem(request: web.Request):
    """(filters, selection) for an export, or a problem page when the filters are wrong."""
    filters = _filters(_filter_values(request))
    return filters, await _db(fetch_shared, request.app[SESSIONS], filters, auth=_team_pass(request))


async def export_csv(request: web.Request) -> web.Response:
    """The shared reflections as CSV (private ones never; anonymous ones without names); audited."""
    try:
        filters, selection = await _selection_or_problem(request)
    except TeamInputError:
        return _problem(request, "bad_filter", 400)
    await _audit(request, "reflections export csv", f"{filters.describe()}; {len(selection.shared)} reflections")
    return web.Response(
        body=csv_bytes(selection), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="reflections.csv"'},
    )


async def export_report(request: web.Request) -> web.Response:
    """The reflections report as one self-contained HTML file to download; audited."""
    try:
        filters, selection = await _selection_or_problem(request)
    except TeamInputError:
        return _problem(request, "bad_filter", 400)
    await _audit(request, "reflections export report", filters.describe())
    return web.Response(
        text=render_html(report_data(selection)), content_type="text/html", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="reflections-report.html"'},
    )


async def audit(request: web.Request) -> web.Response:
    """The audit log: who sent, scheduled, cancelled, grouped or exported what, and when."""
    return render(request, "audit.html", entries=await _db(request.app[ACCOUNTS].audit_log, 300))


async def report_css(_request: web.Request) -> web.Response:
    """The reflections report's own style sheet (the same as in the downloaded report)."""
    return web.Response(text=STYLE, content_type="text/css", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    """Liveness for the process runner."""
    return web.json_response({"ok": True})


# --- the application ----------------------------------------------------------------------------


@web.middleware
async def friendly_errors(request: web.Request, handler) -> web.StreamResponse:
    """Not found, wrong method, too large and unexpected errors get a short page, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405, 413):
            return _problem(request, {404: "not_found", 405: "not_found", 413: "too_large"}[exc.status], exc.status)
        raise
    except NotAuthorised:
        return _problem(request, "signed_out", 401)
    except Exception:  # noqa: BLE001 - any other fault: logged, and a plain page for the person
        log.exception("console error on %s %s", request.method, request.path)
        return _problem(request, "trouble", 500)


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """A strict content security policy, no framing, no caching of team data."""
    for name, value in SECURITY_HEADERS.items():
        if name == "Cache-Control" and "Cache-Control" in response.headers:
            continue
        response.headers[name] = value


async def _resources(app: web.Application):
    """Migrate the database, then open the engine and the repositories; dispose of them on exit."""
    settings = app[SETTINGS]
    await asyncio.to_thread(migrate, settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    app[ENGINE] = engine
    app[SESSIONS] = sessions
    app[ACCOUNTS] = accounts_for(settings, sessions)
    app[BROADCASTS] = Broadcasts(sessions)
    app[GROUPS] = GroupRepository(sessions)
    try:
        yield
    finally:
        engine.dispose()


def accounts_for(settings: Settings, sessions) -> TeamAccounts:
    """TeamAccounts with the configured session length and sign-in limit."""
    return TeamAccounts(
        sessions,
        max_failures=settings.console_max_failures,
        lockout=timedelta(minutes=settings.console_lockout_minutes),
        idle=timedelta(minutes=settings.console_idle_minutes),
    )


def build_app(settings: Settings) -> web.Application:
    """The console application; the database is migrated when it starts."""
    app = web.Application(middlewares=[friendly_errors, signed_in_only], client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[JINJA] = make_jinja()
    app[WORDING] = load_wording()
    app[DIRECTORIES] = DirectoryCache()
    app.cleanup_ctx.append(_resources)
    app.on_response_prepare.append(_security_headers)
    router = app.router
    router.add_get("/sign-in", sign_in_page)
    router.add_post("/sign-in", sign_in)
    router.add_post("/sign-out", sign_out)
    router.add_get("/", home)
    router.add_get("/champions", champions)
    router.add_post("/champions/groups", change_groups)
    router.add_post("/groups", create_group)
    router.add_get("/messages", messages)
    router.add_post("/messages/preview", preview_message)
    router.add_post("/messages/send", send_message)
    router.add_get(r"/messages/{broadcast_id:\d{1,12}}", message_report)
    router.add_post(r"/messages/{broadcast_id:\d{1,12}}/cancel", cancel_message)
    router.add_get("/reflections", reflections)
    router.add_get("/reflections/export.csv", export_csv)
    router.add_get("/reflections/report.html", export_report)
    router.add_get("/audit", audit)
    router.add_get("/healthz", healthz)
    router.add_get("/static/report.css", report_css)
    router.add_static("/static/", STATIC, follow_symlinks=False)
    return app
