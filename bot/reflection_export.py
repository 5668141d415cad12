"""Reflections, ratings and pledges for the engagement team: filters, the shared rows, and the CSV export.

Only reflections a champion chose to share leave the database. Private ones (and ones whose
sharing question was never answered: NULL means private) are never read beyond a count.
Anonymous ones are stripped of the champion's name, id, channel and chat id here, when they are
read (`fetch_shared`), so nothing downstream (the CSV, the report, a future web console) can leak
them. Champions who asked for their data to be deleted are left out altogether.

Steps, each importable on its own (the web console reuses them):
    filters = ReflectionFilter.parse("2026-11-01", "2026-11-30", session="board", organisation="leeds")
    selection = fetch_shared(session_factory, filters, auth=team_pass)
    data = csv_bytes(selection)              # or export_rows(selection) for the rows themselves
    write_private_file(path, data)           # mode 0600, written whole or not at all
"""
from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from bot.groups import TeamInputError
from bot.models import Champion, as_utc
from bot.reflection_models import (
    PLEDGE_DONE,
    PLEDGE_IN_PROGRESS,
    PLEDGE_LET_GO,
    PLEDGE_NEED_HELP,
    PLEDGE_OPEN,
    SESSION_LABEL_MAX,
    SHARING_ANONYMOUS,
    SHARING_NAMED,
    Reflection,
)
from bot.team_auth import require
from bot.text import clean_text

LONDON = "Europe/London"
ORGANISATION_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LOAD_CHUNK = 500

# How a pledge's status reads in the CSV and the report.
STATUS_LABELS: Dict[str, str] = {
    PLEDGE_OPEN: "open (not checked yet)",
    PLEDGE_IN_PROGRESS: "in progress",
    PLEDGE_DONE: "done",
    PLEDGE_NEED_HELP: "needs help",
    PLEDGE_LET_GO: "let go",
}

# Cells a spreadsheet would run as a formula when they start with one of these.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

RECORD_REFLECTION = "reflection"
RECORD_PLEDGE = "pledge"
CSV_COLUMNS: Tuple[str, ...] = (
    "record",
    "reflection",
    "date",
    "session",
    "organisation",
    "shared as",
    "name",
    "champion id",
    "channel",
    "rating (1-5)",
    "take-away",
    "what would help",
    "finished",
    "pledge",
    "pledge status",
    "pledge done on",
)


