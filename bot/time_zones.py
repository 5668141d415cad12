"""Champions' time zones: reading where someone says they are, naming zones back to them, and saving the choice.

`read_place(text)` reads a message such as "my time zone is Europe/Paris", "I live
in Spain now" or "I'm in New York" against knowledge/time_zones.yml (names people
type, longest first, as whole words) and any IANA name in it, checked with
zoneinfo. It never guesses: a name with several zones ("USA", "IST"), two places
in one message, or a near spelling ("Frnace") comes back as a question. The zone
a champion chose is kept in `champions.time_zone` (NULL: the default, Europe/London)
by `TimeZoneRepository`.
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.content import load_yaml
from bot.models import Champion

ROOT = Path(__file__).resolve().parent.parent
CONTENT_FILE = ROOT / "knowledge" / "time_zones.yml"
DEFAULT_TIME_ZONE = "Europe/London"
ZONE_NAME_MAX = 64  # champions.time_zone is String(64)

# What reading a message found.
FOUND, CHOOSE, MAYBE, NONE, UNKNOWN = "found", "choose", "maybe", "none", "unknown"


def valid_zone(name: Any) -> Optional[str]:
    """The IANA name if zoneinfo knows it (its usual spelling for a known one), else None."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    if not name or len(name) > ZONE_NAME_MAX:
        return None
    canonical = _zone_names().get(name.casefold(), name)
    try:
        ZoneInfo(canonical)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return canonical


@lru_cache(maxsize=1)
def _zone_names() -> Dict[str, str]:
    """Every IANA name zoneinfo offers, by its lower-case spelling."""
    return {name.casefold(): name for name in available_timezones()}


# --- the content --------------------------------------------------------------------------------


def normalise(text: Any) -> str:
    """Lower case, no full stops or quotes, other punctuation as spaces: "I'm in the U.K.!" -> "i'm in the uk"."""
    text = unicodedata.normalize("NFC", str(text or "")).casefold()
    text = text.replace("’", "'").replace("‘", "'").replace(".", "")
    text = re.sub(r"[^\w\s/'+-]", " ", text)
    text = re.sub(r"(?<![\w])'|'(?![\w])", " ", text)
    return " ".join(text.split())


def _words(text: str) -> str:
    """normalise(text) with hyphens and slashes as spaces, for matching place names."""
    return " ".join(re.sub(r"[-/+_]", " ", text).split())


@dataclass(frozen=True)
class Ambiguous:
    """A name that could mean several zones, and the question that asks which."""

    question: str
    zones: Tuple[str, ...]


@dataclass(frozen=True)
class TimeZones:
    """knowledge/time_zones.yml, checked."""

    default: str
    labels: Mapping[str, str]
    label_format: str
    common: Tuple[Tuple[str, str], ...]  # (button title, zone)
    max_buttons: int
    places: Mapping[str, str]  # normalised name -> zone
    ambiguous: Mapping[str, Ambiguous]  # normalised name -> the question
    filler: frozenset
    change_words: frozenset
    close_match: float
    text_max: int
    max_tries: int
    conversation: Mapping[str, Any]

    def label(self, zone: str) -> str:
        """What a zone is called back to the champion: "Paris time" (or "Buenos Aires time" from its name)."""
        if zone in self.labels:
            return self.labels[zone]
        place = zone.rsplit("/", 1)[-1].replace("_", " ")
        return self.label_format.format(place=place)

    @property
    def pattern(self) -> "re.Pattern[str]":
        """Every known name as one pattern, longest first (so "new york" wins over "york")."""
        return _pattern(tuple(sorted(set(self.places) | set(self.ambiguous), key=lambda n: (-len(n), n))))


@lru_cache(maxsize=8)
def _pattern(names: Tuple[str, ...]) -> "re.Pattern[str]":
    """A whole-word alternation of names."""
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)")


def _zone_or_error(name: Any, where: str) -> str:
    """A checked IANA name; ValueError naming where it came from."""
    zone = valid_zone(name)
    if zone is None:
        raise ValueError(f"knowledge/time_zones.yml: {where}: unknown time zone {name!r}")
    return zone


