"""Meeting times as champions type them: British dates, the champion's zone, both clock changes, no silent guesses."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.reminder_times import (
    AMBIGUOUS,
    OK,
    PAST,
    UNPARSEABLE,
    Offset,
    due_at,
    after_meeting_at,
    parse_meeting,
    parse_when,
    say_confirmation,
    say_offsets,
    say_when,
    snooze_until,
)

LONDON = ZoneInfo("Europe/London")
UTC = timezone.utc


def local(*args: int) -> datetime:
    """A wall-clock time in London (fold 0)."""
    return datetime(*args, tzinfo=LONDON)


def utc(*args: int) -> datetime:
    """An instant in UTC."""
    return datetime(*args, tzinfo=UTC)


# The clocks: "now" for each group of phrasings.
MON = local(2026, 11, 23, 10, 0)        # Monday 23 November 2026, 10am GMT
FRI = local(2026, 11, 27, 10, 0)        # Friday 27 November 2026
SPRING_26 = local(2026, 3, 27, 12, 0)   # Friday before the clocks go forward (Sun 29 March 2026, 1am GMT)
AUTUMN_26 = local(2026, 10, 23, 12, 0)  # Friday before the clocks go back (Sun 25 October 2026, 2am BST)
SPRING_27 = local(2027, 3, 25, 9, 0)    # Thursday before Sun 28 March 2027
AUTUMN_27 = local(2027, 10, 27, 12, 0)  # Wednesday before Sun 31 October 2027

# (now, phrasing, status, expected UTC instant for ok/past, or (reason, candidate UTC instants...)).
TABLE = [
    # --- the issue's own examples
    (MON, "remind me about the PRG meeting on Thursday at 2pm", OK, utc(2026, 11, 26, 14, 0)),
    (MON, "patient panel next tues 10.30", AMBIGUOUS,
     ("next_weekday", utc(2026, 11, 24, 10, 30), utc(2026, 12, 1, 10, 30))),
    (FRI, "patient panel next tues 10.30", OK, utc(2026, 12, 1, 10, 30)),
    (MON, "stroke project meeting 23/11 at 14:00", OK, utc(2026, 11, 23, 14, 0)),
    (MON, "fortnight today 11am", OK, utc(2026, 12, 7, 11, 0)),
    (MON, "the first Monday of next month at 6pm", OK, utc(2026, 12, 7, 18, 0)),
    (MON, "tomorrow morning", AMBIGUOUS, ("part_of_day", utc(2026, 11, 24, 9, 0))),
    (MON, "Thursday at 2pm", OK, utc(2026, 11, 26, 14, 0)),
    # --- day before month
    (MON, "03/04 at 10am", OK, utc(2027, 4, 3, 9, 0)),            # 3 April (BST), not 4 March
    (MON, "03/04/2027 10:00", OK, utc(2027, 4, 3, 9, 0)),
    (MON, "12/01 at 7pm", OK, utc(2027, 1, 12, 19, 0)),           # 12 January
    (MON, "23.11.26 at 11.15", OK, utc(2026, 11, 23, 11, 15)),
    (MON, "2026-12-01 18:30", OK, utc(2026, 12, 1, 18, 30)),
    (MON, "27th of November 2026, 9.30am", OK, utc(2026, 11, 27, 9, 30)),
    (MON, "November 30th at 10am", OK, utc(2026, 11, 30, 10, 0)),
    (MON, "Friday 27 November at 2:00pm", OK, utc(2026, 11, 27, 14, 0)),
    (MON, "the 27th at 3pm", OK, utc(2026, 11, 27, 15, 0)),
    (MON, "31/02 at 9am", UNPARSEABLE, ("no_such_date",)),
    (MON, "Thursday 27 November at 2pm", AMBIGUOUS, ("weekday_mismatch", utc(2026, 11, 27, 14, 0))),
    # --- relative days
    (MON, "monday week 6pm", OK, utc(2026, 12, 7, 18, 0)),
    (MON, "a week on Thursday at 7pm", OK, utc(2026, 12, 3, 19, 0)),
    (MON, "Thursday week at 7pm", OK, utc(2026, 12, 3, 19, 0)),
    (MON, "Thursday next week at 10am", OK, utc(2026, 12, 3, 10, 0)),
    (MON, "a week today at 4pm", OK, utc(2026, 11, 30, 16, 0)),
    (MON, "a week tomorrow 10am", OK, utc(2026, 12, 1, 10, 0)),
    (MON, "tomorrow at 9am", OK, utc(2026, 11, 24, 9, 0)),
    (MON, "tomorrow at 14h30", OK, utc(2026, 11, 24, 14, 30)),
    (MON, "tonight at 7", OK, utc(2026, 11, 23, 19, 0)),
    (MON, "in 3 days at 4pm", OK, utc(2026, 11, 26, 16, 0)),
    (MON, "in 2 hours", OK, utc(2026, 11, 23, 12, 0)),
    (MON, "last Friday of the month 1pm", OK, utc(2026, 11, 27, 13, 0)),
    (MON, "first Monday of January at 6pm", OK, utc(2027, 1, 4, 18, 0)),
    (MON, "next Monday 2pm", OK, utc(2026, 11, 30, 14, 0)),
    (FRI, "next Thursday at 6.15pm", OK, utc(2026, 12, 3, 18, 15)),
    (MON, "Monday 2pm", AMBIGUOUS, ("same_weekday", utc(2026, 11, 23, 14, 0), utc(2026, 11, 30, 14, 0))),
    (MON, "Monday at 9am", OK, utc(2026, 11, 30, 9, 0)),           # 9am today has gone: only next Monday is left
    (MON, "next week", AMBIGUOUS, ("no_day",)),
    (MON, "Thursday", AMBIGUOUS, ("no_time",)),
    # --- times
    (MON, "at 2pm", OK, utc(2026, 11, 23, 14, 0)),
    (MON, "Thursday at 2", AMBIGUOUS, ("am_pm", utc(2026, 11, 26, 2, 0), utc(2026, 11, 26, 14, 0))),
    (MON, "Thursday 7.30", AMBIGUOUS, ("am_pm", utc(2026, 11, 26, 7, 30), utc(2026, 11, 26, 19, 30))),
    (MON, "Thursday 07:30", OK, utc(2026, 11, 26, 7, 30)),
    (MON, "Thursday evening at 7.30", OK, utc(2026, 11, 26, 19, 30)),
    (MON, "half past two tomorrow", AMBIGUOUS, ("am_pm", utc(2026, 11, 24, 2, 30), utc(2026, 11, 24, 14, 30))),
    (MON, "half past two tomorrow afternoon", OK, utc(2026, 11, 24, 14, 30)),
    (MON, "2-4pm on Wednesday", OK, utc(2026, 11, 25, 14, 0)),
    (MON, "midday on Friday", OK, utc(2026, 11, 27, 12, 0)),
    (MON, "noon tomorrow", OK, utc(2026, 11, 24, 12, 0)),
    (MON, "at 25:00 tomorrow", UNPARSEABLE, ("bad_time",)),
    # --- the past, and too far ahead
    (MON, "at 9am", PAST, utc(2026, 11, 23, 9, 0)),
    (MON, "20/11 at 9am", PAST, utc(2026, 11, 20, 9, 0)),         # three days ago: asked, not moved to 2027
    (MON, "20/10 at 9am", OK, utc(2027, 10, 20, 8, 0)),           # over a month ago: next October (BST)
    (MON, "31/12/2029 at 10am", UNPARSEABLE, ("too_far",)),
    (MON, "the PRG meeting", UNPARSEABLE, ("no_time_words",)),
    # --- spring forward 2026: 1am GMT becomes 2am BST on Sunday 29 March
    (SPRING_26, "Sunday at 1:30am", AMBIGUOUS, ("clock_gap", utc(2026, 3, 29, 1, 30))),  # = 2:30am BST
    (SPRING_26, "Sunday at 2:30am", OK, utc(2026, 3, 29, 1, 30)),
    (SPRING_26, "Sunday at 12.30am", OK, utc(2026, 3, 29, 0, 30)),
    (SPRING_26, "Saturday at 10am", OK, utc(2026, 3, 28, 10, 0)),  # GMT
    (SPRING_26, "Monday 30 March at 10am", OK, utc(2026, 3, 30, 9, 0)),  # BST
    # --- fall back 2026: 2am BST becomes 1am GMT on Sunday 25 October
    (AUTUMN_26, "Sunday at 1:30am", AMBIGUOUS, ("clock_repeat", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))),
    (AUTUMN_26, "Sunday 25/10 at 01:30", AMBIGUOUS, ("clock_repeat", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))),
    (AUTUMN_26, "Sunday at 12.30am", OK, utc(2026, 10, 24, 23, 30)),  # still BST
    (AUTUMN_26, "Sunday at 2:30am", OK, utc(2026, 10, 25, 2, 30)),    # GMT, happens once
    (AUTUMN_26, "Monday 26 October at 10am", OK, utc(2026, 10, 26, 10, 0)),
    # --- spring forward 2027: Sunday 28 March
    (SPRING_27, "28/03 at 1.30am", AMBIGUOUS, ("clock_gap", utc(2027, 3, 28, 1, 30))),
    (SPRING_27, "Sunday 28 March 2027 at 3pm", OK, utc(2027, 3, 28, 14, 0)),
    (SPRING_27, "Friday at 6pm", OK, utc(2027, 3, 26, 18, 0)),
    # --- fall back 2027: Sunday 31 October
    (AUTUMN_27, "Sunday 31 October at 1:30am", AMBIGUOUS, ("clock_repeat", utc(2027, 10, 31, 0, 30), utc(2027, 10, 31, 1, 30))),
    (AUTUMN_27, "Sunday at 1am", AMBIGUOUS, ("clock_repeat", utc(2027, 10, 31, 0, 0), utc(2027, 10, 31, 1, 0))),
    (AUTUMN_27, "Saturday 30/10 at 11am", OK, utc(2027, 10, 30, 10, 0)),  # BST
    (AUTUMN_27, "first Monday of next month at 6pm", OK, utc(2027, 11, 1, 18, 0)),  # GMT
]


def test_the_table_is_big_enough():
    """The issue asks for at least 40 phrasings, the clock-change weekends included."""
    assert len(TABLE) >= 40
    assert {SPRING_26, AUTUMN_26, SPRING_27, AUTUMN_27} <= {row[0] for row in TABLE}


@pytest.mark.parametrize("now,phrase,status,expected", TABLE, ids=[row[1] for row in TABLE])
def test_phrasings(now, phrase, status, expected):
    """Each phrasing reads as the expected instant, or as a clear question with the expected readings."""
    result = parse_meeting(phrase, now)
    assert result.status == status, (result.status, result.reason, result.when, result.candidates)
    if status in (OK, PAST):
        assert result.when_utc == expected
        assert result.when.tzinfo is not None and result.reason is None or status == PAST
        assert not result.candidates
    else:
        reason, *candidates = expected
        assert result.reason == reason
        assert result.when is None
        if candidates:
            assert [c.astimezone(UTC) for c in result.candidates] == candidates


def test_no_time_keeps_the_day_it_found():
    """"Thursday" alone asks for the time, remembering the day; the answer is read on that day."""
    result = parse_meeting("PRG meeting Thursday", MON)
    assert (result.status, result.reason, result.days) == (AMBIGUOUS, "no_time", (date(2026, 11, 26),))
    answer = parse_when("2pm", MON, on_day=result.days[0])
    assert answer.status == OK and answer.when_utc == utc(2026, 11, 26, 14, 0)


def test_times_are_in_the_champions_zone():
    """Another zone is honoured; the instant is stored in UTC."""
    result = parse_meeting("Thursday at 2pm", MON, "Europe/Paris")
    assert result.when_utc == utc(2026, 11, 26, 13, 0)
    assert result.when.utcoffset() == timedelta(hours=1)
    with pytest.raises(ValueError):
        parse_meeting("Thursday at 2pm", MON, "Mars/Olympus_Mons")


def test_now_must_be_aware():
    """A naive `now` is refused rather than guessed."""
    with pytest.raises(ValueError):
        parse_meeting("Thursday at 2pm", datetime(2026, 11, 23, 10, 0))


# --- descriptions and offsets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "phrase,description,offsets",
    [
        ("remind me about the PRG meeting on Thursday at 2pm", "the PRG meeting", [24 * 60, 60]),
        ("patient panel next tues 10.30", "patient panel", [24 * 60, 60]),
        ("stroke project meeting 30/11 at 14:00", "stroke project meeting", [24 * 60, 60]),
        ("Remind me about the PRG meeting on Thursday at 2pm, remind me 2 hours before", "the PRG meeting", [120]),
        ("patient panel friday 10am, also a week before", "patient panel", [7 * 24 * 60, 24 * 60, 60]),
        ("Can you remind me of the stroke project meeting on Friday at 10am and 30 minutes before please",
         "the stroke project meeting", [30]),
        ("set a reminder for the carers' forum tomorrow at 6pm, the day before and an hour before",
         "the carers' forum", [24 * 60, 60]),
        ("Thursday at 2pm", None, [24 * 60, 60]),
        ("night shift forum on Thursday at 7pm", "night shift forum", [24 * 60, 60]),
        ("morning coffee group Thursday 10am", "morning coffee group", [24 * 60, 60]),
    ],
)
def test_description_and_offsets(phrase, description, offsets):
    """The meeting's name is what is left once the time words are gone; offsets replace or add to the defaults."""
    result = parse_meeting(phrase, FRI)
    assert result.status == OK, (result.status, result.reason)
    assert result.description == description
    assert [o.minutes for o in result.chosen_offsets()] == offsets


