"""The engagement team's report on shared reflections: its figures from known data, and the HTML page."""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from bench.reflection_sample import SCRIPT_TAKEAWAY, seed
from bot.db import make_engine, make_session_factory, migrate
from bot.reflection_export import ReflectionFilter, Selection
from bot.reflection_report import build_report, render_html, report_data
from bot.team_auth import NotAuthorised, authorise

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
TOKEN = "s3cret-team-token"
TEAM = authorise(TOKEN, TOKEN)
NOVEMBER = ReflectionFilter.parse("2026-11-01", "2026-11-30")
MADE = datetime(2026, 12, 2, 10, 5, tzinfo=timezone.utc)


@pytest.fixture
def seeded(engine):
    """The known reflections (bench/reflection_sample.py) on SQLite and PostgreSQL."""
    sessions = make_session_factory(engine)
    seed(sessions)
    return sessions


class Page(HTMLParser):
    """What a reader gets from the page: tables by caption, chart descriptions, quotes, and any tags of concern."""

    def __init__(self, text: str) -> None:
        """Read the page."""
        super().__init__(convert_charrefs=True)
        self.tables: Dict[str, List[List[str]]] = {}
        self.descriptions: Dict[str, str] = {}
        self.quotes: List[str] = []
        self.whos: List[str] = []
        self.tags: List[str] = []
        self.attributes: List[tuple] = []
        self._capture: Optional[str] = None
        self._text: List[str] = []
        self._table: Optional[List[List[str]]] = None
        self._desc_id: Optional[str] = None
        self._caption = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        """Note the tag; start collecting text where it matters."""
        self.tags.append(tag)
        self.attributes.extend(attrs)
        attrs = dict(attrs)
        if tag == "table":
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("th", "td", "caption", "desc", "blockquote") or (tag == "p" and "who" in (attrs.get("class") or "")):
            self._capture, self._text = tag if tag != "p" else "who", []
            self._desc_id = attrs.get("id")

    def handle_endtag(self, tag):
        """Finish a cell, caption, description or quote."""
        text = "".join(self._text).strip()
        if self._capture and tag == ("p" if self._capture == "who" else self._capture):
            if tag in ("th", "td") and self._table is not None:
                self._table[-1].append(text)
            elif tag == "caption":
                self._caption = text
            elif tag == "desc":
                self.descriptions[self._desc_id] = text
            elif tag == "blockquote":
                self.quotes.append(text)
            elif tag == "p":
                self.whos.append(text)
            self._capture = None
        if tag == "table" and self._table is not None:
            self.tables[self._caption] = self._table
            self._table = None

    def handle_data(self, data):
        """Collect text inside what is being captured."""
        if self._capture:
            self._text.append(data)


def november(sessions) -> Page:
    """November's report page, read."""
    return Page(render_html(build_report(sessions, NOVEMBER, auth=TEAM, now=MADE)))


# --- the figures ----------------------------------------------------------------------------------


def test_report_figures_from_known_data(seeded):
    """Counts, rating distribution and average, pledge statuses and sessions, all from shared reflections only."""
    data = build_report(seeded, NOVEMBER, auth=TEAM, now=MADE)
    assert (data.reflections, data.anonymous, data.named, data.finished, data.private_left_out) == (5, 3, 2, 4, 2)
    assert data.rating_counts == {1: 0, 2: 1, 3: 1, 4: 0, 5: 2}
    assert (data.rated, data.unrated) == (4, 1)
    assert data.average_rating == pytest.approx(3.75)
    assert data.pledges == 7
    assert data.pledge_status_counts == {"done": 3, "in_progress": 1, "need_help": 1, "open": 1, "let_go": 1}
    assert list(data.pledge_status_counts) == ["done", "in_progress", "need_help", "open", "let_go"]
    assert data.sessions == (("Board meeting", 3), ("Stroke pathway", 2))  # "board meeting " counted with them
    assert [(q.who, q.text) for q in data.takeaways] == [
        ("Ana Patel", "Patients' stories changed the plan."),
        ("Anonymous", SCRIPT_TAKEAWAY),
        ("Anonymous", "Listening works"),
        ("Anonymous", "+ more time for questions"),
        ("Ben O'Neil", "@mention the carers"),
    ]
    assert [(q.who, q.text) for q in data.improvements] == [
        ("Ana Patel", "Papers a week earlier"), ("Anonymous", "Less jargon,\nplease")]