def parse_content(data: Mapping[str, Any]) -> TimeZones:
    """Check the YAML's zones and build the lookup tables."""
    default = _zone_or_error(data.get("default") or DEFAULT_TIME_ZONE, "default")
    labels = {_zone_or_error(zone, "labels"): str(label) for zone, label in (data.get("labels") or {}).items()}
    common = tuple((str(c["title"]), _zone_or_error(c["zone"], "common")) for c in data.get("common") or [])
    places: Dict[str, str] = {}
    for zone, names in (data.get("places") or {}).items():
        zone = _zone_or_error(zone, "places")
        for name in names:
            key = _words(normalise(name))
            if key in places and places[key] != zone:
                raise ValueError(f"knowledge/time_zones.yml: {name!r} is listed for two zones")
            if key:
                places[key] = zone
    ambiguous: Dict[str, Ambiguous] = {}
    for entry in data.get("ambiguous") or []:
        zones = tuple(_zone_or_error(z, "ambiguous") for z in entry["zones"])
        for name in entry["names"]:
            key = _words(normalise(name))
            if key in places:
                raise ValueError(f"knowledge/time_zones.yml: {name!r} is both a place and ambiguous")
            ambiguous[key] = Ambiguous(str(entry["question"]), zones)
    return TimeZones(
        default=default,
        labels=labels,
        label_format=str(data.get("label_format") or "{place} time"),
        common=common,
        max_buttons=int(data.get("max_buttons") or 6),
        places=places,
        ambiguous=ambiguous,
        filler=frozenset(normalise(w) for w in data.get("filler_words") or []),
        change_words=frozenset(normalise(w) for w in data.get("change_words") or []),
        close_match=float(data.get("close_match") or 0.8),
        text_max=int(data.get("text_max") or 300),
        max_tries=int(data.get("max_tries") or 2),
        conversation=data.get("conversation") or {},
    )


def load_content(path: Path = CONTENT_FILE) -> TimeZones:
    """knowledge/time_zones.yml, read and checked once, then cached."""
    return load_yaml(path, parse_content)


def label(zone: str, content: Optional[TimeZones] = None) -> str:
    """"Paris time", "UK time"."""
    return (content or load_content()).label(zone)


def champion_zone(value: Any, content: Optional[TimeZones] = None) -> str:
    """The zone a champion's saved value means: itself when valid, otherwise the default."""
    return valid_zone(value) or (content or load_content()).default


def time_label(zone: str, home: str, content: Optional[TimeZones] = None) -> Optional[str]:
    """The zone's label to say after a time ("2:00pm Paris time"), or None for UK time said to a champion in the UK."""
    content = content or load_content()
    if zone == home == content.default:
        return None
    return content.label(zone)


# --- reading a message --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What a message says about where the champion is."""

    status: str
    zones: Tuple[str, ...] = ()
    question: Optional[str] = None  # for CHOOSE: the question about these zones
    place: Optional[str] = None  # for MAYBE: the known name the message seemed to mean
    wants_change: bool = False  # for NONE: the message asks to change the zone, rather than what it is

    @property
    def zone(self) -> Optional[str]:
        """The one zone found (FOUND, MAYBE), or None."""
        return self.zones[0] if len(self.zones) == 1 and self.status in (FOUND, MAYBE) else None


_IANA = re.compile(r"(?<![\w/])([a-z]+(?:/[a-z0-9_+-]+)+)(?![\w/])")


def read_place(text: Any, content: Optional[TimeZones] = None) -> Reading:
    """Read text for a place or zone (see the module docstring)."""
    content = content or load_content()
    raw = str(text or "")
    if len(raw) > content.text_max:
        return Reading(UNKNOWN)
    plain = normalise(raw)
    zones: List[str] = []
    questions: List[Ambiguous] = []

    def note(zone: str) -> None:
        """Remember a zone once, in the order found."""
        if zone not in zones:
            zones.append(zone)

    # IANA names first ("Europe/Paris", "america/new_york"), then the names people type.
    for match in _IANA.finditer(plain):
        zone = valid_zone(match.group(1))
        if zone is not None:
            note(zone)
    rest = _IANA.sub(lambda m: " " if valid_zone(m.group(1)) else m.group(0), plain)
    words = _words(rest)
    for match in content.pattern.finditer(words):
        name = match.group(0)
        if name in content.places:
            note(content.places[name])
        elif content.ambiguous[name] not in questions:
            questions.append(content.ambiguous[name])
    tokens = content.pattern.sub(" ", words).split()
    left = [w for w in tokens if w not in content.filler]

    if zones or questions:
        if len(zones) == 1 and all(zones[0] in q.zones for q in questions):
            return Reading(FOUND, (zones[0],))
        if not zones and len(questions) == 1:
            return Reading(CHOOSE, questions[0].zones, question=questions[0].question)
        for question in questions:
            for zone in question.zones:
                note(zone)
        return Reading(CHOOSE, tuple(zones), question=str(content.conversation.get("which_of") or ""))
    if not left:
        if _SYMBOLS.sub("", raw):  # only emoji or symbols: something, but not a place we can read
            return Reading(UNKNOWN)
        return Reading(NONE, wants_change=bool(set(tokens) & content.change_words))
    return _close(tokens, content)


