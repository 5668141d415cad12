"""The five steps plan: its content (knowledge/five_steps.yml), storage of projects and answers, and the plan as text."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.content import load_yaml
from bot.models import Champion, utcnow
from bot.plan_models import PROJECT_ABOUT_MAX, PROJECT_NAME_MAX, Project, StepAnswer
from bot.repository import ChatRepository
from bot.sender_ids import split_sender

ROOT = Path(__file__).resolve().parent.parent
CONTENT_FILE = ROOT / "knowledge" / "five_steps.yml"

KINDS = ("text", "choice", "multi", "yes_no")
# Where a question's answer is kept for choice questions: option values joined by this.
VALUE_SEPARATOR = ","
_KEEP = object()


# --- content ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One answer a choice question offers as a button."""

    value: str
    title: str
    aliases: Tuple[str, ...] = ()
    tip: Optional[str] = None
    exclusive: bool = False


@dataclass(frozen=True)
class Question:
    """One question of one step."""

    key: str
    step: int
    kind: str
    prompt: str
    label: str
    short: str
    options: Tuple[Option, ...] = ()
    allow_text: bool = False

    def option(self, value: str) -> Optional[Option]:
        """The option with this value, or None."""
        return next((o for o in self.options if o.value == value), None)


@dataclass(frozen=True)
class Step:
    """One of the five steps to success: its teaching message and its questions."""

    number: int
    title: str
    intro: str
    outro: Optional[str]
    source: Any
    questions: Tuple[Question, ...] = ()


@dataclass(frozen=True)
class Level:
    """A rung of the co-production ladder as the walk-through explains it."""

    key: str
    title: str
    text: str


@dataclass(frozen=True)
class FiveSteps:
    """Everything the walk-through says and asks, in order, read from knowledge/five_steps.yml."""

    steps: Tuple[Step, ...]
    messages: Mapping[str, str]
    buttons: Mapping[str, Mapping[str, str]]
    phrases: Mapping[str, Tuple[str, ...]]
    interruptions: Mapping[str, Any]
    ladder: Mapping[str, Any]
    levels: Mapping[str, Level]
    limits: Mapping[str, int]
    source: Any
    command_names: Mapping[str, str] = field(default_factory=dict)
    questions: Tuple[Question, ...] = field(default=())

    # -- looking things up --

    def question(self, key: Optional[str]) -> Optional[Question]:
        """The question with this key, or None."""
        return next((q for q in self.questions if q.key == key), None)

    def step(self, number: int) -> Optional[Step]:
        """Step number 1-5, or None."""
        return next((s for s in self.steps if s.number == number), None)

    def keys(self) -> List[str]:
        """Every question key, in the order they are asked."""
        return [q.key for q in self.questions]

    def first_key(self) -> str:
        """The key of the very first question."""
        return self.questions[0].key

    def previous_key(self, key: str) -> Optional[str]:
        """The question asked before key, or None at the start."""
        keys = self.keys()
        index = keys.index(key) if key in keys else 0
        return keys[index - 1] if index > 0 else None

    def next_open_key(self, after: Optional[str], dealt_with: Set[str]) -> Optional[str]:
        """The first question after `after` not yet answered or skipped, wrapping round; None if all are."""
        keys = self.keys()
        start = keys.index(after) + 1 if after in keys else 0
        for key in keys[start:] + keys[:start]:
            if key not in dealt_with:
                return key
        return None

    def is_first_in_step(self, key: str) -> bool:
        """True for the first question of its step."""
        question = self.question(key)
        return question is not None and self.step(question.step).questions[0].key == key

    def is_last_in_step(self, key: str) -> bool:
        """True for the last question of its step."""
        question = self.question(key)
        return question is not None and self.step(question.step).questions[-1].key == key

    def message(self, key: str, /, **values: Any) -> str:
        """The wording called key, with {placeholders} filled (unknown ones are left as they are)."""
        return fill(self.messages[key], **values)

    def button(self, key: str, /, **values: Any) -> Dict[str, str]:
        """A button as Rasa sends it: {"title": ..., "payload": ...}."""
        spec = self.buttons[key]
        return {"title": fill(spec["title"], **values), "payload": fill(spec["payload"], **values)}

    def display(self, question: Question, value: Optional[str]) -> str:
        """An answer as the champion reads it: option titles for choices, the text for free text."""
        if value is None:
            return ""
        if question.kind == "text":
            return value
        if question.kind == "multi":
            parts = [question.option(part) for part in value.split(VALUE_SEPARATOR) if part]
            return ", ".join(option.title for option in parts if option)
        option = question.option(value)
        return option.title if option else value  # free text typed for a choice that allows it

    def selected(self, question: Question, value: Optional[str]) -> List[str]:
        """The option values stored in value for a choice question."""
        if not value or question.kind == "text":
            return []
        return [part for part in value.split(VALUE_SEPARATOR) if question.option(part)]