def test_report_for_one_session_and_organisation(seeded):
    """The same figures for Leeds's board meetings over all dates (December's included)."""
    data = build_report(seeded, ReflectionFilter.parse(session="board", organisation="leeds"), auth=TEAM)
    assert (data.reflections, data.named, data.anonymous, data.private_left_out) == (3, 2, 1, 1)
    assert data.rating_counts == {1: 0, 2: 0, 3: 0, 4: 1, 5: 2}
    assert data.average_rating == pytest.approx(14 / 3)
    assert data.pledge_status_counts == {"done": 3, "in_progress": 1, "need_help": 0, "open": 0, "let_go": 0}


def test_report_with_nothing_shared():
    """No shared reflections: zeros, no average, and a page that says so."""
    data = report_data(Selection(filters=NOVEMBER, shared=(), private_left_out=1), now=MADE)
    assert (data.reflections, data.rated, data.average_rating, data.pledges) == (0, 0, None, 0)
    page = render_html(data)
    assert "No shared reflections match" in page and "1 private reflection was left out" in page
    assert "<svg" not in page


def test_only_the_team_can_build_a_report(seeded):
    """No team pass, no report."""
    with pytest.raises(NotAuthorised):
        build_report(seeded, NOVEMBER, auth=None)


# --- the page -------------------------------------------------------------------------------------


def test_page_tables_and_charts_show_the_figures(seeded):
    """Real tables and chart descriptions carry the same numbers as the data."""
    page = november(seeded)
    assert page.tables["Ratings"] == [
        ["Rating", "Reflections", "Share"],
        ["1 (lowest)", "0", "0%"], ["2", "1", "25%"], ["3", "1", "25%"], ["4", "0", "0%"],
        ["5 (highest)", "2", "50%"],
        ["All ratings", "4", "100%"],
    ]
    assert page.tables["Pledges by status"] == [
        ["Status", "Pledges", "Share"],
        ["done", "3", "43%"], ["in progress", "1", "14%"], ["needs help", "1", "14%"],
        ["open (not checked yet)", "1", "14%"], ["let go", "1", "14%"],
        ["All pledges", "7", "100%"],
    ]
    assert page.tables["Sessions"] == [["Session", "Reflections"], ["Board meeting", "3"], ["Stroke pathway", "2"]]
    assert page.descriptions["rating-chart-desc"] == "1 (lowest): 0; 2: 1; 3: 1; 4: 0; 5 (highest): 2"
    assert page.descriptions["pledge-chart-desc"] == (
        "done: 3; in progress: 1; needs help: 1; open (not checked yet): 1; let go: 1")


def test_page_quotes_in_full_with_names_only_when_shared(seeded):
    """Take-aways in full; named ones under the name, anonymous ones under "Anonymous"; private ones absent."""
    sessions = seeded
    text = render_html(build_report(sessions, NOVEMBER, auth=TEAM, now=MADE))
    page = Page(text)
    assert page.quotes[:5] == ["Patients' stories changed the plan.", SCRIPT_TAKEAWAY, "Listening works",
                               "+ more time for questions", "@mention the carers"]
    assert page.quotes[5:] == ["Papers a week earlier", "Less jargon,\nplease"]
    assert page.whos[:5] == [
        "Ana Patel · Board meeting · 3 Nov 2026", "Anonymous · board meeting · 5 Nov 2026",
        "Anonymous · Board meeting · 12 Nov 2026", "Anonymous · Stroke pathway · 20 Nov 2026",
        "Ben O'Neil · Stroke pathway · 30 Nov 2026",
    ]
    for secret in ("SECRET", "UNANSWERED", "ERASED", "Dev Shah", "Cat Jones", "111111", "uuid-ben", "333333"):
        assert secret not in text
    assert "2 private reflections were left out and not counted" in text
    assert "Made 2 Dec 2026, 10:05 (London time)" in text


