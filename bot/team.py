"""The engagement team's command-line tool: broadcasts to champions, groups, the list of champions, and reflections.

Run `python -m bot.team --help`. Every command needs the team token (TEAM_TOKEN in the
configuration); the tool reads it from COMPANION_TEAM_TOKEN, a --token-file, or asks for it.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, TextIO

from bot.broadcasts import (
    MAX_TEXT_CHARS,
    PAST_SLACK,
    BroadcastInfo,
    Broadcasts,
    Preview,
    Target,
)
from bot.groups import ChampionSummary, GroupRepository, TeamInputError
from bot.models import utcnow
from bot.team_auth import NotAuthorised, TeamPass, authorise

EXIT_OK = 0
EXIT_NOT_DONE = 1  # the team member said no, so nothing was sent
EXIT_BAD_INPUT = 2  # argparse uses 2 as well
EXIT_NOT_AUTHORISED = 3
EXIT_DATABASE = 4

TOKEN_ENV = "COMPANION_TEAM_TOKEN"
LONDON = "Europe/London"
# British usage: 3/4 is the 3rd of April; times are London's; "Thursday" means the coming one.
DATEPARSER_SETTINGS = {
    "DATE_ORDER": "DMY",
    "PREFER_DATES_FROM": "future",
    "TIMEZONE": LONDON,
    "RETURN_AS_TIMEZONE_AWARE": True,
}
TOKEN_FILE_MAX_BYTES = 4096


def _london():
    """The Europe/London time zone."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(LONDON)


# --- times --------------------------------------------------------------------------------------


def parse_when(text: str, now: Optional[datetime] = None) -> datetime:
    """A send time typed the British way ("Thursday 2pm", "27/11/2026 14:00", ISO) as UTC; TeamInputError if unreadable or past."""
    raw = " ".join(str(text or "").split())
    if not raw:
        raise TeamInputError('Say when to send it, e.g. --at "Thursday 2pm" (or leave --at out to send now).')
    now = (now or utcnow()).astimezone(timezone.utc)
    london = _london()
    when: Optional[datetime]
    try:
        when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        when = None
    if when is not None:
        if when.tzinfo is None:
            when = when.replace(tzinfo=london)
    else:
        import dateparser

        settings = dict(DATEPARSER_SETTINGS, RELATIVE_BASE=now.astimezone(london).replace(tzinfo=None))
        when = dateparser.parse(raw, languages=["en"], settings=settings)
        if when is None:
            raise TeamInputError(
                f"I can't read {raw[:60]!r} as a time. Try \"Thursday 2pm\", \"27/11/2026 14:00\" "
                "(day first) or 2026-11-27T14:00."
            )
        if when.tzinfo is None:
            when = when.replace(tzinfo=london)
    when = when.astimezone(timezone.utc)
    if when < now - PAST_SLACK:
        raise TeamInputError(f"{raw[:60]!r} means {format_when(when)}, which has already passed.")
    return when


def format_when(moment: Optional[datetime]) -> str:
    """A time as London reads it: "Thu 26 Nov 2026, 14:00 (London time)"."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(_london()).strftime("%a %d %b %Y, %H:%M") + " (London time)"


def _short_when(moment: Optional[datetime]) -> str:
    """A time in a table: "26 Nov 2026 14:00" (London)."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(_london()).strftime("%d %b %Y %H:%M")


# --- the command line ---------------------------------------------------------------------------

DESCRIPTION = """\
The engagement team's tool for the co-production companion: send a message to
champions now or later, see how a message went, keep groups of champions, and
export or summarise the reflections champions chose to share.

Every command needs the team token (TEAM_TOKEN in the companion's configuration).
Give it in the environment variable COMPANION_TEAM_TOKEN, or with --token-file,
or type it when asked."""

EXAMPLES = """\
examples:
  python -m bot.team broadcast preview --to all --text "Papers for Thursday are out"
  python -m bot.team broadcast send --to group:cohort:"Spring 2026" --text-file note.txt --at "Thursday 2pm"
  python -m bot.team broadcast report 7
  python -m bot.team group create organisation "Leeds Teaching Hospitals"
  python -m bot.team group add organisation "Leeds Teaching Hospitals" 12 15 18
  python -m bot.team champion list
  python -m bot.team reflections export --from 2026-11-01 --to 2026-11-30 --out november.csv
  python -m bot.team reflections report --from 1/11/2026 --to 30/11/2026 --session board --out report.html"""