class _SafeValues(dict):
    """Leaves unknown {placeholders} untouched instead of failing."""

    def __missing__(self, key: str) -> str:
        """Put the placeholder back as it was."""
        return "{" + key + "}"


def fill(template: str, /, **values: Any) -> str:
    """Fill {name} placeholders in template; braces in the values themselves are never interpreted."""
    return string.Formatter().vformat(template, (), _SafeValues(values))


def _options(raw: Iterable[Mapping[str, Any]]) -> Tuple[Option, ...]:
    """Options from their YAML form."""
    return tuple(
        Option(
            value=str(item["value"]),
            title=str(item["title"]),
            aliases=tuple(str(a) for a in item.get("aliases") or ()),
            tip=item.get("tip"),
            exclusive=bool(item.get("exclusive", False)),
        )
        for item in raw
    )


def parse_content(data: Mapping[str, Any]) -> FiveSteps:
    """Build FiveSteps from the parsed YAML, checking what the walk-through relies on."""
    yes_no = _options(data.get("yes_no_options") or ())
    steps: List[Step] = []
    questions: List[Question] = []
    seen: Set[str] = set()
    for raw_step in data["steps"]:
        number = int(raw_step["number"])
        step_questions = []
        for raw in raw_step["questions"]:
            kind = raw["kind"]
            if kind not in KINDS:
                raise ValueError(f"question {raw.get('key')!r}: unknown kind {kind!r}")
            key = str(raw["key"])
            if key in seen or VALUE_SEPARATOR in key:
                raise ValueError(f"question key {key!r} is repeated or malformed")
            seen.add(key)
            options = _options(raw.get("options") or ()) or (yes_no if kind == "yes_no" else ())
            if kind != "text" and not options:
                raise ValueError(f"question {key!r} needs options")
            question = Question(
                key=key,
                step=number,
                kind=kind,
                prompt=str(raw["prompt"]).strip(),
                label=str(raw["label"]),
                short=str(raw.get("short") or raw["label"]),
                options=options,
                allow_text=bool(raw.get("allow_text", False)),
            )
            step_questions.append(question)
            questions.append(question)
        steps.append(
            Step(
                number=number,
                title=str(raw_step["title"]),
                intro=str(raw_step["intro"]["text"]).strip(),
                outro=(str(raw_step["outro"]["text"]).strip() if raw_step.get("outro") else None),
                source=raw_step["intro"].get("source"),
                questions=tuple(step_questions),
            )
        )
    ladder = dict(data["ladder"])
    for key in ladder["questions"]:
        if key not in seen:
            raise ValueError(f"ladder question {key!r} is not a question")
    levels = {
        key: Level(key=key, title=str(spec["title"]), text=str(spec["text"]).strip())
        for key, spec in ladder["levels"].items()
    }
    return FiveSteps(
        steps=tuple(steps),
        messages={k: str(v).strip() for k, v in data["messages"].items()},
        buttons=data["buttons"],
        phrases={k: tuple(str(p) for p in v) for k, v in data["phrases"].items()},
        interruptions=data.get("interruptions") or {},
        ladder=ladder,
        levels=levels,
        limits={k: int(v) for k, v in data["limits"].items()},
        source=data.get("source"),
        command_names=dict(data.get("command_names") or {}),
        questions=tuple(questions),
    )


def load_content(path: Path = CONTENT_FILE) -> FiveSteps:
    """The walk-through content from path, read once and then cached."""
    return load_yaml(path, parse_content)


# --- the ladder ---------------------------------------------------------------------------------


def ladder_level(content: FiveSteps, answers: Mapping[str, Optional[str]]) -> Optional[Tuple[str, List[str]]]:
    """(level key, reasons) from the three ladder answers, or None until all three are answered.

    All three "yes" (from the start, an equal partner, throughout) is transformative: true
    co-production. None of them is descriptive. Anything in between is intermediate. The
    reasons are the ladder's short phrases for each answer that was not "yes" ("no" or
    "not sure"); a skipped question counts as "not sure".
    """
    keys = list(content.ladder["questions"])
    values = [answers.get(key) for key in keys]
    if any(value is None for value in values):
        return None
    missing = [
        content.ladder["missing"][key].get(value) or content.ladder["missing"][key]["no"]
        for key, value in zip(keys, values)
        if value != "yes"
    ]
    if not missing:
        return "transformative", []
    if len(missing) == len(keys):
        return "descriptive", missing
    return "intermediate", missing