def _london():
    """The Europe/London time zone."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(LONDON)


def london_day(moment: Optional[datetime]) -> Optional[date]:
    """The day a UTC moment falls on in London."""
    moment = as_utc(moment)
    return None if moment is None else moment.astimezone(_london()).date()


def format_day(day: date) -> str:
    """A day the British way: "1 Nov 2026"."""
    return f"{day.day} {day:%b %Y}"


# --- filters ------------------------------------------------------------------------------------


def parse_day(text: Optional[str], what: str = "date") -> Optional[date]:
    """A day typed as 2026-11-01 or 1/11/2026 (day first); None when blank; TeamInputError if unreadable."""
    raw = clean_text(str(text or ""), multiline=False)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        pass
    match = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4})", raw)
    if match:
        day, month, year = (int(part) for part in match.groups())
        try:
            return date(year, month, day)
        except ValueError:
            pass
    raise TeamInputError(
        f"I can't read {raw[:40]!r} as the {what}: give a day as 2026-11-01 or 1/11/2026 (day first)."
    )


def _fold(text: Optional[str]) -> str:
    """text for a case-insensitive comparison: single spaces, case folded."""
    return clean_text(str(text or ""), multiline=False).casefold()


@dataclass(frozen=True)
class ReflectionFilter:
    """Which reflections: London days from/to (inclusive), session name containing, organisation key."""

    date_from: Optional[date] = None
    date_to: Optional[date] = None
    session: Optional[str] = None
    organisation: Optional[str] = None

    @classmethod
    def parse(
        cls,
        date_from: Optional[str] = None,
        date_to: Optional[str] = None,
        session: Optional[str] = None,
        organisation: Optional[str] = None,
    ) -> "ReflectionFilter":
        """A filter from what the team typed (blank means "any"), or TeamInputError saying what is wrong."""
        start = parse_day(date_from, "start date (--from)")
        end = parse_day(date_to, "end date (--to)")
        if start is not None and end is not None and start > end:
            raise TeamInputError(f"The start date ({format_day(start)}) is after the end date ({format_day(end)}).")
        label = clean_text(str(session or ""), multiline=False) or None
        if label is not None and len(label) > SESSION_LABEL_MAX:
            raise TeamInputError(f"That session name is too long: keep it to {SESSION_LABEL_MAX} characters.")
        key = clean_text(str(organisation or ""), multiline=False).lower() or None
        if key is not None and not ORGANISATION_KEY.fullmatch(key):
            raise TeamInputError(
                f"{key[:40]!r} is not an organisation key: use the key from knowledge/organisations.yml "
                "(lower case, e.g. leeds or south-tyneside), or other."
            )
        return cls(start, end, label, key)

    def utc_bounds(self) -> Tuple[Optional[datetime], Optional[datetime]]:
        """[start, end) in UTC: London midnight at the start of date_from and after date_to."""
        london = _london()
        start = end = None
        if self.date_from is not None:
            start = datetime.combine(self.date_from, time(0), tzinfo=london).astimezone(timezone.utc)
        if self.date_to is not None:
            after = self.date_to + timedelta(days=1)
            end = datetime.combine(after, time(0), tzinfo=london).astimezone(timezone.utc)
        return start, end

    def matches_session(self, label: Optional[str]) -> bool:
        """True when no session was asked for, or label contains it (any capitals and spacing)."""
        if not self.session:
            return True
        return _fold(self.session) in _fold(label)

    def describe(self) -> str:
        """The filter in words: "1 Nov 2026 to 30 Nov 2026; session containing 'board'; organisation leeds"."""
        if self.date_from and self.date_to:
            when = f"{format_day(self.date_from)} to {format_day(self.date_to)}"
        elif self.date_from:
            when = f"from {format_day(self.date_from)}"
        elif self.date_to:
            when = f"up to {format_day(self.date_to)}"
        else:
            when = "all dates"
        parts = [when]
        if self.session:
            parts.append(f"session containing {self.session!r}")
        if self.organisation:
            parts.append(f"organisation {self.organisation}")
        return "; ".join(parts)


# --- what leaves the database -------------------------------------------------------------------


@dataclass(frozen=True)
class SharedPledge:
    """A pledge of a shared reflection."""

    text: str
    status: str
    done_on: Optional[date]

    @property
    def status_label(self) -> str:
        """The status in words ("in progress")."""
        return STATUS_LABELS.get(self.status, self.status)


@dataclass(frozen=True)
class SharedReflection:
    """A reflection the champion shared; for anonymous ones champion_id, name and channel are None."""

    ref: str  # "R1", "R2", ... numbered in this selection's order only: never the same across exports
    sharing: str  # "anonymous" or "named"
    champion_id: Optional[int]
    name: Optional[str]
    channel: Optional[str]
    day: date  # London
    session_label: Optional[str]
    organisation: Optional[str]
    rating: Optional[int]
    takeaway: Optional[str]
    improvement: Optional[str]
    finished: bool
    pledges: Tuple[SharedPledge, ...]

    @property
    def named(self) -> bool:
        """True when the champion shared it with their name."""
        return self.sharing == SHARING_NAMED

    @property
    def who(self) -> str:
        """"Anonymous", or the champion's name (or "Champion 12" when they have none on record)."""
        if not self.named:
            return "Anonymous"
        return self.name or f"Champion {self.champion_id}"


@dataclass(frozen=True)
class Selection:
    """The shared reflections a filter found (oldest first), and how many private ones it left out."""

    filters: ReflectionFilter
    shared: Tuple[SharedReflection, ...]
    private_left_out: int

    @property
    def pledge_count(self) -> int:
        """How many pledges the shared reflections hold."""
        return sum(len(r.pledges) for r in self.shared)


def _text(value: Optional[str]) -> Optional[str]:
    """Stored free text without control characters (newlines kept); None when empty."""
    return (clean_text(value) or None) if value else None


def _shared(reflection: Reflection, champion: Champion, ref: str) -> SharedReflection:
    """The reflection as it may leave the database: identity only when shared with a name."""
    named = reflection.sharing == SHARING_NAMED
    return SharedReflection(
        ref=ref,
        sharing=SHARING_NAMED if named else SHARING_ANONYMOUS,
        champion_id=champion.id if named else None,
        name=(_text(champion.display_name) if named else None),
        channel=(champion.channel if named else None),
        day=london_day(reflection.created_at),
        session_label=_text(reflection.session_label),
        organisation=reflection.organisation,
        rating=reflection.rating,
        takeaway=_text(reflection.takeaway),
        improvement=_text(reflection.improvement),
        finished=reflection.completed_at is not None,
        pledges=tuple(
            SharedPledge(text=_text(p.text) or "", status=p.status, done_on=london_day(p.done_at))
            for p in reflection.pledges
        ),
    )