TO_HELP = (
    "who gets it: all (every champion), group:<kind>:<name> (kind is organisation, cohort or "
    'project, e.g. group:cohort:"Spring 2026"), or champion:<id> (one champion; ids from '
    "'champion list')"
)


def _common_options() -> argparse.ArgumentParser:
    """Options every command accepts, also after the command's name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--token-file",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"read the team token from this file (instead of {TOKEN_ENV} or typing it)",
    )
    return common


def _message_options(parser: argparse.ArgumentParser) -> None:
    """--to, and --text or --text-file."""
    parser.add_argument("--to", required=True, metavar="WHO", help=TO_HELP)
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="MESSAGE", help=f"the message, in quotes (up to {MAX_TEXT_CHARS:,} characters)")
    text.add_argument("--text-file", metavar="PATH", help="read the message from this UTF-8 text file instead")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command and its plain-English help."""
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="python -m bot.team",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--token-file", metavar="PATH", default=None,
        help=f"read the team token from this file (instead of {TOKEN_ENV} or typing it)",
    )
    areas = parser.add_subparsers(dest="area", metavar="COMMAND", required=True)

    # broadcast ...
    broadcast = areas.add_parser(
        "broadcast", help="send a message to champions, now or later; list, cancel, report",
        description="Send a message to every champion, a group or one champion, now or at a set time.",
    )
    b_cmds = broadcast.add_subparsers(dest="command", metavar="ACTION", required=True)
    preview = b_cmds.add_parser(
        "preview", parents=[common],
        help="show who would get a message and how it will read, without sending anything",
        description="Show who would get the message, who is left out (said stop, or unreachable) "
        "and the text exactly as it will be sent. Nothing is sent.",
    )
    _message_options(preview)
    send = b_cmds.add_parser(
        "send", parents=[common],
        help="send a message now, or schedule it with --at",
        description="Show the preview, ask 'Send to N champions? [y/N]', then send it now or at the "
        "time given with --at. Champions who said stop get nothing.",
    )
    _message_options(send)
    send.add_argument(
        "--at", metavar="WHEN",
        help='when to send it, London time, day before month: "Thursday 2pm", "27/11/2026 14:00" '
        "or 2026-11-27T14:00 (leave out to send now)",
    )
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation (for scripts)")
    send.add_argument("--by", metavar="NAME", help="your name, kept with the broadcast (default: your login name)")
    b_cmds.add_parser(
        "list", parents=[common], help="list the latest broadcasts and their status",
        description="List the latest broadcasts, newest first: scheduled, sending, sent or cancelled.",
    )
    cancel = b_cmds.add_parser(
        "cancel", parents=[common], help="cancel a scheduled broadcast, or stop one that is being sent",
        description="Cancel a broadcast that has not gone yet. If it is being sent, messages not yet "
        "sent are stopped; ones already sent cannot be called back.",
    )
    cancel.add_argument("id", type=int, help="the broadcast's number (see: broadcast list)")
    report = b_cmds.add_parser(
        "report", parents=[common], help="how a broadcast went: sent, failed and why, opted out",
        description="How many got the broadcast, how many failed (and why), how many were left out.",
    )
    report.add_argument("id", type=int, help="the broadcast's number (see: broadcast list)")

    # group ...
    group = areas.add_parser(
        "group", help="groups of champions: organisations, cohorts and projects",
        description="Keep groups of champions (organisation, cohort, project) to send broadcasts to.",
    )
    g_cmds = group.add_subparsers(dest="command", metavar="ACTION", required=True)
    kind_help = "organisation, cohort or project"
    name_help = 'the group\'s name, in quotes if it has spaces ("Spring 2026"); any capitals'
    g_create = g_cmds.add_parser(
        "create", parents=[common], help="make a new group",
        description="Make a new group. If it already exists (whatever the capitals) nothing changes.",
    )
    g_create.add_argument("kind", help=kind_help)
    g_create.add_argument("name", help=name_help)
    g_cmds.add_parser("list", parents=[common], help="list the groups and how many are in each",
                      description="List every group and how many champions are in it.")
    g_members = g_cmds.add_parser("members", parents=[common], help="list the champions in a group",
                                  description="List the champions in one group.")
    g_members.add_argument("kind", help=kind_help)
    g_members.add_argument("name", help=name_help)
    for action, verb in (("add", "put champions in a group"), ("remove", "take champions out of a group")):
        g_action = g_cmds.add_parser(
            action, parents=[common], help=verb,
            description=f"{verb[0].upper()}{verb[1:]}. Doing it twice does no harm.",
        )
        g_action.add_argument("kind", help=kind_help)
        g_action.add_argument("name", help=name_help)
        g_action.add_argument(
            "champions", nargs="+", metavar="CHAMPION",
            help="champion ids from 'champion list' (or channel:chat-id, e.g. telegram:123456)",
        )

    # champion ...
    champion = areas.add_parser(
        "champion", help="the champions who use the companion",
        description="The champions who use the companion (never their messages).",
    )
    c_cmds = champion.add_subparsers(dest="command", metavar="ACTION", required=True)
    c_cmds.add_parser(
        "list", parents=[common], help="list champions: id, channel, organisation, groups, stopped?",
        description="List every champion: id, channel, when they joined, organisation, groups, and "
        "whether they said stop or cannot be reached. Never shows what they wrote.",
    )

    # reflections ...
    reflections = areas.add_parser(
        "reflections", help="what champions shared after sessions: a CSV export, or a report page",
        description="Reflections, ratings and pledges champions chose to share (anonymously or with "
        "their name). Private ones are never exported; anonymous ones carry no name or chat id.",
    )
    r_cmds = reflections.add_subparsers(dest="command", metavar="ACTION", required=True)
    r_export = r_cmds.add_parser(
        "export", parents=[common], help="write shared reflections and pledges to a CSV file",
        description="Write the shared reflections and their pledges to a CSV file for a spreadsheet: "
        "one row per reflection, followed by one row per pledge (the 'record' column says which). "
        "The file is readable by you only.",
    )
    r_report = r_cmds.add_parser(
        "report", parents=[common], help="write a summary page (HTML, with charts) of shared reflections",
        description="Write one HTML page: how many reflections, how sessions were rated, where the "
        "pledges stand, and the take-aways in full. Open it in any browser; it is readable by you only.",
    )
    for command, suffix in ((r_export, "csv"), (r_report, "html")):
        _reflection_filter_options(command)
        command.add_argument("--out", required=True, metavar="PATH", help=f"the file to write (e.g. november.{suffix})")
    return parser