def test_offset_kinds_and_wording():
    """A day and an hour before are their own kinds; others are custom; all are said in words."""
    assert [Offset(1440).kind, Offset(60).kind, Offset(120).kind] == ["day_before", "hour_before", "custom"]
    assert say_offsets([Offset(7 * 1440), Offset(1440), Offset(120), Offset(30)]) == (
        "a week before and a day before and 2 hours before and 30 minutes before"
    )


# --- saying times back -------------------------------------------------------------------------


def test_confirmation_words():
    """"Thursday 27 November at 2:00pm: the PRG meeting", with the year only when it is not this year."""
    now = local(2025, 11, 20, 9, 0)
    instant = utc(2025, 11, 27, 14, 0)
    assert say_confirmation(instant, "the PRG meeting", now=now) == "Thursday 27 November at 2:00pm: the PRG meeting"
    assert say_when(utc(2026, 4, 3, 9, 0), now=now) == "Friday 3 April 2026 at 10:00am"
    assert say_when(utc(2025, 11, 28, 12, 0), now=now) == "Friday 28 November at 12:00 midday"
    assert say_when(utc(2025, 11, 28, 0, 5), now=now) == "Friday 28 November at 12:05am"


def test_repeated_hour_says_its_zone():
    """When the clocks go back, the two 1:30ams are told apart."""
    first, second = parse_meeting("Sunday at 1:30am", AUTUMN_26).candidates
    assert say_when(first) == "Sunday 25 October at 1:30am BST"
    assert say_when(second) == "Sunday 25 October at 1:30am GMT"