def ladder_from_answers(
    content: FiveSteps, answers: Mapping[str, "Answer"]
) -> Optional[Tuple[str, List[str]]]:
    """The ladder level from saved answers: None until all three are dealt with, or if all were skipped."""
    keys = list(content.ladder["questions"])
    saved = [answers.get(key) for key in keys]
    if any(answer is None for answer in saved) or all(answer.skipped for answer in saved):
        return None
    return ladder_level(
        content, {a.key: ("unsure" if a.skipped else a.value) for a in saved}
    )


def join_reasons(reasons: Sequence[str], conjunction: str = "and") -> str:
    """"a", "a and b", "a, b and c"."""
    if len(reasons) <= 1:
        return "".join(reasons)
    return ", ".join(reasons[:-1]) + f" {conjunction} " + reasons[-1]


# --- storage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A saved answer, detached from the database session."""

    key: str
    value: Optional[str]
    skipped: bool


class PlanRepository:
    """Projects and their answers in the app database, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory
        self._chat = ChatRepository(session_factory)

    # champions

    def champion_for(self, sender_id: str) -> Champion:
        """The champion behind a Rasa sender id, created on first contact."""
        channel, external_id = split_sender(sender_id)
        return self._chat.get_or_create_champion(channel, external_id[:128])

    def find_champion(self, channel: str, external_id: str) -> Optional[Champion]:
        """The champion known on channel by external_id, or None."""
        return self._chat.find_champion(channel, external_id)

    # projects

    def create_project(self, champion_id: int, name: str, first_question: str) -> Project:
        """A new project called name, positioned at first_question."""
        name = name.strip()
        if not name or len(name) > PROJECT_NAME_MAX:
            raise ValueError(f"a project name has 1 to {PROJECT_NAME_MAX} characters")
        now = utcnow()
        with self._sessions() as session:
            project = Project(
                champion_id=champion_id,
                name=name,
                about="",
                current_question=first_question,
                created_at=now,
                updated_at=now,
            )
            session.add(project)
            session.commit()
            return project

    def set_about(self, project_id: int, about: str) -> None:
        """Save the one line on what the project is about."""
        about = about.strip()
        if len(about) > PROJECT_ABOUT_MAX:
            raise ValueError(f"'about' has at most {PROJECT_ABOUT_MAX} characters")
        with self._sessions() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise LookupError(f"no project {project_id}")
            project.about = about
            project.updated_at = utcnow()
            session.commit()

    def projects(self, champion_id: int, unfinished_only: bool = False) -> List[Project]:
        """The champion's projects, most recently worked on first."""
        query = select(Project).where(Project.champion_id == champion_id)
        if unfinished_only:
            query = query.where(Project.completed_at.is_(None))
        query = query.order_by(Project.updated_at.desc(), Project.id.desc())
        with self._sessions() as session:
            return list(session.execute(query).scalars().all())

    def project(self, champion_id: int, project_id: Any) -> Optional[Project]:
        """The champion's project with this id, or None (also for someone else's project)."""
        try:
            project_id = int(project_id)
        except (TypeError, ValueError):
            return None
        if not 0 < project_id < 2**31:  # no such row (a huge number would overflow the database's integer)
            return None
        with self._sessions() as session:
            project = session.get(Project, project_id)
            if project is None or project.champion_id != champion_id:
                return None
            return project

    def move_to(self, project_id: int, question_key: Optional[str], completed: bool = False) -> None:
        """Set the question to ask next (None: all done); completed also marks the project complete."""
        now = utcnow()
        with self._sessions() as session:
            project = session.get(Project, project_id)
            if project is None:
                raise LookupError(f"no project {project_id}")
            project.current_question = question_key
            if completed and project.completed_at is None:
                project.completed_at = now
            project.updated_at = now
            session.commit()

    # answers

    def answers(self, project_id: int) -> Dict[str, Answer]:
        """Every saved answer of the project, by question key."""
        with self._sessions() as session:
            rows = session.execute(
                select(StepAnswer).where(StepAnswer.project_id == project_id)
            ).scalars().all()
            return {row.question_key: Answer(row.question_key, row.value, row.skipped) for row in rows}

    def save_answer(
        self,
        project_id: int,
        question_key: str,
        value: Optional[str],
        skipped: bool = False,
        move_to: Any = _KEEP,
        completed: bool = False,
    ) -> None:
        """Save (commit) one answer at once; optionally move the project on to the next question."""
        for attempt in range(2):
            now = utcnow()
            with self._sessions() as session:
                project = session.get(Project, project_id)
                if project is None:
                    raise LookupError(f"no project {project_id}")
                row = session.execute(
                    select(StepAnswer).where(
                        StepAnswer.project_id == project_id,
                        StepAnswer.question_key == question_key,
                    )
                ).scalar_one_or_none()
                if row is None:
                    row = StepAnswer(project_id=project_id, question_key=question_key)
                    session.add(row)
                row.value = None if skipped else value
                row.skipped = skipped
                row.updated_at = now
                if move_to is not _KEEP:
                    project.current_question = move_to
                if completed and project.completed_at is None:
                    project.completed_at = now
                project.updated_at = now
                try:
                    session.commit()
                    return
                except IntegrityError:
                    # The same answer was inserted by a parallel request: update that row instead.
                    session.rollback()
                    if attempt:
                        raise

    def forget_answer(self, project_id: int, question_key: str) -> None:
        """Remove one saved answer (used for the derived ladder level)."""
        with self._sessions() as session:
            session.execute(
                delete(StepAnswer).where(
                    StepAnswer.project_id == project_id, StepAnswer.question_key == question_key
                )
            )
            session.commit()