def _reflection_filter_options(parser: argparse.ArgumentParser) -> None:
    """--from, --to, --session, --organisation."""
    parser.add_argument("--from", dest="date_from", metavar="DAY",
                        help="first day, London time: 2026-11-01 or 1/11/2026 (day first); default: the beginning")
    parser.add_argument("--to", dest="date_to", metavar="DAY", help="last day, included; default: up to now")
    parser.add_argument("--session", metavar="TEXT",
                        help="only sessions whose name contains this (any capitals), e.g. \"board\"")
    parser.add_argument("--organisation", metavar="KEY",
                        help="only this organisation's key from knowledge/organisations.yml, e.g. leeds")


# --- running a command --------------------------------------------------------------------------


@dataclass
class Context:
    """What a command needs: the database, the team pass, the streams."""

    broadcasts: Broadcasts
    groups: GroupRepository
    auth: TeamPass
    environ: Mapping[str, str]
    stdin: TextIO
    out: TextIO
    sessions: Optional[Callable] = None  # the database's session factory (reflections)


def _plural(count: int, word: str) -> str:
    """ "1 champion", "3 champions"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def read_token(token_file: Optional[str], environ: Mapping[str, str], stdin: TextIO) -> Optional[str]:
    """The team token from --token-file, COMPANION_TEAM_TOKEN, or typed at a terminal; None if none."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            with path.open("rb") as handle:
                raw = handle.read(TOKEN_FILE_MAX_BYTES)
        except OSError as exc:
            raise TeamInputError(f"Cannot read the token file {str(path)!r}: {exc.strerror or exc}.") from None
        try:
            return raw.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            raise TeamInputError(f"The token file {str(path)!r} is not text.") from None
    from_env = (environ.get(TOKEN_ENV) or "").strip()
    if from_env:
        return from_env
    if stdin.isatty():
        try:
            return getpass.getpass("Team token: ").strip() or None
        except (EOFError, KeyboardInterrupt):
            return None
    return None