# --- reminder times ----------------------------------------------------------------------------


def test_day_before_counts_calendar_days_across_the_change():
    """A day before 9am on Monday 30 March 2026 is 9am (BST) on Sunday 29 March: 23 hours earlier."""
    starts = utc(2026, 3, 30, 8, 0)  # 9am BST
    assert due_at(starts, Offset(1440)) == utc(2026, 3, 29, 8, 0)
    assert due_at(starts, Offset(60)) == utc(2026, 3, 30, 7, 0)
    assert due_at(starts, Offset(7 * 1440)) == utc(2026, 3, 23, 9, 0)  # 9am GMT a week before
    autumn = utc(2026, 10, 26, 10, 0)  # Monday 10am GMT; the day before is 10am GMT too
    assert due_at(autumn, Offset(1440)) == utc(2026, 10, 25, 10, 0)


def test_after_meeting_prompt_time():
    """The "how did it go?" prompt comes three hours after the start (knowledge/reminders.yml)."""
    assert after_meeting_at(utc(2026, 11, 26, 14, 0)) == utc(2026, 11, 26, 17, 0)


@pytest.mark.parametrize(
    "phrase,expected",
    [
        ("in 1 hour", utc(2026, 11, 23, 11, 0)),
        ("in 30 minutes", utc(2026, 11, 23, 10, 30)),
        ("tomorrow morning", utc(2026, 11, 24, 9, 0)),
        ("this evening", utc(2026, 11, 23, 18, 0)),
        ("Thursday at 2pm", utc(2026, 11, 26, 14, 0)),
    ],
)
def test_snooze(phrase, expected):
    """A snooze takes a part of the day at its usual time."""
    assert snooze_until(phrase, MON) == expected


def test_snooze_refuses_what_it_cannot_read():
    """Nothing readable, or a time gone, is no snooze at all."""
    assert snooze_until("whenever", MON) is None
    assert snooze_until("at 9am", MON) is None


@pytest.mark.parametrize(
    "junk",
    ["", "   ", "😀🙂", "ملتقى المرضى يوم الخميس", "<b>Thursday</b>", "'; DROP TABLE meetings; --",
     "x" * 100_000, "Thursday " * 2000, "99/99/9999", "at 99pm", "\u0000\u200b"],
)
def test_bad_input_gets_an_answer_not_an_exception(junk):
    """Junk is read without raising; whatever comes back has a status the conversation can act on."""
    result = parse_meeting(junk, MON)
    assert result.status in (OK, PAST, AMBIGUOUS, UNPARSEABLE)