def test_page_escapes_markup_and_is_self_contained(seeded):
    """A <script> take-away is shown as text; the page has no scripts, links or outside assets, and forbids them."""
    text = render_html(build_report(seeded, NOVEMBER, auth=TEAM, now=MADE))
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; the chair listened" in text
    page = Page(text)
    assert not {"script", "img", "link", "iframe", "object", "a"} & set(page.tags)
    assert not [name for name, _ in page.attributes if name in ("src", "href") or name.startswith("on")]
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)  # the SVG namespace is the only address
    assert '<meta name="viewport"' in text and '<html lang="en-GB">' in text
    assert text.count("<figcaption>") == 2 and text.count('role="img"') == 2


def test_hostile_names_and_session_labels_are_escaped(engine):
    """Markup in a display name, a session label and a pledge does not reach the page as markup."""
    from bot.models import Champion
    from bot.reflection_models import Pledge, Reflection

    sessions = make_session_factory(engine)
    with sessions() as session, session.begin():
        champion = Champion(channel="web", external_id="x", display_name='<img src=x onerror="alert(1)">')
        session.add(champion)
        session.flush()
        reflection = Reflection(champion_id=champion.id, sharing="named", session_label="<b>Board</b>",
                                takeaway="fine", rating=4, created_at=MADE)
        session.add(reflection)
        session.flush()
        session.add(Pledge(reflection_id=reflection.id, champion_id=champion.id, text="<i>x</i>", status="open"))
    text = render_html(build_report(sessions, ReflectionFilter(), auth=TEAM, now=MADE))
    assert "<img" not in text and "<b>" not in text and "onerror=\"" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; · &lt;b&gt;Board&lt;/b&gt;" in text


# --- the command ----------------------------------------------------------------------------------


def run_tool(args: List[str], url: str, token: Optional[str] = TOKEN):
    """Run `python -m bot.team` on the database at url with TEAM_TOKEN configured; token None: none presented."""
    env = {k: v for k, v in os.environ.items() if k not in ("TEAM_TOKEN", "COMPANION_TEAM_TOKEN", "DATABASE_URL")}
    env.update(DATABASE_URL=url, TEAM_TOKEN=TOKEN, SQLALCHEMY_SILENCE_UBER_WARNING="1")
    if token is not None:
        env["COMPANION_TEAM_TOKEN"] = token
    return subprocess.run([PYTHON, "-m", "bot.team", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_cli_report(database_url, tmp_path):
    """Refused without the token (no file); with it, an owner-only page and counts on screen, no champion text."""
    migrate(database_url)
    engine = make_engine(database_url)
    try:
        seed(make_session_factory(engine))
    finally:
        engine.dispose()
    out = tmp_path / "report.html"
    args = ["reflections", "report", "--from", "1/11/2026", "--to", "2026-11-30", "--out", str(out)]
    for token in (None, "guess"):
        refused = run_tool(args, database_url, token)
        assert (refused.returncode, refused.stdout) == (3, "") and "Refused" in refused.stderr
    assert not out.exists()
    result = run_tool(args, database_url)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert f"Wrote the report on 5 shared reflections to {out}" in result.stdout
    assert "Average rating 3.8, 7 pledges. 2 private reflections were left out." in result.stdout
    for text in ("Patients", "script", "Ana", "Ben", "chair"):
        assert text not in result.stdout + result.stderr
    page = Page(out.read_text(encoding="utf-8"))
    assert page.tables["Ratings"][-1] == ["All ratings", "4", "100%"]
    stroke = run_tool(["reflections", "report", "--session", "STROKE", "--out", str(out)], database_url)
    assert stroke.returncode == 0, stroke.stderr
    assert "Wrote the report on 2 shared reflections" in stroke.stdout and "1 private reflection was left out" in stroke.stdout


def test_every_pledge_status_has_a_place_and_a_label():
    """A status added to the model later cannot drop out of the report or the CSV unnoticed."""
    from bot.reflection_export import STATUS_LABELS
    from bot.reflection_models import PLEDGE_STATUSES
    from bot.reflection_report import STATUS_ORDER

    assert sorted(STATUS_ORDER) == sorted(PLEDGE_STATUSES) == sorted(STATUS_LABELS)