def _read_message(args: argparse.Namespace) -> str:
    """The message from --text or --text-file (checked later by the broadcast functions)."""
    if args.text_file is None:
        return args.text
    path = Path(args.text_file).expanduser()
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TEXT_CHARS * 4 + 16)  # enough for the limit in any script
    except OSError as exc:
        raise TeamInputError(f"Cannot read the message file {str(path)!r}: {exc.strerror or exc}.") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TeamInputError(
            f"The message file {str(path)!r} is not UTF-8 text (or is far over {MAX_TEXT_CHARS:,} characters)."
        ) from None


def _show_preview(out: TextIO, preview: Preview, when: Optional[datetime]) -> None:
    """Print who would get the message, who is left out, when, and the text as it will be sent."""
    channels = ", ".join(f"{channel} {count:,}" for channel, count in preview.by_channel.items())
    out.write(f"To:       {preview.target}\n")
    out.write(f"Reaches:  {_plural(preview.recipients, 'champion')}" + (f" ({channels})" if channels else "") + "\n")
    out.write(
        f"Left out: {preview.opted_out:,} said stop, {preview.unreachable:,} cannot be reached\n"
    )
    out.write(f"When:     {'now' if when is None else format_when(when)}\n")
    out.write(f"Message, exactly as it will be sent ({_plural(len(preview.text), 'character')}):\n")
    out.write("-" * 60 + "\n" + preview.text + "\n" + "-" * 60 + "\n")


def _confirm(ctx: Context, question: str) -> Optional[bool]:
    """Ask question on the terminal; None when there is no terminal to ask on."""
    if not ctx.stdin.isatty():
        return None
    ctx.out.write(question)
    ctx.out.flush()
    answer = ctx.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_broadcast_preview(args: argparse.Namespace, ctx: Context) -> int:
    """broadcast preview."""
    _show_preview(ctx.out, ctx.broadcasts.preview(Target.parse(args.to), _read_message(args)), None)
    ctx.out.write("Nothing has been sent.\n")
    return EXIT_OK


def cmd_broadcast_send(args: argparse.Namespace, ctx: Context) -> int:
    """broadcast send."""
    target = Target.parse(args.to)
    when = parse_when(args.at) if args.at is not None else None
    preview = ctx.broadcasts.preview(target, _read_message(args))
    _show_preview(ctx.out, preview, when)
    if preview.recipients == 0:
        if when is None:
            raise TeamInputError("Nobody would get this message now, so nothing was sent.")
        ctx.out.write("Nobody would get it if it went now; it goes to whoever is in the target at that time.\n")
    if not args.yes:
        answer = _confirm(ctx, f"Send to {_plural(preview.recipients, 'champion')}? [y/N] ")
        if answer is None:
            raise TeamInputError(
                "Not sent: there is no terminal to confirm on. Check the preview, then add --yes to send."
            )
        if not answer:
            ctx.out.write("Not sent.\n")
            return EXIT_NOT_DONE
    created_by = args.by or _login_name(ctx.environ)
    info = ctx.broadcasts.create_broadcast(preview.text, target, created_by, when, auth=ctx.auth)
    if when is None:
        ctx.out.write(
            f"Broadcast {info.id} is on its way: the delivery process sends it within a few seconds.\n"
        )
    else:
        ctx.out.write(f"Broadcast {info.id} is scheduled for {format_when(info.send_at)}.\n")
    ctx.out.write(f"See how it goes with: python -m bot.team broadcast report {info.id}\n")
    return EXIT_OK


