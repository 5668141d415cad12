"""Projects and answers in the app database (SQLite and PostgreSQL), the plan's content, Markdown and download."""
from __future__ import annotations

import os
from datetime import datetime

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from bot.db import alembic_config, make_engine, make_session_factory, migrate
from bot.models import Base, Champion
from bot.plan_models import Project, StepAnswer
from bot.plans import (
    PlanRepository,
    escape_markdown,
    filename_for,
    ladder_level,
    load_content,
    parse_content,
    plan_markdown,
)
from bot.sender_ids import split_sender

CONTENT = load_content()
@pytest.fixture
def repo(engine):
    """A PlanRepository on the migrated database."""
    return PlanRepository(make_session_factory(engine))


# --- migrations -------------------------------------------------------------------------------------


def test_migration_creates_the_plan_tables_matching_the_models(database_url):
    """upgrade head adds projects and step_answers exactly as bot.plan_models declares them."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    migrate(database_url)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert {"projects", "step_answers"} <= set(inspect(connection).get_table_names())
            head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_migration_goes_down_to_the_chat_tables_and_up_again(database_url):
    """Downgrading one revision removes only the plan tables."""
    from alembic import command

    migrate(database_url)
    command.downgrade(alembic_config(database_url), "0001")
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            assert "champions" in tables and not {"projects", "step_answers"} & tables
        migrate(database_url)
        with engine.connect() as connection:
            assert {"projects", "step_answers"} <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


# --- the repository ---------------------------------------------------------------------------------


def test_sender_ids_map_to_channel_and_id():
    """web-<uuid> is the web chat's champion; tg-<chat id> a Telegram one; anything else is "rasa"."""
    assert split_sender("web-3f2a-9c1e") == ("web", "3f2a-9c1e")
    assert split_sender("tg-12345") == ("telegram", "12345")
    assert split_sender("default") == ("rasa", "default")
    assert split_sender("-odd") == ("rasa", "-odd")


def test_champion_for_a_web_sender_is_the_web_chats_champion(repo):
    """The actions and the web chat agree on who is who."""
    from bot.repository import ChatRepository

    chat = ChatRepository(repo._sessions)
    web_champion = chat.get_or_create_champion("web", "abc-123")
    assert repo.champion_for("web-abc-123").id == web_champion.id
    assert repo.champion_for("web-abc-123").id == web_champion.id  # no duplicate


def test_answers_are_saved_at_once_and_read_back_from_a_new_session(repo, engine):
    """save_answer commits: another engine sees it straight away."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "Stroke clinic", "parts")
    repo.save_answer(project.id, "parts", "co_design", move_to="from_start")
    other = make_engine(str(engine.url) if engine.url.drivername != "sqlite" else engine.url.render_as_string(hide_password=False))
    try:
        fresh = PlanRepository(make_session_factory(other))
        assert fresh.answers(project.id)["parts"].value == "co_design"
        assert fresh.project(champion.id, project.id).current_question == "from_start"
    finally:
        other.dispose()


def test_an_answer_is_replaced_not_duplicated(repo, engine):
    """One row per question: answering again (or skipping) updates it."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "Stroke clinic", "parts")
    repo.save_answer(project.id, "aim", "first")
    repo.save_answer(project.id, "aim", "second")
    assert repo.answers(project.id)["aim"].value == "second"
    repo.save_answer(project.id, "aim", None, skipped=True)
    saved = repo.answers(project.id)["aim"]
    assert saved.skipped and saved.value is None
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM step_answers")).scalar() == 1


def test_the_database_refuses_a_second_row_for_the_same_question(repo, engine):
    """The unique (project, question) constraint holds in the database itself."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "Stroke clinic", "parts")
    session = make_session_factory(engine)()
    try:
        session.add_all(
            [
                StepAnswer(project_id=project.id, question_key="aim", value="a", skipped=False),
                StepAnswer(project_id=project.id, question_key="aim", value="b", skipped=False),
            ]
        )
        with pytest.raises(IntegrityError):
            session.commit()
    finally:
        session.close()


def test_long_and_unicode_answers_round_trip(repo):
    """2,000 characters of text with emoji and accents come back exactly."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "Café & clinic ✨", "parts")
    value = ("Zoë's answer 🙂 — «quotes» " * 100)[:2000]
    repo.save_answer(project.id, "aim", value)
    assert repo.answers(project.id)["aim"].value == value
    assert repo.project(champion.id, project.id).name == "Café & clinic ✨"


