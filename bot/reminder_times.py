"""Meeting times as champions type them ("PRG meeting Thursday at 2pm"), read in British usage.

`parse_meeting(text, now)` splits a message into the meeting's description, the
time words and any reminder offsets ("also a week before"), and reads the time
in the champion's zone (Europe/London unless told otherwise), correct across
the clock changes. Day before month: "03/04" is 3 April. Absolute dates ("23/11",
"27th of November 2026") are read by dateparser (DATE_ORDER="DMY"); what it
misses ("next tues 10.30", "fortnight today 11am", "the first Monday of next
month at 6pm", "tomorrow morning") is read here first.

The result never holds a silent guess. Its status is one of:

- ``ok``: one instant (``when``, aware, in the champion's zone; ``when_utc`` to store).
- ``past``: the instant has gone (or a day and month without a year that passed
  within the last ``recent_past_days``: "23/11" said on 25 November).
- ``ambiguous``: more than one reading, or something missing; ``reason`` says
  which and ``candidates`` (instants) or ``days`` (dates) hold the readings:
    - ``no_time``: a day but no time ("Thursday");
    - ``part_of_day``: "tomorrow morning" (candidate: the morning's usual time);
    - ``am_pm``: an hour that could be morning or evening ("at 2", "Thursday 2:30");
      hours 8 to 12 written with minutes ("10.30") are read as morning/midday and
      hours 13 to 23 (or with a leading zero, "07:30") as the 24-hour clock;
    - ``next_weekday``: "next Thursday" said earlier in the same week (Monday to
      Sunday), when it can mean this week's or next week's; said on a Friday,
      "next Tuesday" is the Tuesday four days later, and "next Friday" is a week today;
    - ``same_weekday``: "Thursday" said on a Thursday (today, or a week today);
    - ``clock_gap``: a time the clocks skip (1:30am on the last Sunday of March);
      the candidate is the same moment read after the change (2:30am BST);
    - ``clock_repeat``: a time that happens twice (1:30am on the last Sunday of
      October): candidates 1:30am BST and, an hour later, 1:30am GMT;
    - ``weekday_mismatch``: "Thursday 28 November" when the 28th is a Friday;
    - ``no_day``: "next week", "next month";
    - ``midnight``: "midnight" (candidate: the start of the next day);
    - ``two_times`` / ``two_dates``: two different times or dates in one message.
  Readings already in the past are dropped first: "today at 2" said at 10am is 2pm.
- ``unparseable``: no time words, or impossible ones (``no_such_date``: "31/02",
  ``bad_time``: "25:00", ``too_far``: more than ``max_days_ahead`` ahead).

A time without a day means today (``past`` once it has gone today).
Everything is computed from ``now`` (injected), so tests pin the clock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.content import load_yaml


ROOT = Path(__file__).resolve().parent.parent
CONTENT_FILE = ROOT / "knowledge" / "reminders.yml"
DEFAULT_TIME_ZONE = "Europe/London"

OK, PAST, AMBIGUOUS, UNPARSEABLE = "ok", "past", "ambiguous", "unparseable"
STATUSES = (OK, PAST, AMBIGUOUS, UNPARSEABLE)

# Kinds of reminder (bot/reminder_models.py keeps the same names).
KIND_DAY_BEFORE, KIND_HOUR_BEFORE, KIND_CUSTOM, KIND_AFTER_MEETING = (
    "day_before", "hour_before", "custom", "after_meeting",
)
DESCRIPTION_MAX = 200
# Longer messages are not read as a meeting time at all.
TEXT_MAX = 500

MINUTES_PER_HOUR = 60
MINUTES_PER_DAY = 24 * MINUTES_PER_HOUR
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


# --- content ------------------------------------------------------------------------------------


def load_content(path: Path = CONTENT_FILE) -> Dict[str, Any]:
    """knowledge/reminders.yml as a dict, read once and then cached."""
    return load_yaml(path)


def zone(name: Optional[str]) -> ZoneInfo:
    """The ZoneInfo called name (default Europe/London); ValueError for an unknown zone."""
    try:
        return ZoneInfo(name or DEFAULT_TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _duration(spec: Mapping[str, Any]) -> timedelta:
    """A timedelta from a YAML mapping such as {hours: 3}."""
    return timedelta(**{str(k): float(v) for k, v in spec.items()})


def _clock(text: str) -> Tuple[int, int]:
    """(hour, minute) from "HH:MM"."""
    hour, minute = str(text).split(":")
    return int(hour), int(minute)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offset:
    """When a reminder goes, relative to the meeting's start: `minutes` before it."""

    minutes: int

    @property
    def kind(self) -> str:
        """day_before (exactly a day), hour_before (exactly an hour) or custom."""
        if self.minutes == MINUTES_PER_DAY:
            return KIND_DAY_BEFORE
        if self.minutes == MINUTES_PER_HOUR:
            return KIND_HOUR_BEFORE
        return KIND_CUSTOM

    @property
    def whole_days(self) -> Optional[int]:
        """The number of days when the offset is a whole number of days (counted on the calendar)."""
        return self.minutes // MINUTES_PER_DAY if self.minutes % MINUTES_PER_DAY == 0 else None