def _login_name(environ: Mapping[str, str]) -> str:
    """Who is running the tool, for the broadcast's record."""
    for name in ("LOGNAME", "USER", "USERNAME"):
        if environ.get(name):
            return environ[name]
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment
        return "engagement team"


def _snippet(text: str, width: int = 40) -> str:
    """The start of a message's first line, for a table."""
    lines = text.splitlines() or [""]
    first = lines[0]
    if len(first) <= width and len(lines) == 1:
        return first
    return first[: width - 1].rstrip() + "…"


def cmd_broadcast_list(args: argparse.Namespace, ctx: Context) -> int:
    """broadcast list."""
    items: List[BroadcastInfo] = ctx.broadcasts.list_broadcasts()
    if not items:
        ctx.out.write("No broadcasts yet.\n")
        return EXIT_OK
    rows = [("id", "status", "send at (London)", "to", "queued", "by", "message")]
    for b in items:
        rows.append(
            (str(b.id), b.status, _short_when(b.send_at), b.target,
             "-" if b.queued_count is None else f"{b.queued_count:,}", b.created_by, _snippet(b.text))
        )
    _table(ctx.out, rows)
    return EXIT_OK


def cmd_broadcast_cancel(args: argparse.Namespace, ctx: Context) -> int:
    """broadcast cancel."""
    info, stopped = ctx.broadcasts.cancel_broadcast(args.id, auth=ctx.auth)
    if info.started_at is None:
        ctx.out.write(f"Broadcast {info.id} is cancelled: nobody will get it.\n")
    else:
        ctx.out.write(
            f"Broadcast {info.id} is cancelled: {_plural(stopped, 'message')} not yet sent "
            "will not go. Any already sent cannot be called back.\n"
        )
    return EXIT_OK


def cmd_broadcast_report(args: argparse.Namespace, ctx: Context) -> int:
    """broadcast report."""
    report = ctx.broadcasts.report(args.id)
    b = report.broadcast
    out = ctx.out
    out.write(f"Broadcast {b.id} to {b.target}: {b.status}\n")
    out.write(f"Made by {b.created_by} on {format_when(b.created_at)}\n")
    out.write(f"Send at {format_when(b.send_at)}\n")
    if b.started_at is not None:
        out.write(f"Started {format_when(b.started_at)}\n")
    if b.cancelled_at is not None:
        out.write(f"Cancelled {format_when(b.cancelled_at)}\n")
    if b.started_at is None:
        out.write("Not started, so nobody has been sent anything.\n")
        return EXIT_OK
    out.write(f"Sent:          {report.sent:,}\n")
    out.write(f"Failed:        {report.failed:,}\n")
    for reason, count in report.failed_reasons.items():
        out.write(f"  {count:,} x {reason[:200]}\n")
    out.write(f"Waiting:       {report.queued:,} queued, {report.sending:,} being sent\n")
    out.write(f"Not sent:      {report.skipped:,}\n")
    for reason, count in report.skipped_reasons.items():
        out.write(f"  {count:,} x {reason[:200]}\n")
    out.write(f"Left out:      {report.opted_out:,} said stop, {report.unreachable:,} cannot be reached\n")
    out.write(f"Retries:       {report.retries:,} (after rate limits or network trouble)\n")
    return EXIT_OK


def cmd_group_create(args: argparse.Namespace, ctx: Context) -> int:
    """group create."""
    group, created = ctx.groups.create_group(args.kind, args.name, auth=ctx.auth)
    if created:
        ctx.out.write(f"Made the {group.kind} group {group.name!r}.\n")
    else:
        ctx.out.write(f"The {group.kind} group {group.name!r} already exists; nothing changed.\n")
    return EXIT_OK


def cmd_group_list(args: argparse.Namespace, ctx: Context) -> int:
    """group list."""
    groups = ctx.groups.list_groups()
    if not groups:
        ctx.out.write("No groups yet. Make one with: python -m bot.team group create <kind> <name>\n")
        return EXIT_OK
    _table(ctx.out, [("kind", "name", "members")] + [(g.kind, g.name, f"{g.members:,}") for g in groups])
    return EXIT_OK