def test_projects_are_the_champions_own_most_recent_first(repo):
    """A champion sees only their projects, most recently worked on first; unfinished ones can be listed."""
    one = repo.champion_for("web-one")
    two = repo.champion_for("web-two")
    first = repo.create_project(one.id, "First", "parts")
    second = repo.create_project(one.id, "Second", "parts")
    theirs = repo.create_project(two.id, "Theirs", "parts")
    repo.save_answer(first.id, "parts", "co_design")  # first is now the latest worked on
    assert [p.name for p in repo.projects(one.id)] == ["First", "Second"]
    repo.move_to(second.id, None, completed=True)
    assert [p.name for p in repo.projects(one.id, unfinished_only=True)] == ["First"]
    assert repo.project(one.id, theirs.id) is None
    assert repo.project(one.id, "not a number") is None
    assert repo.project(two.id, theirs.id).name == "Theirs"


def test_completion_is_kept_when_an_answer_is_changed_later(repo):
    """completed_at is set once; moving back to edit keeps it."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "P", "parts")
    repo.save_answer(project.id, "good_practice", "talk", move_to=None, completed=True)
    done = repo.project(champion.id, project.id).completed_at
    assert done is not None
    repo.move_to(project.id, "aim")
    again = repo.project(champion.id, project.id)
    assert again.completed_at == done and again.current_question == "aim"


def test_project_names_and_about_are_limited(repo):
    """Names 1-80 characters, about at most 300."""
    champion = repo.champion_for("web-one")
    with pytest.raises(ValueError):
        repo.create_project(champion.id, "x" * 81, "parts")
    with pytest.raises(ValueError):
        repo.create_project(champion.id, "   ", "parts")
    project = repo.create_project(champion.id, "x" * 80, "parts")
    with pytest.raises(ValueError):
        repo.set_about(project.id, "y" * 301)
    repo.set_about(project.id, "y" * 300)
    assert repo.project(champion.id, project.id).about == "y" * 300


def test_deleting_a_champion_deletes_their_projects_and_answers(repo, engine):
    """Foreign keys cascade: nothing is left behind."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "P", "parts")
    repo.save_answer(project.id, "aim", "x")
    with make_session_factory(engine)() as session:
        session.delete(session.get(Champion, champion.id))
        session.commit()
        assert session.execute(select(Project)).first() is None
        assert session.execute(select(StepAnswer)).first() is None


def test_forget_answer(repo):
    """forget_answer removes one answer only."""
    champion = repo.champion_for("web-one")
    project = repo.create_project(champion.id, "P", "parts")
    repo.save_answer(project.id, "level", "descriptive")
    repo.save_answer(project.id, "aim", "x")
    repo.forget_answer(project.id, "level")
    assert set(repo.answers(project.id)) == {"aim"}


# --- the content -----------------------------------------------------------------------------------


def test_content_covers_the_five_steps_in_order_with_sources():
    """Five steps, each with an intro from the seed and questions; every key unique."""
    assert [s.number for s in CONTENT.steps] == [1, 2, 3, 4, 5]
    for step in CONTENT.steps:
        assert step.questions and step.intro.startswith(f"Step {step.number}:")
        assert step.source == "002_25b6f81bb41687fc.txt"
    keys = CONTENT.keys()
    assert len(keys) == len(set(keys))
    for needed in ("parts", "from_start", "equal_partner", "throughout", "level_agreed", "expectations", "aim",
                   "achieve", "evaluate_change", "outcomes", "skills", "support", "lead_meetings",
                   "review_aims", "you_said_we_did", "evaluation", "good_practice"):
        assert needed in keys


def test_messages_are_phone_sized():
    """Every message, prompt, intro and tip is at most about 80 words."""
    texts = list(CONTENT.messages.values()) + [q.prompt for q in CONTENT.questions]
    texts += [s.intro for s in CONTENT.steps] + [s.outro for s in CONTENT.steps if s.outro]
    texts += [o.tip for q in CONTENT.questions for o in q.options if o.tip]
    texts += [level.text for level in CONTENT.levels.values()]
    assert [t for t in texts if len(t.split()) > 80] == []


def test_skills_self_check_has_a_tip_for_each_of_the_five_skills():
    """Objective, empathic, respectful, outcome-focused, realistic: each has a practical tip."""
    skills = CONTENT.question("skills")
    for value in ("objective", "empathic", "respectful", "outcome_focused", "realistic"):
        assert skills.option(value).tip
    assert skills.option("none").exclusive


