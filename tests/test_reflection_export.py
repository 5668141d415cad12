"""The engagement team's CSV export of shared reflections and pledges (bot/reflection_export.py, `reflections export`)."""
from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from bench.reflection_sample import seed
from bot.db import make_engine, make_session_factory, migrate
from bot.groups import TeamInputError
from bot.reflection_export import (
    CSV_COLUMNS,
    ReflectionFilter,
    csv_bytes,
    export_rows,
    fetch_shared,
    safe_cell,
    write_private_file,
)
from bot.team_auth import NotAuthorised, authorise

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
TOKEN = "s3cret-team-token"
TEAM = authorise(TOKEN, TOKEN)
NOVEMBER = ReflectionFilter.parse("2026-11-01", "2026-11-30")

# Text that must never leave the database: private and unanswered reflections, an erased champion,
# and every chat id.
NEVER_EXPORTED = ["SECRET", "UNANSWERED", "ERASED", "Dev Shah", "111111", "uuid-ben", "333333", "444444"]


@pytest.fixture
def seeded(engine):
    """The known reflections (bench/reflection_sample.py) on SQLite and PostgreSQL: (sessions, ids)."""
    sessions = make_session_factory(engine)
    return sessions, seed(sessions)


def parse_csv(data: bytes) -> List[List[str]]:
    """The CSV's rows as a spreadsheet would read them (the byte-order mark removed)."""
    assert data.startswith(b"\xef\xbb\xbf"), "UTF-8 with a BOM, so Excel reads accents"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def expected_november(ids: Dict[str, int]) -> List[List[str]]:
    """Every row of November's export, exactly."""
    ana = ["named", "Ana Patel", str(ids["ana"]), "telegram"]
    ben = ["named", "Ben O'Neil", str(ids["ben"]), "web"]
    anon = ["anonymous", "", "", ""]

    def reflection(ref, day, session, org, who, rating, takeaway, helps, finished):
        return ["reflection", ref, day, session, org, *who, rating, takeaway, helps, finished, "", "", ""]

    def pledge(ref, day, session, org, who, text, status, done=""):
        return ["pledge", ref, day, session, org, *who, "", "", "", "", text, status, done]

    return [
        list(CSV_COLUMNS),
        reflection("R1", "2026-11-03", "Board meeting", "leeds", ana, "5", "Patients' stories changed the plan.",
                   "Papers a week earlier", "yes"),
        pledge("R1", "2026-11-03", "Board meeting", "leeds", ana, "Read the papers early", "done", "2026-11-10"),
        pledge("R1", "2026-11-03", "Board meeting", "leeds", ana, '\'=HYPERLINK("http://evil.example","click")',
               "in progress"),
        reflection("R2", "2026-11-05", "board meeting", "south-tyneside", anon, "2",
                   "<script>alert('x')</script> & the chair listened", "Less jargon,\nplease", "yes"),
        pledge("R2", "2026-11-05", "board meeting", "south-tyneside", anon, "'-2 call the chair", "needs help"),
        reflection("R3", "2026-11-12", "Board meeting", "leeds", anon, "5", "Listening works", "", "yes"),
        pledge("R3", "2026-11-12", "Board meeting", "leeds", anon, "Share the summary", "done", "2026-11-13"),
        pledge("R3", "2026-11-12", "Board meeting", "leeds", anon, "Speak at the next meeting", "done", "2026-11-14"),
        reflection("R4", "2026-11-20", "Stroke pathway", "leeds", anon, "3", "'+ more time for questions", "", "no"),
        reflection("R5", "2026-11-30", "Stroke pathway", "south-tyneside", ben, "", "'@mention the carers", "", "yes"),
        pledge("R5", "2026-11-30", "Stroke pathway", "south-tyneside", ben, "Ask about transport",
               "open (not checked yet)"),
        pledge("R5", "2026-11-30", "Stroke pathway", "south-tyneside", ben, "Join the PPG", "let go"),
    ]


# --- what each sharing choice puts in the file ----------------------------------------------------


def test_november_export_row_by_row(seeded):
    """Named rows carry name, id and channel; anonymous rows none; private, unanswered and erased never appear."""
    sessions, ids = seeded
    selection = fetch_shared(sessions, NOVEMBER, auth=TEAM)
    data = csv_bytes(selection)
    assert parse_csv(data) == expected_november(ids)
    assert selection.private_left_out == 2  # Cat's private one and her unanswered one (the erased one not at all)
    assert selection.pledge_count == 7
    for secret in NEVER_EXPORTED:
        assert secret.encode() not in data, secret