def _chunks(items: Sequence[int], size: int = LOAD_CHUNK) -> Iterable[Sequence[int]]:
    """items in slices of size."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def fetch_shared(session_factory: "sessionmaker[Session]", filters: ReflectionFilter, *, auth: object) -> Selection:
    """The shared reflections (with pledges) matching filters, oldest first; only for the team (auth)."""
    require(auth)
    start, end = filters.utc_bounds()
    query = (
        select(Reflection.id, Reflection.sharing, Reflection.session_label)
        .join(Champion, Champion.id == Reflection.champion_id)
        .where(Champion.erasure_requested_at.is_(None))
        .order_by(Reflection.created_at, Reflection.id)
    )
    if start is not None:
        query = query.where(Reflection.created_at >= start)
    if end is not None:
        query = query.where(Reflection.created_at < end)
    if filters.organisation:
        query = query.where(Reflection.organisation == filters.organisation)
    with session_factory() as session:
        shared_ids: List[int] = []
        private = 0
        for reflection_id, sharing, label in session.execute(query).all():
            if not filters.matches_session(label):
                continue
            if sharing in (SHARING_ANONYMOUS, SHARING_NAMED):
                shared_ids.append(reflection_id)
            else:
                private += 1
        loaded: Dict[int, Tuple[Reflection, Champion]] = {}
        for chunk in _chunks(shared_ids):
            rows = session.execute(
                select(Reflection, Champion)
                .join(Champion, Champion.id == Reflection.champion_id)
                .where(Reflection.id.in_(chunk))
                .where(or_(Reflection.sharing == SHARING_ANONYMOUS, Reflection.sharing == SHARING_NAMED))
                .options(selectinload(Reflection.pledges))
            ).all()
            for reflection, champion in rows:
                loaded[reflection.id] = (reflection, champion)
        shared = []
        for reflection_id in shared_ids:
            if reflection_id in loaded:  # gone if deleted (or made private) between the two reads
                reflection, champion = loaded[reflection_id]
                shared.append(_shared(reflection, champion, f"R{len(shared) + 1}"))
    return Selection(filters=filters, shared=tuple(shared), private_left_out=private)


# --- the CSV ------------------------------------------------------------------------------------


def safe_cell(value: object) -> str:
    """value as a CSV cell a spreadsheet shows as text: a leading = + - @ tab or CR gets an apostrophe."""
    if value is None:
        return ""
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def export_rows(selection: Selection) -> List[Dict[str, str]]:
    """The CSV's rows (CSV_COLUMNS keys, every cell made safe): each reflection, then its pledges.

    One file with a `record` column ("reflection" or "pledge") rather than two files: a
    spreadsheet user opens one file, sees each reflection followed by its pledges, and filters the
    `record` column for either list. Pledge rows repeat the reflection's number, date, session,
    organisation and sharing (so a filtered list still says whose and which session) but leave
    the rating, take-away and "what would help" blank, so sums and averages of the rating column
    count each reflection once. `reflection` is a number for this export only (R1, R2, ... by
    date), never derived from a champion or a database id, so anonymous rows cannot be matched
    across exports; anonymous rows have no name, champion id or channel; no row has a chat id.
    Dates are London days (the time of day is left out: it could single someone out).
    """
    rows: List[Dict[str, str]] = []
    for r in selection.shared:
        person = {
            "record": RECORD_REFLECTION,
            "reflection": r.ref,
            "date": r.day.isoformat(),
            "session": r.session_label or "",
            "organisation": r.organisation or "",
            "shared as": r.sharing,
            "name": (r.name or "") if r.named else "",
            "champion id": str(r.champion_id) if r.named and r.champion_id is not None else "",
            "channel": (r.channel or "") if r.named else "",
        }
        row = dict.fromkeys(CSV_COLUMNS, "")
        row.update(person)
        row.update({
            "rating (1-5)": "" if r.rating is None else str(r.rating),
            "take-away": r.takeaway or "",
            "what would help": r.improvement or "",
            "finished": "yes" if r.finished else "no",
        })
        rows.append(row)
        for pledge in r.pledges:
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(person)
            row.update({
                "record": RECORD_PLEDGE,
                "pledge": pledge.text,
                "pledge status": pledge.status_label,
                "pledge done on": pledge.done_on.isoformat() if pledge.done_on else "",
            })
            rows.append(row)
    return [{key: safe_cell(value) for key, value in row.items()} for row in rows]


def write_csv(rows: Sequence[Dict[str, str]], stream) -> None:
    """Write the header and rows to a text stream (opened with newline="")."""
    writer = csv.DictWriter(stream, fieldnames=list(CSV_COLUMNS), extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)


def csv_bytes(selection: Selection) -> bytes:
    """The whole CSV as UTF-8 with a byte-order mark (so Excel shows names and accents right)."""
    stream = io.StringIO(newline="")
    write_csv(export_rows(selection), stream)
    return stream.getvalue().encode("utf-8-sig")


# --- writing a file only its owner can read ------------------------------------------------------


def write_private_file(path: "os.PathLike[str] | str", data: bytes) -> Path:
    """Write data to path readable by its owner only (mode 0600), replacing it whole; TeamInputError if impossible."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise TeamInputError(f"{str(target)!r} is a folder: give a file name, e.g. {str(target / 'out')!r}.")
    folder = target.parent
    if not folder.is_dir():
        raise TeamInputError(f"There is no folder {str(folder)!r} to write {target.name!r} in.")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise TeamInputError(f"Cannot write in {str(folder)!r}: {exc.strerror or exc}.") from None
    try:
        with os.fdopen(handle, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise TeamInputError(f"Cannot write {str(target)!r}: {exc.strerror or exc}.") from None
    return target