# --- the plan as text ---------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """text cut to limit characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,.;:") + "…"


def plan_lines(
    content: FiveSteps, answers: Mapping[str, Answer], step: Step, limit: Optional[int] = None
) -> List[Tuple[str, str]]:
    """(label, answer as read) for each question of the step, plus the ladder level after Step 1's check."""
    lines: List[Tuple[str, str]] = []
    level_after = content.ladder["questions"][-1]
    for question in step.questions:
        answer = answers.get(question.key)
        if answer is None:
            shown = content.message("plan_not_yet")
        elif answer.skipped:
            shown = content.message("plan_skipped")
        else:
            shown = content.display(question, answer.value)
            if limit:
                shown = shorten(shown, limit)
        lines.append((question.label, shown))
        if question.key == level_after:
            level = answers.get(content.ladder["answer_key"])
            if level is not None and level.value in content.levels:
                lines.append((content.ladder["label"], content.levels[level.value].title))
    return lines


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~!])")
_MD_LINE_START = re.compile(r"^(\s*)([-+=>]|\d+[.)])")


def escape_markdown(text: str) -> str:
    """Champion's text made inert in Markdown: no headings, links, HTML, emphasis, tables or lists."""
    lines = []
    for line in str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = "".join(ch for ch in line if ch == "\t" or ch.isprintable())
        line = _MD_SPECIAL.sub(r"\\\1", line)
        line = _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), line)
        lines.append(line.strip())
    return "  \n".join(line for line in lines if line)


def plan_markdown(
    content: FiveSteps, project: Project, answers: Mapping[str, Answer], generated: datetime
) -> str:
    """The whole plan as a Markdown document a champion can send to their project lead."""
    out = [
        "# " + fill(content.messages["md_title"], name=escape_markdown(project.name)),
        "",
    ]
    if project.about:
        out += [fill(content.messages["md_about"], about=escape_markdown(project.about)), ""]
    out += [fill(content.messages["md_generated"], date=generated.strftime("%d %B %Y").lstrip("0")), ""]
    for step in content.steps:
        out += [
            "## " + fill(content.messages["md_step"], number=step.number, title=step.title),
            "",
        ]
        for label, shown in plan_lines(content, answers, step):
            out.append(f"**{escape_markdown(label)}**  ")
            out.append(escape_markdown(shown) or "")
            out.append("")
        tips = step_tips(content, answers, step)
        if tips:
            out.append(f"**{escape_markdown(content.messages['md_tips'])}**")
            out.append("")
            out += [f"- {escape_markdown(tip)}" for tip in tips]
            out.append("")
    out += ["---", "", content.messages["md_footer"], ""]
    return "\n".join(out)


def step_tips(content: FiveSteps, answers: Mapping[str, Answer], step: Step) -> List[str]:
    """The tips that go with the options the champion chose in this step (e.g. Step 3's skills)."""
    tips = []
    for question in step.questions:
        answer = answers.get(question.key)
        if question.kind == "text" or answer is None or answer.skipped:
            continue
        for value in content.selected(question, answer.value):
            option = question.option(value)
            if option is not None and option.tip:
                tips.append(option.tip.strip())
    return tips


def filename_for(project: Project) -> str:
    """A safe ASCII file name for the project's plan, e.g. "plan-stroke-clinic.md"."""
    slug = re.sub(r"[^a-z0-9]+", "-", project.name.lower()).strip("-")[:40].strip("-")
    return f"plan-{slug or project.id}.md"