def test_anonymous_rows_cannot_be_tied_to_a_champion(seeded):
    """Anonymous rows: no name, id, channel or chat id in any cell, and numbers that are only this export's."""
    sessions, ids = seeded
    rows = export_rows(fetch_shared(sessions, NOVEMBER, auth=TEAM))
    anonymous = [row for row in rows if row["shared as"] == "anonymous"]
    assert len(anonymous) == 6  # R2, R3 and R4 and their pledges
    for row in anonymous:
        assert (row["name"], row["champion id"], row["channel"]) == ("", "", "")
        cells = " ".join(row.values())
        for value in ("Ana", "Ben", "Cat", "telegram", "web", "111111", "uuid-ben", "333333"):
            assert value not in cells
    # Ana's anonymous November reflection is R3 here but R1 when only it is exported: nothing stable to match on.
    only = export_rows(fetch_shared(sessions, ReflectionFilter.parse("12/11/2026", "12/11/2026"), auth=TEAM))
    assert [row["reflection"] for row in only] == ["R1", "R1", "R1"]
    assert {row["shared as"] for row in only} == {"anonymous"}


def test_formula_cells_are_neutralised():
    """Cells starting = + - @ tab or CR get a leading apostrophe; others are left as typed."""
    for text in ("=1+1", "+44 7700", "-2", "@SUM(A1)", "\tcmd", "\rcmd", '=HYPERLINK("x")'):
        assert safe_cell(text) == "'" + text
    for text in ("Fine", "", "1=1", "a+b", "'quoted", "£5", " =1"):
        assert safe_cell(text) == text
    assert safe_cell(None) == "" and safe_cell(5) == "5"


# --- filters ------------------------------------------------------------------------------------


def refs(sessions, filters: ReflectionFilter) -> List[tuple]:
    """(date, session, sharing) of the shared reflections found, and the private count."""
    selection = fetch_shared(sessions, filters, auth=TEAM)
    return [(r.day.isoformat(), r.session_label, r.sharing) for r in selection.shared], selection.private_left_out


def test_filters_by_session_organisation_and_london_days(seeded):
    """Session text matches any capitals; organisation by key; days are London's, both ends included."""
    sessions, _ = seeded
    board = refs(sessions, ReflectionFilter.parse("2026-11-01", "2026-11-30", session="  BOARD  meeting"))
    assert board == ([("2026-11-03", "Board meeting", "named"), ("2026-11-05", "board meeting", "anonymous"),
                      ("2026-11-12", "Board meeting", "anonymous")], 1)
    leeds = refs(sessions, ReflectionFilter.parse("2026-11-01", "2026-11-30", organisation="Leeds"))
    assert leeds == ([("2026-11-03", "Board meeting", "named"), ("2026-11-12", "Board meeting", "anonymous"),
                      ("2026-11-20", "Stroke pathway", "anonymous")], 2)
    both = refs(sessions, ReflectionFilter.parse(None, None, session="stroke", organisation="south-tyneside"))
    assert both == ([("2026-11-30", "Stroke pathway", "named")], 0)
    # 23:30 UTC on 1 October is 00:30 on 2 October in London (summer time).
    assert refs(sessions, ReflectionFilter.parse("2026-10-02", "2/10/2026")) == (
        [("2026-10-02", "Autumn forum", "anonymous")], 0)
    assert refs(sessions, ReflectionFilter.parse("2026-09-01", "2026-10-01")) == ([], 0)
    # The last day counts up to London midnight: 23:30 UTC on 30 November is still 30 November (Greenwich time).
    assert refs(sessions, ReflectionFilter.parse("30/11/2026", "30/11/2026"))[0] == [
        ("2026-11-30", "Stroke pathway", "named")]
    assert refs(sessions, ReflectionFilter.parse("2026-12-01", None))[0] == [("2026-12-01", "Board meeting", "named")]
    everything, private = refs(sessions, ReflectionFilter())
    assert (len(everything), private) == (7, 2)
    assert refs(sessions, ReflectionFilter.parse(session="no such session")) == ([], 0)


@pytest.mark.parametrize(
    "args, reason",
    [
        (("2026-11-30", "2026-11-01"), "is after the end date"),
        (("31/11/2026", None), "can't read '31/11/2026'"),
        (("next week", None), "day first"),
        ((None, None, None, "Leeds Teaching <Hospitals>"), "not an organisation key"),
        ((None, None, "x" * 201), "too long"),
    ],
)
def test_bad_filters_are_refused_in_plain_english(args, reason):
    """Unreadable days, a reversed range, a non-key organisation and a huge session name are refused."""
    with pytest.raises(TeamInputError, match=reason):
        ReflectionFilter.parse(*args)


def test_filter_reads_british_days_and_describes_itself():
    """Day-first dates, blank means any; the description names every part."""
    f = ReflectionFilter.parse("1/11/2026", "30.11.2026", " Board ", " LEEDS ")
    assert (f.date_from, f.date_to, f.session, f.organisation) == (date(2026, 11, 1), date(2026, 11, 30), "Board", "leeds")
    assert f.describe() == "1 Nov 2026 to 30 Nov 2026; session containing 'Board'; organisation leeds"
    assert ReflectionFilter.parse("", "  ").describe() == "all dates"