def test_step_teaching_matches_the_seed():
    """The intros and tips use the seed's own key phrases."""
    from pathlib import Path

    seeds = Path(os.environ.get("SEEDS_DIR", Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"))
    seed = seeds / "002_25b6f81bb41687fc.txt"
    if not seed.exists():
        pytest.skip("seed documents not found")
    source = " ".join(seed.read_text(encoding="utf-8").replace("\u2019", "'").split()).lower()
    for phrase in ("decide on the level of co-production", "be clear about your role", "get support",
                   "use your patient champion skills", "know how you've made a difference",
                   "hold people accountable", "ask for feedback if it is not forthcoming",
                   "give your apologies", "speak to the engagement team for advice",
                   "even the most committed staff might not fully understand co-production",
                   "it is still valuable regardless"):
        assert phrase in source
    everything = " ".join([s.intro for s in CONTENT.steps] + [o.tip or "" for q in CONTENT.questions for o in q.options]).lower()
    for phrase in ("hold people accountable", "give your apologies", "engagement team for advice",
                   "might not fully understand co-production", "still valuable regardless"):
        assert phrase in everything


def test_bad_content_is_refused():
    """A question of an unknown kind or without options is caught when loading."""
    import copy
    import yaml

    from bot.plans import CONTENT_FILE

    data = yaml.safe_load(CONTENT_FILE.read_text(encoding="utf-8"))
    broken = copy.deepcopy(data)
    broken["steps"][0]["questions"][0]["kind"] = "essay"
    with pytest.raises(ValueError):
        parse_content(broken)
    broken = copy.deepcopy(data)
    broken["steps"][0]["questions"][0]["options"] = []
    with pytest.raises(ValueError):
        parse_content(broken)


@pytest.mark.parametrize(
    "answers, level",
    [
        ({"from_start": "yes", "equal_partner": "yes", "throughout": "yes"}, "transformative"),
        ({"from_start": "yes", "equal_partner": "no", "throughout": "yes"}, "intermediate"),
        ({"from_start": "no", "equal_partner": "unsure", "throughout": "yes"}, "intermediate"),
        ({"from_start": "no", "equal_partner": "no", "throughout": "unsure"}, "descriptive"),
    ],
)
def test_ladder_level(answers, level):
    """All yes: transformative; none: descriptive; in between: intermediate, with reasons."""
    result, reasons = ladder_level(CONTENT, answers)
    assert result == level
    assert len(reasons) == sum(1 for v in answers.values() if v != "yes")


def test_ladder_needs_all_three_answers():
    """No level until the three ladder questions are answered."""
    assert ladder_level(CONTENT, {"from_start": "yes"}) is None


def test_navigation():
    """previous and next-open questions, wrapping round to anything left open."""
    keys = CONTENT.keys()
    assert CONTENT.previous_key(keys[0]) is None
    assert CONTENT.previous_key(keys[1]) == keys[0]
    assert CONTENT.next_open_key(keys[0], {keys[0]}) == keys[1]
    assert CONTENT.next_open_key(keys[-1], set(keys[1:])) == keys[0]
    assert CONTENT.next_open_key(keys[3], set(keys)) is None


# --- the Markdown plan ------------------------------------------------------------------------------


def _project(**kwargs) -> Project:
    """An unsaved project for rendering."""
    values = dict(id=7, champion_id=1, name="Stroke clinic", about="Easier to reach", current_question=None)
    values.update(kwargs)
    return Project(**values)


def test_markdown_plan_has_every_step_and_answer():
    """Headings per step, labels in bold, option titles, the level, skipped and open questions, tips."""
    from bot.plans import Answer

    answers = {
        "parts": Answer("parts", "co_design,co_evaluation", False),
        "from_start": Answer("from_start", "yes", False),
        "equal_partner": Answer("equal_partner", "yes", False),
        "throughout": Answer("throughout", "yes", False),
        "level": Answer("level", "transformative", False),
        "aim": Answer("aim", "Fewer missed appointments", False),
        "outcomes": Answer("outcomes", None, True),
        "skills": Answer("skills", "respectful", False),
    }
    markdown = plan_markdown(CONTENT, _project(), answers, datetime(2026, 3, 5))
    assert markdown.startswith("# Co-production plan: Stroke clinic\n")
    for step in CONTENT.steps:
        assert f"## Step {step.number}: {step.title}" in markdown
    assert "Co\\-design, Co\\-evaluation" in markdown or "Co-design, Co-evaluation" in markdown
    assert "**Level of co\\-production**" in markdown or "**Level of co-production**" in markdown
    assert "Transformative" in markdown
    assert "Fewer missed appointments" in markdown
    assert "(skipped)" in markdown and "(not answered yet)" in markdown
    assert "hold people accountable" in markdown
    assert "5 March 2026" in markdown


@pytest.mark.parametrize(
    "evil",
    [
        "# Heading",
        "Title\n=====",
        "[click](http://evil.example)",
        "<script>alert(1)</script>",
        "![x](http://evil.example/a.png)",
        "- item\n1. item\n+ item",
        "> quoted",
        "**bold** and _em_",
        "`code`",
        "<http://evil.example>",
    ],
)
def test_markdown_neutralises_what_champions_type(evil):
    """Answers can't add headings, links, images, HTML, lists, quotes, code or emphasis to the file."""
    markdown_lib = pytest.importorskip("markdown")
    html = markdown_lib.markdown(escape_markdown(evil))
    for tag in ("<h1", "<h2", "<a ", "<script", "<img", "<li", "<blockquote", "<strong", "<em", "<code"):
        assert tag not in html, html
    from bot.plans import Answer

    whole = plan_markdown(CONTENT, _project(name=evil, about=evil), {"aim": Answer("aim", evil, False)}, datetime(2026, 1, 1))
    html = markdown_lib.markdown(whole)
    assert html.count("<h1") == 1 and "<script" not in html and "<a " not in html and "<img" not in html


def test_escape_markdown_keeps_the_words():
    """Escaping only adds backslashes: the words are all still there."""
    escaped = escape_markdown("Co-design & <b>care</b> #1")
    assert escaped.replace("\\", "") == "Co-design & <b>care</b> #1"


def test_filename_is_safe():
    """Plain ASCII, no quotes or slashes, never empty."""
    assert filename_for(_project(name='Stroke "clinic" / ../etc')) == "plan-stroke-clinic-etc.md"
    assert filename_for(_project(name="✨✨")) == "plan-7.md"


# --- the download endpoint --------------------------------------------------------------------------


async def _client(settings):
    """A test client for an app with only the plan routes."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from bot.plan_download import add_plan_routes

    app = web.Application()
    add_plan_routes(app, settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
def plan_db(app_settings):
    """A migrated app database with one web champion's finished plan and another champion's project."""
    migrate(app_settings.database_url)
    engine = make_engine(app_settings.database_url)
    repo = PlanRepository(make_session_factory(engine))
    mine = repo.champion_for("web-me")
    project = repo.create_project(mine.id, "Stroke <clinic>", "parts")
    repo.save_answer(project.id, "aim", "[Fewer](http://x) missed appointments")
    other = repo.champion_for("web-other")
    theirs = repo.create_project(other.id, "Their secret project", "parts")
    yield {"mine": project.id, "theirs": theirs.id}
    engine.dispose()


async def test_download_gives_the_champions_plan_as_an_attachment(app_settings, plan_db):
    """200, Markdown, attachment with a safe file name, the answers escaped."""
    client = await _client(app_settings)
    try:
        response = await client.get("/api/plan.md", params={"sender_id": "me", "project": str(plan_db["mine"])})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/markdown")
        assert response.headers["Content-Disposition"] == 'attachment; filename="plan-stroke-clinic.md"'
        body = await response.text()
        assert "\\[Fewer\\](http" in body and "Stroke \\<clinic\\>" in body
    finally:
        await client.close()


@pytest.mark.parametrize(
    "params, status",
    [
        ({"sender_id": "me", "project": "theirs"}, 404),
        ({"sender_id": "other", "project": "mine"}, 404),
        ({"sender_id": "nobody", "project": "mine"}, 404),
        ({"sender_id": "me", "project": "999999"}, 404),
        ({"sender_id": "me", "project": "abc"}, 400),
        ({"sender_id": "../me", "project": "mine"}, 400),
        ({"project": "mine"}, 400),
    ],
)
async def test_download_refuses_other_peoples_plans(app_settings, plan_db, params, status):
    """Only the champion's own project: anything else is 404 (or 400 when malformed)."""
    params = {k: str(plan_db.get(v, v)) for k, v in params.items()}
    client = await _client(app_settings)
    try:
        response = await client.get("/api/plan.md", params=params)
        assert response.status == status
        assert "secret" not in await response.text()
    finally:
        await client.close()


async def test_download_route_fits_the_web_chat_app(app_settings, plan_db):
    """The web chat app serves plan downloads through its own database engine and middleware."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.web import build_app

    app = build_app(app_settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get("/api/plan.md", params={"sender_id": "me", "project": str(plan_db["mine"])})
        assert response.status == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        missing = await client.get("/api/plan.md", params={"sender_id": "me", "project": str(plan_db["theirs"])})
        assert missing.status == 404
    finally:
        await client.close()