def _champion_table(out: TextIO, champions: Sequence[ChampionSummary], labels: Dict[int, List[str]]) -> None:
    """Print champions as a table (never their messages or chat ids)."""
    rows = [("id", "channel", "joined", "organisation", "groups", "status")]
    for c in champions:
        status = "said stop" if c.opted_out else ("cannot be reached" if c.unreachable else "ok")
        if c.opted_out and c.unreachable:
            status = "said stop, cannot be reached"
        rows.append(
            (str(c.id), c.channel, _short_when(c.created_at)[:11], c.organisation or "-",
             "; ".join(labels.get(c.id, [])) or "-", status)
        )
    _table(out, rows)


def cmd_group_members(args: argparse.Namespace, ctx: Context) -> int:
    """group members."""
    group = ctx.groups.get_group(args.kind, args.name)
    members = ctx.groups.members(args.kind, args.name)
    ctx.out.write(f"{group.kind}: {group.name}, {_plural(len(members), 'champion')}\n")
    if members:
        _champion_table(ctx.out, members, ctx.groups.champion_group_labels())
    return EXIT_OK


def _champion_ids(ctx: Context, refs: Sequence[str]) -> List[int]:
    """Champion ids from ids or channel:chat-id references; TeamInputError for ones not found."""
    ids: List[int] = []
    for ref in refs:
        ref = ref.strip()
        if ref.isdigit():
            ids.append(int(ref))
            continue
        channel, sep, external = ref.partition(":")
        found = ctx.groups.find_champion_on_channel(channel, external) if sep and external else None
        if found is None:
            raise TeamInputError(
                f"{ref[:60]!r} is not a champion: give ids from 'champion list' (or channel:chat-id). "
                "Nothing was changed."
            )
        ids.append(found.id)
    return ids


def cmd_group_add(args: argparse.Namespace, ctx: Context) -> int:
    """group add."""
    group = ctx.groups.get_group(args.kind, args.name)
    ids = set(_champion_ids(ctx, args.champions))
    added = ctx.groups.add_members(args.kind, args.name, ids, auth=ctx.auth)
    ctx.out.write(f"Added {_plural(added, 'champion')} to {group.kind}: {group.name}")
    already = len(ids) - added
    ctx.out.write(f" ({already:,} already in it).\n" if already else ".\n")
    return EXIT_OK


def cmd_group_remove(args: argparse.Namespace, ctx: Context) -> int:
    """group remove."""
    group = ctx.groups.get_group(args.kind, args.name)
    removed = ctx.groups.remove_members(args.kind, args.name, _champion_ids(ctx, args.champions), auth=ctx.auth)
    ctx.out.write(f"Took {_plural(removed, 'champion')} out of {group.kind}: {group.name}.\n")
    return EXIT_OK


def cmd_champion_list(args: argparse.Namespace, ctx: Context) -> int:
    """champion list."""
    champions = ctx.groups.list_champions()
    if not champions:
        ctx.out.write("No champions yet.\n")
        return EXIT_OK
    _champion_table(ctx.out, champions, ctx.groups.champion_group_labels())
    opted = sum(c.opted_out for c in champions)
    ctx.out.write(f"{_plural(len(champions), 'champion')}, {opted:,} of them said stop.\n")
    return EXIT_OK