def test_only_the_team_can_read_reflections(seeded):
    """No team pass, no reflections."""
    sessions, _ = seeded
    for auth in (None, object(), "s3cret-team-token"):
        with pytest.raises(NotAuthorised):
            fetch_shared(sessions, NOVEMBER, auth=auth)


def test_private_file_is_owner_only_and_replaced_whole(tmp_path):
    """Written with mode 0600 (even over a file that was readable by all); folders and missing folders refused."""
    target = tmp_path / "out.csv"
    target.write_text("old")
    os.chmod(target, 0o644)
    write_private_file(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left behind
    with pytest.raises(TeamInputError, match="is a folder"):
        write_private_file(tmp_path, b"x")
    with pytest.raises(TeamInputError, match="no folder"):
        write_private_file(tmp_path / "missing" / "out.csv", b"x")


# --- the command ----------------------------------------------------------------------------------


def run_tool(args: List[str], url: str, token: Optional[str] = TOKEN, configured: Optional[str] = TOKEN):
    """Run `python -m bot.team` with the database at url; token None means none presented."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEAM_TOKEN", "COMPANION_TEAM_TOKEN", "DATABASE_URL")}
    env.update(DATABASE_URL=url, SQLALCHEMY_SILENCE_UBER_WARNING="1")
    if configured is not None:
        env["TEAM_TOKEN"] = configured
    if token is not None:
        env["COMPANION_TEAM_TOKEN"] = token
    return subprocess.run([PYTHON, "-m", "bot.team", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_cli_refuses_without_the_team_token(database_url, tmp_path):
    """No token, a wrong token, or no TEAM_TOKEN configured: refused (exit 3) and no file written."""
    migrate(database_url)
    out = tmp_path / "out.csv"
    args = ["reflections", "export", "--from", "2026-11-01", "--to", "2026-11-30", "--out", str(out)]
    for token, configured, says in ((None, TOKEN, "No team token given"), ("guess", TOKEN, "not right"),
                                    (TOKEN, None, "TEAM_TOKEN is not set")):
        result = run_tool(args, database_url, token, configured)
        assert (result.returncode, result.stdout) == (3, ""), result.stderr
        assert says in result.stderr
    assert not out.exists()


def test_cli_export_writes_an_owner_only_csv_and_prints_counts_only(database_url, tmp_path):
    """The command writes the same CSV the functions make (mode 0600) and prints counts, never champions' text."""
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        ids = seed(make_session_factory(engine))
    finally:
        engine.dispose()
    out = tmp_path / "november.csv"
    result = run_tool(["reflections", "export", "--from", "2026-11-01", "--to", "30/11/2026", "--out", str(out)],
                      database_url)
    assert result.returncode == 0, result.stderr
    assert parse_csv(out.read_bytes()) == expected_november(ids)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "Wrote 5 shared reflections (2 named, 3 anonymous) and 7 pledges" in result.stdout
    assert "2 private reflections were left out." in result.stdout
    for text in ("Patients", "script", "Ana", "Ben", "chair", "SECRET"):
        assert text not in result.stdout + result.stderr
    leeds = run_tool(["reflections", "export", "--organisation", "leeds", "--session", "board", "--out", str(out)],
                     database_url)
    assert leeds.returncode == 0, leeds.stderr
    assert "Wrote 3 shared reflections (2 named, 1 anonymous) and 4 pledges" in leeds.stdout
    assert "1 private reflection was left out." in leeds.stdout
    bad = run_tool(["reflections", "export", "--from", "2026-11-30", "--to", "2026-11-01", "--out", str(out)],
                   database_url)
    assert bad.returncode == 2 and "is after the end date" in bad.stderr


def test_named_without_a_name_on_record_still_says_who(engine):
    """Champions often have no display name (Telegram and the web chat do not give one): the id says who."""
    from bot.models import Champion
    from bot.reflection_models import Reflection
    from bot.reflection_report import build_report

    sessions = make_session_factory(engine)
    with sessions() as session, session.begin():
        champion = Champion(channel="telegram", external_id="555555")
        session.add(champion)
        session.flush()
        session.add(Reflection(champion_id=champion.id, sharing="named", takeaway="Good", rating=4))
        champion_id = champion.id
    selection = fetch_shared(sessions, ReflectionFilter(), auth=TEAM)
    [row] = export_rows(selection)
    assert (row["name"], row["champion id"], row["channel"]) == ("", str(champion_id), "telegram")
    assert "555555" not in csv_bytes(selection).decode("utf-8-sig")
    assert build_report(sessions, ReflectionFilter(), auth=TEAM).takeaways[0].who == f"Champion {champion_id}"