def default_offsets(content: Optional[Mapping[str, Any]] = None) -> Tuple[Offset, ...]:
    """The reminders set when the champion chooses none (a day before and an hour before)."""
    content = content or load_content()
    return tuple(
        Offset(int(_duration(spec).total_seconds() // 60)) for spec in content["timing"]["default_offsets"]
    )


@dataclass(frozen=True)
class ParsedTime:
    """What a meeting-time message means: a status, the instant(s) and the rest of the message."""

    status: str
    time_zone: str = DEFAULT_TIME_ZONE
    when: Optional[datetime] = None
    candidates: Tuple[datetime, ...] = ()
    days: Tuple[date, ...] = ()
    reason: Optional[str] = None
    description: Optional[str] = None
    offsets: Tuple[Offset, ...] = ()
    # True when the champion named offsets; `adds_offsets` when they are extra ("also a week before").
    offsets_given: bool = False
    adds_offsets: bool = False

    @property
    def ok(self) -> bool:
        """True when exactly one future instant was found."""
        return self.status == OK

    @property
    def when_utc(self) -> Optional[datetime]:
        """The instant in UTC (what the database stores), or None."""
        return self.when.astimezone(timezone.utc) if self.when is not None else None

    def chosen_offsets(self, content: Optional[Mapping[str, Any]] = None) -> Tuple[Offset, ...]:
        """The reminders to set: the defaults, the champion's own, or the defaults plus theirs."""
        if not self.offsets_given:
            return default_offsets(content)
        offsets = list(default_offsets(content)) if self.adds_offsets else []
        for offset in self.offsets:
            if offset not in offsets:
                offsets.append(offset)
        return tuple(sorted(offsets, key=lambda o: -o.minutes))


# --- vocabulary ---------------------------------------------------------------------------------

_WEEKDAY = (
    r"(?:mon(?:day)?|tue(?:s(?:day)?)?|wed(?:s|nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?"
    r"|sat(?:urday)?|sun(?:day)?)"
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}
_NUMBER = r"(?:\d{1,3}|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_HOUR_WORD = r"(?:\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "last": -1}
_MERIDIEM = r"(?P<mer>a\.?\s?m\.?|p\.?\s?m\.?)(?![a-z])"
_FLAGS = re.IGNORECASE


def _weekday_index(word: str) -> int:
    """0 for Monday ... 6 for Sunday."""
    return _WEEKDAYS.index(word.lower()[:3])


def _month_index(word: str) -> int:
    """1 for January ... 12 for December."""
    return _MONTHS.index(word.lower()[:3]) + 1


def _number(word: str) -> int:
    """An integer from digits or a word ("a", "two", "12")."""
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def _re(pattern: str) -> "re.Pattern[str]":
    """A case-insensitive pattern bounded by word edges."""
    return re.compile(pattern, _FLAGS)


# Offsets: "remind me 2 hours before", "also a week before", "and the day before as well".
_OFFSET = _re(
    r"(?:\b(?:and|also|plus)\s+)*(?:\bremind\s+me\s+)?(?:\b(?:also|too)\s+)?"
    r"\b(?:(?P<n>" + _NUMBER + r"|half\s+an)\s*|(?P<the>the)\s+)"
    r"(?P<unit>min(?:ute)?s?|hours?|hrs?|days?|nights?|weeks?|fortnights?)\s+"
    r"(?:before(?:hand)?|ahead|earlier|prior)\b(?:\s+(?:as\s+well|too))?"
)
_ADDS = _re(r"\b(?:also|too|as\s+well|plus|another)\b")
_PREFIX = _re(
    r"^\s*(?:please\s+)?(?:(?:can|could|would|will)\s+you\s+)?(?:please\s+)?"
    r"(?:remind\s+me|set\s+(?:up\s+)?(?:me\s+)?an?\s+reminder|add\s+an?\s+reminder|reminder|new\s+reminder)"
    r"(?:\s+(?:about|of|for|to\s+go\s+to|to\s+attend|that|that\s+i\s+have|i\s+have))?\b[\s:,-]*"
)

# Times of day.
_TIME_RANGE = _re(
    r"(?<![\d/.:-])\b(?:from\s+|between\s+)?(?P<h1>\d{1,2})(?:[:.](?P<m1>\d{2}))?\s*(?P<mer1>am|pm)?\s*"
    r"(?:-|–|to|until|till|and)\s*(?P<h2>\d{1,2})(?:[:.](?P<m2>\d{2}))?\s*(?P<mer2>am|pm)\b"
)
_TIME_MERIDIEM = _re(r"(?<![\d/.:-])\b(?:at\s+)?(?P<h>" + _HOUR_WORD + r")(?:[:.](?P<m>\d{2}))?\s*" + _MERIDIEM)
_TIME_HALF = _re(
    r"\b(?:at\s+)?(?:(?P<q>half|quarter)\s+(?P<dir>past|to)\s+|(?P<half>half)\s+)(?P<h>" + _HOUR_WORD + r")\b"
    r"(?:\s*" + _MERIDIEM + r")?"
)
_TIME_CLOCK = _re(r"(?<![\d/.:-])\b(?:at\s+)?(?P<h>\d{1,2})[:.h](?P<m>\d{2})\b(?![.:/]\d)(?:\s*hrs?\b|\s*hours\b)?")
_TIME_OCLOCK = _re(r"\b(?:at\s+)?(?P<h>" + _HOUR_WORD + r")\s*o['’]?\s?clock\b")
_TIME_NAMED = _re(r"\b(?:at\s+)?(?P<name>noon|midday|mid-day|midnight)\b")
_TIME_BARE = _re(
    r"\bat\s+(?P<h>" + _HOUR_WORD + r")\b(?!\s*(?:st|nd|rd|th|[/:.-]\d|" + _MONTH + r"\b))"
)
# A part of the day counts only where it is clearly a time ("night shift forum" keeps its name):
# "in the morning", "this evening", "at night" (taken whole); "tomorrow morning",
# "Thursday evening" (only the part of the day: the day is read as a date); "tonight", "lunchtime".
_TIME_POD_PHRASE = _re(r"\b(?:in\s+the|this|at)\s+(?P<pod>morning|afternoon|evening|night)\b")
_TIME_POD_AFTER_DAY = _re(
    r"\b(?:tomorrow|today|tmrw|tmw|" + _WEEKDAY + r")\.?\s+(?P<pod>morning|afternoon|evening|night)\b"
)
_TIME_POD_WORD = _re(r"\b(?P<pod>tonight|lunchtime|lunch\s+time)\b")
_TIME_PODS = ((_TIME_POD_PHRASE, None), (_TIME_POD_AFTER_DAY, "pod"), (_TIME_POD_WORD, None))
_TIME_RELATIVE = _re(
    r"\bin\s+(?P<n>" + _NUMBER + r"|half\s+an)\s*(?P<unit>min(?:ute)?s?|hours?|hrs?)(?:['’]?s?\s+time)?\b"
)

# Dates.
_DATE_ISO = _re(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")
_DATE_NUMERIC = _re(
    r"\b(?:(?P<wd>" + _WEEKDAY + r")\.?,?\s+)?(?:the\s+)?"
    r"(?<![\d/.:-])(?P<span>(?P<d>\d{1,2})[/-](?P<m>\d{1,2})(?:[/-](?P<y>\d{4}|\d{2}))?"
    r"|(?P<d2>\d{1,2})\.(?P<m2>\d{1,2})\.(?P<y2>\d{4}|\d{2}))\b(?!\s*(?:am|pm|[:.]\d))"
)
_DATE_DAY_MONTH = _re(
    r"\b(?:(?P<wd>" + _WEEKDAY + r")\.?,?\s+)?(?:the\s+)?(?P<span>(?P<d>\d{1,2})(?:st|nd|rd|th)?(?:\s+of)?\s+"
    r"(?P<mon>" + _MONTH + r")\.?(?:,?\s+(?P<y>\d{4}))?)\b"
)
_DATE_MONTH_DAY = _re(
    r"\b(?:(?P<wd>" + _WEEKDAY + r")\.?,?\s+)?(?P<span>(?P<mon>" + _MONTH + r")\.?\s+(?:the\s+)?"
    r"(?P<d>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<y>\d{4}))?)\b(?!\s*(?:am|pm|[:.]\d))"
)
_DATE_ORDINAL_DAY = _re(
    r"\b(?:(?P<wd>" + _WEEKDAY + r")\.?,?\s+)?(?:on\s+)?the\s+(?P<d>\d{1,2})(?:st|nd|rd|th)\b"
    r"|\b(?P<wd2>" + _WEEKDAY + r")\.?,?\s+(?P<d2>\d{1,2})(?:st|nd|rd|th)\b"
)
_DATE_NTH_WEEKDAY = _re(
    r"\b(?:the\s+)?(?P<nth>first|1st|second|2nd|third|3rd|fourth|4th|last)\s+(?P<wd>" + _WEEKDAY + r")\s+"
    r"(?:of\s+|in\s+)?(?:(?P<which>next|this|the)\s+month|(?P<mon>" + _MONTH + r")(?:\s+(?P<y>\d{4}))?)\b"
)
_DATE_RELATIVE = _re(
    r"\b(?:(?P<plus_week>(?:a\s+)?week\s+today|today\s+week)"
    r"|(?P<plus_fortnight>(?:a\s+)?fortnight\s+today|today\s+fortnight)"
    r"|(?P<plus_week_tomorrow>(?:a\s+)?week\s+tomorrow|tomorrow\s+week)"
    r"|(?P<plus_fortnight_tomorrow>(?:a\s+)?fortnight\s+tomorrow|tomorrow\s+fortnight)"
    r"|(?P<after_tomorrow>(?:the\s+)?day\s+after\s+tomorrow)"
    r"|in\s+(?P<n>" + _NUMBER + r")\s+(?P<unit>days?|weeks?|fortnights?)(?:['’]?s?\s+time)?"
    r"|(?P<today>today|tonight)|(?P<tomorrow>tomorrow|tmrw|tmw))\b"
)
_DATE_WEEKDAY = _re(
    r"\b(?:(?P<lead>a\s+week\s+on|a\s+fortnight\s+on|this\s+coming|this|next|coming)\s+)?(?:on\s+)?"
    r"(?P<wd>" + _WEEKDAY + r")\b\.?(?:\s+(?P<tail>week|fortnight|after\s+next|next\s+week)\b)?"
    r"|\bnext\s+week\s+(?:on\s+)?(?P<wd2>" + _WEEKDAY + r")\b"
)
_DATE_VAGUE = _re(r"\b(?:next|this|later\s+this|later\s+next)\s+(?:week|month)\b|\blater\b")


# --- matching -----------------------------------------------------------------------------------


@dataclass
class _Scan:
    """A message being read: spans found so far are blanked out so no word is read twice."""

    text: str
    work: str = ""
    spans: List[Tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Start with nothing blanked."""
        self.work = self.text

    def find(self, pattern: "re.Pattern[str]") -> List["re.Match[str]"]:
        """Every match of pattern in what is left, blanking each one."""
        matches = list(pattern.finditer(self.work))
        for match in matches:
            self.take(match.start(), match.end())
        return matches

    def find_group(self, pattern: "re.Pattern[str]", group: Optional[str]) -> List["re.Match[str]"]:
        """Every match of pattern in what is left, blanking only `group` of each (the whole match if None)."""
        if group is None:
            return self.find(pattern)
        matches = list(pattern.finditer(self.work))
        for match in matches:
            self.take(match.start(group), match.end(group))
        return matches

    def take(self, start: int, end: int) -> None:
        """Blank text[start:end]."""
        self.spans.append((start, end))
        self.work = self.work[:start] + " " * (end - start) + self.work[end:]


@dataclass
class _Clock:
    """One or two readings of a clock time: (hour, minute) pairs; `day_shift` for midnight."""

    readings: List[Tuple[int, int]]
    reason: Optional[str] = None
    day_shift: int = 0


@dataclass
class _Day:
    """The day(s) the message names, and why there is more than one (or none)."""

    days: List[date]
    reason: Optional[str] = None
    past: bool = False


_CONNECTORS = _re(
    r"^(?:[\s,;:.!?\-–—]|\b(?:on|at|for|from|is|it'?s|its|and|also|about|of|to|in|starting|starts|until)\b)+"
    r"|(?:[\s,;:!?\-–—]|\b(?:on|at|for|from|is|it'?s|its|and|also|about|of|to|in|starting|starts|by|please|pls)\b)+$"
)


def _description(scan: _Scan) -> Optional[str]:
    """What is left of the message once the time words are gone: the meeting's description."""
    text = " ".join(scan.work.split())
    previous = None
    while previous != text:
        previous = text
        text = _CONNECTORS.sub("", text).strip()
    text = text.strip(" .")
    if not any(ch.isalnum() for ch in text):
        return None
    return text[:DESCRIPTION_MAX]


def _offsets(scan: _Scan) -> Tuple[List[Offset], bool]:
    """The reminder offsets the message names, and whether they are extra to the defaults."""
    offsets: List[Offset] = []
    adds = False
    for match in scan.find(_OFFSET):
        unit = match.group("unit").lower()
        raw = match.group("n")
        if match.group("the"):
            amount = 1
        elif raw and raw.lower().startswith("half"):
            amount = 0.5
        else:
            amount = _number(raw)
        if unit.startswith("min"):
            minutes = amount
        elif unit.startswith("h"):
            minutes = amount * MINUTES_PER_HOUR
        elif unit.startswith(("day", "night")):
            minutes = amount * MINUTES_PER_DAY
        elif unit.startswith("fortnight"):
            minutes = amount * 2 * MINUTES_PER_WEEK
        else:
            minutes = amount * MINUTES_PER_WEEK
        if 0 < minutes <= 4 * MINUTES_PER_WEEK:
            offsets.append(Offset(int(minutes)))
        adds = adds or bool(_ADDS.search(match.group(0)))
    return offsets, adds


def _meridiem(word: Optional[str]) -> Optional[str]:
    """"am", "pm" or None from "a.m.", "PM", ..."""
    if not word:
        return None
    return "am" if word.lower().lstrip()[0] == "a" else "pm"


def _apply_meridiem(hour: int, meridiem: str) -> Optional[int]:
    """A 12-hour clock hour as 0-23, or None when it can't be (13pm)."""
    if not 1 <= hour <= 12:
        return None
    if meridiem == "am":
        return 0 if hour == 12 else hour
    return 12 if hour == 12 else hour + 12


def _clock_reading(hour: int, minute: int, *, with_minutes: bool, leading_zero: bool, hint: Optional[str]) -> Optional[_Clock]:
    """The reading(s) of a time written without am/pm (see the module docstring for the rules)."""
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    if hint and 1 <= hour <= 12:
        return _Clock([(_apply_meridiem(hour, hint), minute)])
    if hour == 0 or hour >= 13 or leading_zero:
        return _Clock([(hour, minute)])
    if hour == 12:
        return _Clock([(12, minute)])
    if with_minutes and hour >= 8:
        return _Clock([(hour, minute)])
    return _Clock([(hour, minute), (hour + 12, minute)], reason="am_pm")


def _part_of_day(word: str) -> str:
    """The part-of-day key in knowledge/reminders.yml for a word ("lunch time" -> "lunchtime")."""
    return re.sub(r"\s+", "", word.lower())


_HINTS = {"morning": "am", "afternoon": "pm", "evening": "pm", "tonight": "pm", "night": "pm"}


def _times(scan: _Scan, content: Mapping[str, Any]) -> Tuple[Optional[_Clock], Optional[str], Optional[str]]:
    """(clock reading or None, part of day said, error reason) for the time words of the message."""
    pods = [_part_of_day(m.group("pod")) for pattern, _ in _TIME_PODS for m in pattern.finditer(scan.work)]
    hint = next((_HINTS[p] for p in pods if p in _HINTS), None)
    clocks: List[_Clock] = []
    for match in scan.find(_TIME_RANGE):
        mer2 = match.group("mer2").lower()
        h1, h2 = int(match.group("h1")), int(match.group("h2"))
        m1 = int(match.group("m1") or 0)
        end = _apply_meridiem(h2, mer2)
        if match.group("mer1"):
            start = _apply_meridiem(h1, match.group("mer1").lower())
        elif end is not None and 1 <= h1 <= 12:
            pm = _apply_meridiem(h1, "pm")
            start = pm if pm is not None and pm <= end else _apply_meridiem(h1, "am")
        else:
            start = None
        if start is None or m1 > 59:
            return None, None, "bad_time"
        clocks.append(_Clock([(start, m1)]))
    for match in scan.find(_TIME_MERIDIEM):
        hour = _apply_meridiem(_number(match.group("h")), _meridiem(match.group("mer")))
        minute = int(match.group("m") or 0)
        if hour is None or minute > 59:
            return None, None, "bad_time"
        clocks.append(_Clock([(hour, minute)]))
    for match in scan.find(_TIME_HALF):
        hour = _number(match.group("h"))
        if match.group("half"):
            minute = 30  # British "half two" is 2:30
        elif match.group("q") == "half":
            minute = 30
        else:
            minute = 15 if match.group("dir").lower() == "past" else 45
            if match.group("dir").lower() == "to":
                hour = hour - 1 if hour > 1 else 12
        meridiem = _meridiem(match.group("mer"))
        if meridiem:
            value = _apply_meridiem(hour, meridiem)
            clocks.append(_Clock([(value, minute)]) if value is not None else _Clock([]))
        else:
            reading = _clock_reading(hour, minute, with_minutes=True, leading_zero=False, hint=hint)
            if reading is None:
                return None, None, "bad_time"
            clocks.append(reading)
    for match in scan.find(_TIME_CLOCK):
        raw = match.group("h")
        reading = _clock_reading(
            int(raw), int(match.group("m")), with_minutes=True, leading_zero=raw.startswith("0"), hint=hint
        )
        if reading is None:
            return None, None, "bad_time"
        clocks.append(reading)
    for pattern in (_TIME_OCLOCK, _TIME_BARE):
        for match in scan.find(pattern):
            raw = match.group("h")
            reading = _clock_reading(
                _number(raw), 0, with_minutes=False, leading_zero=raw.startswith("0"), hint=hint
            )
            if reading is None:
                return None, None, "bad_time"
            clocks.append(reading)
    for match in scan.find(_TIME_NAMED):
        if match.group("name").lower() == "midnight":
            clocks.append(_Clock([(0, 0)], reason="midnight", day_shift=1))
        else:
            clocks.append(_Clock([(12, 0)]))
    clocks = [clock for clock in clocks if clock.readings]
    pod_matches = [m for pattern, group in _TIME_PODS for m in scan.find_group(pattern, group)]
    pod = _part_of_day(pod_matches[0].group("pod")) if pod_matches else None
    if pod is not None and pod not in content["timing"]["part_of_day"]:
        pod = None
    if not clocks:
        return None, pod, None
    distinct = {tuple(clock.readings) for clock in clocks}
    if len(distinct) > 1:
        readings = sorted({reading for clock in clocks for reading in clock.readings})
        return _Clock(readings, reason="two_times"), pod, None
    return clocks[0], pod, None


def _year_for(day: int, month: int, today: date, recent_days: int) -> Optional[Tuple[date, bool]]:
    """(date, is_past) for a day and month said without a year: the next one, or a recent past one."""
    for year in range(today.year, today.year + 9):
        try:
            candidate = date(year, month, day)
        except ValueError:
            continue
        if candidate >= today:
            return candidate, False
        if (today - candidate).days <= recent_days:
            return candidate, True
    return None


def _dateparser_day_month(text: str, today: date, year_given: bool) -> Optional[Tuple[int, int, Optional[int]]]:
    """(day, month, year or None) of an absolute date such as "23/11" or "27th of November 2026", by dateparser."""
    import dateparser  # imported on first use: it loads its language data

    settings = {
        "DATE_ORDER": "DMY",
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": datetime.combine(today, time(0, 0)),
        "REQUIRE_PARTS": ["day", "month"],
        "PREFER_DAY_OF_MONTH": "first",
    }
    parsed = dateparser.parse(text, languages=["en"], settings=settings)
    if parsed is None:
        return None
    return parsed.day, parsed.month, (parsed.year if year_given else None)


def _absolute(text: str, year_given: bool, weekday: Optional[str], today: date, recent_days: int) -> _Day:
    """A date written out ("23/11", "Thursday 27 November"), its year settled, the weekday checked."""
    parts = _dateparser_day_month(text, today, year_given)
    if parts is None:
        return _Day([], reason="no_such_date")
    day, month, year = parts
    if year is not None:
        try:
            found, past = date(year, month, day), date(year, month, day) < today
        except ValueError:
            return _Day([], reason="no_such_date")
    else:
        settled = _year_for(day, month, today, recent_days)
        if settled is None:
            return _Day([], reason="no_such_date")
        found, past = settled
    if weekday is not None and found.weekday() != _weekday_index(weekday):
        return _Day([found], reason="weekday_mismatch", past=past)
    return _Day([found], past=past)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> Optional[date]:
    """The nth (1-4, or -1 for the last) weekday of a month."""
    if nth == -1:
        following = date(year + (month == 12), month % 12 + 1, 1)
        last = following - timedelta(days=1)
        return last - timedelta(days=(last.weekday() - weekday) % 7)
    first = date(year, month, 1)
    found = first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    return found if found.month == month else None


def _add_months(day: date, months: int) -> Tuple[int, int]:
    """(year, month) months after day's month."""
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def _coming(today: date, weekday: int, include_today: bool) -> date:
    """The next day that is `weekday` (today itself only when include_today)."""
    ahead = (weekday - today.weekday()) % 7
    if ahead == 0 and not include_today:
        ahead = 7
    return today + timedelta(days=ahead)


def _dates(scan: _Scan, today: date, content: Mapping[str, Any]) -> Tuple[List[_Day], bool]:
    """The days the message names (each a _Day), and whether it said "tonight"."""
    recent = int(content["timing"]["recent_past_days"])
    found: List[_Day] = []
    tonight = False
    for match in scan.find(_DATE_NTH_WEEKDAY):
        weekday = _weekday_index(match.group("wd"))
        nth = _ORDINALS[match.group("nth").lower()]
        which = (match.group("which") or "").lower()
        if match.group("mon"):
            month = _month_index(match.group("mon"))
            years = [int(match.group("y"))] if match.group("y") else [today.year, today.year + 1]
            days = [d for y in years if (d := _nth_weekday(y, month, weekday, nth))]
            upcoming = [d for d in days if d >= today] or days[-1:]
            found.append(_Day(upcoming[:1], reason=None if upcoming else "no_such_date",
                              past=bool(upcoming) and upcoming[0] < today))
        else:
            year, month = _add_months(today, 1 if which == "next" else 0)
            day = _nth_weekday(year, month, weekday, nth)
            found.append(_Day([day], past=day < today) if day else _Day([], reason="no_such_date"))
    for match in scan.find(_DATE_ISO):
        try:
            day = date(int(match.group("y")), int(match.group("m")), int(match.group("d")))
            found.append(_Day([day], past=day < today))
        except ValueError:
            found.append(_Day([], reason="no_such_date"))
    for pattern in (_DATE_NUMERIC, _DATE_DAY_MONTH, _DATE_MONTH_DAY):
        for match in scan.find(pattern):
            groups = match.groupdict()
            year = groups.get("y") or groups.get("y2")
            span = match.group("span")
            if year and len(year) == 2:
                # dateparser would put "23/11/26" in 2126 when preferring future dates: say the century.
                span = span[: -2] + str(2000 + int(year))
            found.append(_absolute(span, bool(year), match.group("wd"), today, recent))
    for match in scan.find(_DATE_ORDINAL_DAY):
        number = int(match.group("d") or match.group("d2"))
        weekday = match.group("wd") or match.group("wd2")
        candidates = []
        for months in range(0, 3):
            year, month = _add_months(today, months)
            try:
                candidate = date(year, month, number)
            except ValueError:
                continue
            if candidate >= today:
                candidates.append(candidate)
        if not candidates:
            found.append(_Day([], reason="no_such_date"))
        elif weekday is not None:
            matching = [c for c in candidates if c.weekday() == _weekday_index(weekday)]
            found.append(_Day(matching[:1]) if matching else _Day(candidates[:1], reason="weekday_mismatch"))
        else:
            found.append(_Day(candidates[:1]))
    for match in scan.find(_DATE_RELATIVE):
        groups = match.groupdict()
        if groups["plus_week"]:
            shift = 7
        elif groups["plus_fortnight"]:
            shift = 14
        elif groups["plus_week_tomorrow"]:
            shift = 8
        elif groups["plus_fortnight_tomorrow"]:
            shift = 15
        elif groups["after_tomorrow"]:
            shift = 2
        elif groups["n"]:
            unit = groups["unit"].lower()
            shift = _number(groups["n"]) * (1 if unit.startswith("day") else 14 if unit.startswith("f") else 7)
        elif groups["today"]:
            shift = 0
            tonight = tonight or groups["today"].lower() == "tonight"
        else:
            shift = 1
        found.append(_Day([today + timedelta(days=shift)]))
    for match in scan.find(_DATE_WEEKDAY):
        weekday = _weekday_index(match.group("wd") or match.group("wd2"))
        lead = " ".join((match.group("lead") or "").lower().split())
        tail = " ".join((match.group("tail") or "").lower().split())
        coming = _coming(today, weekday, include_today=False)
        if match.group("wd2") or tail == "next week":
            monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
            found.append(_Day([monday + timedelta(days=weekday)]))
        elif lead == "a week on" or tail in ("week", "after next"):
            found.append(_Day([coming + timedelta(days=7)]))
        elif lead == "a fortnight on" or tail == "fortnight":
            found.append(_Day([coming + timedelta(days=14)]))
        elif lead in ("this", "this coming", "coming"):
            found.append(_Day([_coming(today, weekday, include_today=True)]))
        elif lead == "next":
            same_week = coming - timedelta(days=coming.weekday()) == today - timedelta(days=today.weekday())
            if same_week:
                found.append(_Day([coming, coming + timedelta(days=7)], reason="next_weekday"))
            else:
                found.append(_Day([coming]))
        elif weekday == today.weekday():
            found.append(_Day([today, today + timedelta(days=7)], reason="same_weekday"))
        else:
            found.append(_Day([coming]))
    if not found and scan.find(_DATE_VAGUE):
        found.append(_Day([], reason="no_day"))
    return found, tonight


def _localise(naive: datetime, tz: ZoneInfo) -> Tuple[List[datetime], Optional[str]]:
    """The instant(s), in UTC, a wall-clock time names in tz: one, the shifted one in a clock gap, or two.

    Instants are compared in UTC only: Python ignores `fold` when comparing two
    datetimes that share a tzinfo, so 1:30am BST and 1:30am GMT would look equal.
    """
    first_utc = naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    second_utc = naive.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    if first_utc == second_utc:
        return [first_utc], None
    if first_utc.astimezone(tz).replace(tzinfo=None) != naive:
        # The clocks skip this time: read it with the offset before the change (1:30 GMT = 2:30 BST).
        return [first_utc], "clock_gap"
    return sorted([first_utc, second_utc]), "clock_repeat"


def _relative_instant(scan: _Scan, now: datetime) -> Optional[datetime]:
    """now plus "in 2 hours" / "in 30 minutes", or None."""
    matches = scan.find(_TIME_RELATIVE)
    if not matches:
        return None
    match = matches[0]
    raw = match.group("n")
    amount = 0.5 if raw.lower().startswith("half") else _number(raw)
    unit = match.group("unit").lower()
    minutes = amount if unit.startswith("min") else amount * MINUTES_PER_HOUR
    return now + timedelta(minutes=minutes)


def parse_when(
    text: str,
    now: datetime,
    time_zone: Optional[str] = None,
    *,
    on_day: Optional[date] = None,
    vague_ok: bool = False,
    content: Optional[Mapping[str, Any]] = None,
) -> ParsedTime:
    """Read the time words of text (see the module docstring); `on_day` is the day when none is said.

    vague_ok takes a part of the day as its usual time ("tomorrow morning" is 9:00),
    as a snooze does; a meeting time asks instead.
    """
    return _parse(text, now, time_zone, on_day=on_day, vague_ok=vague_ok, content=content, meeting=False)


def parse_meeting(
    text: str,
    now: datetime,
    time_zone: Optional[str] = None,
    *,
    on_day: Optional[date] = None,
    content: Optional[Mapping[str, Any]] = None,
) -> ParsedTime:
    """Read a whole "remind me about ..." message: description, time and reminder offsets."""
    return _parse(text, now, time_zone, on_day=on_day, vague_ok=False, content=content, meeting=True)


def _parse(
    text: str,
    now: datetime,
    time_zone: Optional[str],
    *,
    on_day: Optional[date],
    vague_ok: bool,
    content: Optional[Mapping[str, Any]],
    meeting: bool,
) -> ParsedTime:
    """The shared reading behind parse_when and parse_meeting."""
    content = content or load_content()
    zone_name = time_zone or content["timing"].get("time_zone") or DEFAULT_TIME_ZONE
    tz = zone(zone_name)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_local = now.astimezone(tz)
    today = now_local.date()
    text = " ".join(str(text or "").replace("\u00a0", " ").split())[:TEXT_MAX]
    scan = _Scan(text)
    result = ParsedTime(status=UNPARSEABLE, time_zone=zone_name)

    if meeting:
        prefix = _PREFIX.match(scan.work)
        if prefix:
            scan.take(prefix.start(), prefix.end())
        offsets, adds = _offsets(scan)
        result = replace(result, offsets=tuple(offsets), offsets_given=bool(offsets), adds_offsets=adds and bool(offsets))

    def finish(**values: Any) -> ParsedTime:
        """The result with the description taken from what is left of the message."""
        description = _description(scan) if meeting else None
        return replace(result, description=description, **values)

    now = now.astimezone(timezone.utc)
    relative = _relative_instant(scan, now)
    clock, pod, time_error = _times(scan, content)
    days, tonight = _dates(scan, today, content)
    if relative is not None:
        return finish(status=OK, when=relative.astimezone(tz))
    if time_error:
        return finish(status=UNPARSEABLE, reason=time_error)
    errors = [d for d in days if not d.days and d.reason]
    if errors:
        return finish(status=UNPARSEABLE if errors[0].reason == "no_such_date" else AMBIGUOUS, reason=errors[0].reason)
    distinct_days = {tuple(d.days) for d in days}
    if len(distinct_days) > 1:
        return finish(status=AMBIGUOUS, reason="two_dates", days=tuple(sorted({x for d in days for x in d.days})))
    day_spec = days[0] if days else None
    if day_spec is None and on_day is not None:
        day_spec = _Day([on_day])
    if tonight and pod is None:
        pod = "tonight"
    if clock is None and pod is not None and day_spec is None:
        day_spec = _Day([today])  # "this evening"
    if clock is None and day_spec is None:
        return finish(status=UNPARSEABLE, reason="no_time_words")

    if clock is None:
        if pod is None:
            return finish(status=AMBIGUOUS, reason="no_time", days=tuple(day_spec.days))
        hour, minute = _clock(content["timing"]["part_of_day"][pod])
        clock = _Clock([(hour, minute)], reason=None if vague_ok else "part_of_day")
    if day_spec is None:
        day_spec = _Day([today])

    # Every reading: each day with each clock time, as instants in UTC (see _localise).
    readings: List[Tuple[datetime, Optional[str]]] = []
    for day in day_spec.days:
        for hour, minute in clock.readings:
            naive = datetime.combine(day + timedelta(days=clock.day_shift), time(hour, minute))
            instants, clock_reason = _localise(naive, tz)
            readings += [(instant, clock_reason) for instant in instants]
    reason = day_spec.reason or clock.reason
    if reason == "weekday_mismatch":
        return finish(status=AMBIGUOUS, reason=reason, candidates=tuple(r.astimezone(tz) for r, _ in readings),
                      days=tuple(day_spec.days))
    future = [(instant, why) for instant, why in readings if instant > now]
    if not future:
        latest = max(instant for instant, _ in readings)
        return finish(status=PAST, when=latest.astimezone(tz))
    clock_reasons = {why for _, why in future if why}
    instants = tuple(instant.astimezone(tz) for instant in sorted({instant for instant, _ in future}))
    limit = now + timedelta(days=int(content["timing"]["max_days_ahead"]))
    if instants[0] > limit:
        return finish(status=UNPARSEABLE, reason="too_far", candidates=instants)
    if len(instants) > 1:
        reason = reason or next(iter(sorted(clock_reasons)), None) or "two_times"
        return finish(status=AMBIGUOUS, reason=reason, candidates=instants)
    if clock_reasons:
        return finish(status=AMBIGUOUS, reason=clock_reasons.pop(), candidates=instants)
    if clock.reason in ("midnight", "part_of_day"):
        return finish(status=AMBIGUOUS, reason=clock.reason, candidates=instants)
    return finish(status=OK, when=instants[0])


# --- saying times back --------------------------------------------------------------------------


def repeated_hour(instant: datetime, time_zone: Optional[str] = None) -> bool:
    """True when the wall-clock time of instant happens twice that night (the clocks go back)."""
    tz = zone(time_zone)
    local = instant.astimezone(tz)
    naive = local.replace(tzinfo=None)
    return naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(tzinfo=tz, fold=1).utcoffset()


def say_time(
    instant: datetime,
    time_zone: Optional[str] = None,
    content: Optional[Mapping[str, Any]] = None,
    *,
    label: Optional[str] = None,
) -> str:
    """"2:00pm" (with the zone, "1:30am GMT", when that time happens twice that night).

    label names the zone after the time ("2:00pm Paris time"; bot.time_zones.time_label
    says when one is needed).
    """
    content = content or load_content()
    formats = content["formats"]
    if label:
        return formats["time_in_zone"].format(time=say_time(instant, time_zone, content), label=label)
    local = instant.astimezone(zone(time_zone))
    if local.hour == 12 and local.minute == 0:
        return formats["noon"]
    values = {
        "hour": local.hour % 12 or 12,
        "minute": f"{local.minute:02d}",
        "meridiem": formats["am"] if local.hour < 12 else formats["pm"],
        "zone": local.tzname(),
    }
    key = "time_with_zone" if repeated_hour(instant, time_zone) else "time"
    return formats[key].format(**values)


def say_day(day: date, now: Optional[datetime] = None, content: Optional[Mapping[str, Any]] = None) -> str:
    """"Thursday 27 November" (with the year when it is not this year)."""
    content = content or load_content()
    formats = content["formats"]
    other_year = now is not None and day.year != now.date().year
    return formats["day_other_year" if other_year else "day"].format(
        weekday=day.strftime("%A"), day=day.day, month=day.strftime("%B"), year=day.year
    )


def say_when(
    instant: datetime,
    time_zone: Optional[str] = None,
    now: Optional[datetime] = None,
    content: Optional[Mapping[str, Any]] = None,
    *,
    label: Optional[str] = None,
) -> str:
    """"Thursday 27 November at 2:00pm" in time_zone (with the year when it is not this year; label: see say_time)."""
    content = content or load_content()
    formats = content["formats"]
    tz = zone(time_zone)
    local = instant.astimezone(tz)
    other_year = now is not None and local.year != now.astimezone(tz).year
    return formats["when_other_year" if other_year else "when"].format(
        weekday=local.strftime("%A"),
        day=local.day,
        month=local.strftime("%B"),
        year=local.year,
        time=say_time(instant, time_zone, content, label=label),
    )


def say_confirmation(
    instant: datetime,
    description: str,
    time_zone: Optional[str] = None,
    now: Optional[datetime] = None,
    content: Optional[Mapping[str, Any]] = None,
    *,
    label: Optional[str] = None,
) -> str:
    """"Thursday 27 November at 2:00pm: the PRG meeting" ("... at 2:00pm Paris time: ..." with a label)."""
    content = content or load_content()
    return content["formats"]["confirmation"].format(
        when=say_when(instant, time_zone, now, content, label=label), description=description
    )


def say_offset(offset: Offset, content: Optional[Mapping[str, Any]] = None) -> str:
    """"a day before", "2 hours before", "90 minutes before"."""
    content = content or load_content()
    return content["formats"]["offset"].format(amount=say_amount(offset.minutes, content))


def say_amount(minutes: int, content: Optional[Mapping[str, Any]] = None) -> str:
    """"a week", "2 days", "an hour", "90 minutes": the largest unit that divides minutes exactly."""
    content = content or load_content()
    units = content["formats"]["offset_units"]
    minutes = max(1, int(minutes))
    for unit, size in (("week", MINUTES_PER_WEEK), ("day", MINUTES_PER_DAY), ("hour", MINUTES_PER_HOUR), ("minute", 1)):
        if minutes % size == 0:
            n = minutes // size
            return (units[unit][0] if n == 1 else units[unit][1]).format(n=n)
    raise ValueError(f"bad amount {minutes!r}")  # pragma: no cover - size 1 always divides


def say_starts_in(remaining: timedelta, content: Optional[Mapping[str, Any]] = None) -> str:
    """"in an hour", "in 40 minutes", "in a week": how long until a meeting, to the minute."""
    content = content or load_content()
    minutes = round(remaining.total_seconds() / 60)
    if minutes >= 2 * MINUTES_PER_HOUR and minutes % MINUTES_PER_HOUR and minutes < MINUTES_PER_DAY:
        minutes = round(minutes / MINUTES_PER_HOUR) * MINUTES_PER_HOUR  # "in 3 hours", not "in 179 minutes"
    elif minutes >= MINUTES_PER_DAY and minutes % MINUTES_PER_DAY:
        minutes = round(minutes / MINUTES_PER_DAY) * MINUTES_PER_DAY
    return content["formats"]["starts_in"].format(amount=say_amount(minutes, content))


def say_relative_day(
    instant: datetime,
    now: datetime,
    time_zone: Optional[str] = None,
    content: Optional[Mapping[str, Any]] = None,
    *,
    label: Optional[str] = None,
) -> str:
    """"today at 2:00pm", "tomorrow, Thursday 27 November at 2:00pm" or "on Thursday 27 November at 2:00pm"."""
    content = content or load_content()
    tz = zone(time_zone)
    days = (instant.astimezone(tz).date() - now.astimezone(tz).date()).days
    key = "today" if days <= 0 else "tomorrow" if days == 1 else "other"
    return content["formats"]["relative_day"][key].format(
        time=say_time(instant, time_zone, content, label=label),
        when=say_when(instant, time_zone, now, content, label=label),
    )


def say_offsets(offsets: Iterable[Offset], content: Optional[Mapping[str, Any]] = None) -> str:
    """"a day before and an hour before"."""
    content = content or load_content()
    return content["formats"]["offset_join"].join(say_offset(o, content) for o in offsets)


# --- reminder times -----------------------------------------------------------------------------


def due_at(starts_at: datetime, offset: Offset, time_zone: Optional[str] = None) -> datetime:
    """When a reminder `offset` before starts_at goes, in UTC.

    Whole days are counted on the calendar in the champion's zone (a day before a
    9am meeting is 9am the day before, whatever the clocks did overnight); other
    offsets are exact durations.
    """
    tz = zone(time_zone)
    if offset.whole_days is not None:
        local = starts_at.astimezone(tz).replace(tzinfo=None) - timedelta(days=offset.whole_days)
        instants, _ = _localise(local, tz)
        return instants[0]
    return (starts_at - timedelta(minutes=offset.minutes)).astimezone(timezone.utc)


def after_meeting_at(starts_at: datetime, content: Optional[Mapping[str, Any]] = None) -> datetime:
    """When the "how did it go?" prompt goes, in UTC."""
    content = content or load_content()
    return (starts_at + _duration(content["timing"]["after_meeting"])).astimezone(timezone.utc)


def snooze_until(
    text: str, now: datetime, time_zone: Optional[str] = None, content: Optional[Mapping[str, Any]] = None
) -> Optional[datetime]:
    """The instant a snooze ("in 1 hour", "tomorrow morning", "this evening") means, in UTC, or None."""
    parsed = parse_when(text, now, time_zone, vague_ok=True, content=content)
    if parsed.status != OK:
        return None
    return parsed.when_utc


def describe_days(days: Sequence[date], now: datetime, content: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Each day said as "Thursday 27 November"."""
    return [say_day(day, now, content) for day in days]