def _table(out: TextIO, rows: Sequence[Sequence[str]]) -> None:
    """Print rows as left-aligned columns, the first row as headings."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n")


def _reflection_filter(args: argparse.Namespace):
    """The ReflectionFilter the options ask for."""
    from bot.reflection_export import ReflectionFilter

    return ReflectionFilter.parse(args.date_from, args.date_to, args.session, args.organisation)


def _left_out(count: int) -> str:
    """"2 private reflections were left out." (a count only)."""
    return f"{_plural(count, 'private reflection')} {'was' if count == 1 else 'were'} left out."


def cmd_reflections_export(args: argparse.Namespace, ctx: Context) -> int:
    """reflections export (counts only on screen; the text goes to the file)."""
    from bot.reflection_export import csv_bytes, fetch_shared, write_private_file

    selection = fetch_shared(ctx.sessions, _reflection_filter(args), auth=ctx.auth)
    path = write_private_file(args.out, csv_bytes(selection))
    named = sum(1 for r in selection.shared if r.named)
    ctx.out.write(
        f"Wrote {_plural(len(selection.shared), 'shared reflection')} ({named:,} named, "
        f"{len(selection.shared) - named:,} anonymous) and {_plural(selection.pledge_count, 'pledge')} "
        f"to {path} ({selection.filters.describe()}).\n{_left_out(selection.private_left_out)}\n"
    )
    return EXIT_OK


def cmd_reflections_report(args: argparse.Namespace, ctx: Context) -> int:
    """reflections report (counts only on screen; the text goes to the page)."""
    from bot.reflection_export import write_private_file
    from bot.reflection_report import build_report, format_average, render_html

    report = build_report(ctx.sessions, _reflection_filter(args), auth=ctx.auth)
    path = write_private_file(args.out, render_html(report).encode("utf-8"))
    ctx.out.write(
        f"Wrote the report on {_plural(report.reflections, 'shared reflection')} to {path} "
        f"({report.filters.describe()}).\nAverage rating {format_average(report.average_rating)}, "
        f"{_plural(report.pledges, 'pledge')}. {_left_out(report.private_left_out)}\n"
    )
    return EXIT_OK


COMMANDS: Dict[tuple, Callable[[argparse.Namespace, Context], int]] = {
    ("broadcast", "preview"): cmd_broadcast_preview,
    ("broadcast", "send"): cmd_broadcast_send,
    ("broadcast", "list"): cmd_broadcast_list,
    ("broadcast", "cancel"): cmd_broadcast_cancel,
    ("broadcast", "report"): cmd_broadcast_report,
    ("group", "create"): cmd_group_create,
    ("group", "list"): cmd_group_list,
    ("group", "members"): cmd_group_members,
    ("group", "add"): cmd_group_add,
    ("group", "remove"): cmd_group_remove,
    ("champion", "list"): cmd_champion_list,
    ("reflections", "export"): cmd_reflections_export,
    ("reflections", "report"): cmd_reflections_report,
}


def main(
    argv: Optional[Sequence[str]] = None,
    environ: Optional[Mapping[str, str]] = None,
    stdin: Optional[TextIO] = None,
    out: Optional[TextIO] = None,
    err: Optional[TextIO] = None,
) -> int:
    """Run one command of the team tool; returns the exit status."""
    from sqlalchemy.exc import SQLAlchemyError

    from bot.db import make_engine, make_session_factory, migrate
    from bot.settings import SettingsError, load_settings

    environ = os.environ if environ is None else environ
    stdin = sys.stdin if stdin is None else stdin
    if out is None:
        out = sys.stdout
        if hasattr(out, "reconfigure"):  # a terminal that cannot show an emoji shows its code instead
            out.reconfigure(errors="backslashreplace")
    err = sys.stderr if err is None else err
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(environ)
        token = read_token(args.token_file, environ, stdin)
        if token is None and settings.team_token:
            raise NotAuthorised(
                f"No team token given. Set {TOKEN_ENV}, use --token-file PATH, or run this in a "
                "terminal to type it."
            )
        auth = authorise(settings.team_token, token)
    except NotAuthorised as exc:
        err.write(f"Refused: {exc}\n")
        return EXIT_NOT_AUTHORISED
    except (TeamInputError, SettingsError) as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    engine = None
    try:
        migrate(settings.database_url)
        engine = make_engine(settings.database_url)
        sessions = make_session_factory(engine)
        ctx = Context(Broadcasts(sessions), GroupRepository(sessions), auth, environ, stdin, out, sessions)
        return COMMANDS[(args.area, args.command)](args, ctx)
    except TeamInputError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_BAD_INPUT
    except NotAuthorised as exc:  # pragma: no cover - auth is checked above
        err.write(f"Refused: {exc}\n")
        return EXIT_NOT_AUTHORISED
    except SQLAlchemyError as exc:
        err.write(f"error: the database could not be used: {type(exc).__name__}: {getattr(exc, 'orig', exc)}\n")
        return EXIT_DATABASE
    except KeyboardInterrupt:
        err.write("\nStopped; nothing more was done.\n")
        return EXIT_NOT_DONE
    finally:
        if engine is not None:
            engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