# What may surround words without making a message unreadable.
_SYMBOLS = re.compile(r"[\w\s.,;:!?'’‘\"()/+-]")


def _close(tokens: Sequence[str], content: TimeZones) -> Reading:
    """A near spelling of a known name ("frnace", "new yrok"), offered as a question; else UNKNOWN."""
    names = sorted(set(content.places) | set(content.ambiguous))
    left = [i for i, w in enumerate(tokens) if w not in content.filler]
    tries = [" ".join(tokens[i] for i in left)]
    for i in left:  # each unknown word, with the word before and after it ("new yrok")
        tries += [" ".join(tokens[max(0, i - 1):i + 1]), " ".join(tokens[i:i + 2]), tokens[i]]
    for attempt in tries:
        if len(attempt) < 4:
            continue
        if not re.fullmatch(r"[a-z' ]+", attempt):  # only Latin letters are compared
            continue
        # A typo keeps the first letter and about the length ("frnace", "irland"): "alert" is not "alberta".
        scored = [
            (difflib.SequenceMatcher(None, attempt, name).ratio(), name)
            for name in names
            if name[:1] == attempt[:1] and abs(len(name) - len(attempt)) <= 1
        ]
        best = max(scored, default=(0.0, ""))
        if best[0] >= content.close_match:
            name = best[1]
            if name in content.places:
                return Reading(MAYBE, (content.places[name],), place=name)
            entry = content.ambiguous[name]
            return Reading(CHOOSE, entry.zones, question=entry.question)
    return Reading(UNKNOWN)


# --- the database -------------------------------------------------------------------------------


class TimeZoneRepository:
    """A champion's time zone in the app database (champions.time_zone), one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]", content: Optional[TimeZones] = None) -> None:
        """Use session_factory (see bot.db.make_session_factory)."""
        self._sessions = session_factory
        self._content = content

    @property
    def content(self) -> TimeZones:
        """knowledge/time_zones.yml."""
        return self._content or load_content()

    def get(self, champion_id: int) -> str:
        """The champion's zone (the default when none is saved, or the saved one is no longer valid)."""
        with self._sessions() as session:
            value = session.execute(select(Champion.time_zone).where(Champion.id == champion_id)).scalar_one_or_none()
        return champion_zone(value, self.content)

    def set(self, champion_id: int, zone: str) -> str:
        """Save zone for the champion (ValueError for an unknown zone, LookupError for an unknown champion)."""
        checked = valid_zone(zone)
        if checked is None:
            raise ValueError(f"unknown time zone {zone!r}")
        with self._sessions() as session:
            result = session.execute(update(Champion).where(Champion.id == champion_id).values(time_zone=checked))
            if result.rowcount == 0:
                raise LookupError(f"no champion {champion_id}")
            session.commit()
        return checked


def buttons_for(
    zones: Sequence[str], content: Optional[TimeZones] = None, titles: Optional[Mapping[str, str]] = None
) -> List[Dict[str, str]]:
    """A button per zone ("Paris time" -> /set_time_zone{"tz_zone": "Europe/Paris"})."""
    content = content or load_content()
    spec = content.conversation["buttons"]["choose"]
    titles = titles or {}
    return [
        {"title": spec["title"].format(title=titles.get(z) or content.label(z)), "payload": spec["payload"].format(zone=z)}
        for z in zones
    ]
