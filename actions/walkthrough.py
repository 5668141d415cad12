"""The five steps walk-through: a guided, saved conversation that turns the five steps into the champion's plan.

Every message typed while `five_steps_form` runs reaches `validate_five_steps_form`,
which saves answers in the app database at once (bot/plans.py) and handles stop,
skip, back, changing an answer, knowledge questions, crisis messages and answers it
can't use. `action_ask_fs_answer` asks whatever comes next. The wording is in
knowledge/five_steps.yml; the position in each plan is in the database, so a walk
continues at the same question after a restart.
"""
from __future__ import annotations

import importlib
import logging
import re
from typing import Any, Dict, List, Optional, Text, Tuple
from urllib.parse import urlencode

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from sqlalchemy.exc import SQLAlchemyError
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.db import get_sessions
from actions.forms import (
    Message, Outcome, get_state, normalise, read_message, readable, say_trouble, sender_of, setting_action,
)
from bot.plan_models import Project
from bot.plans import (
    Answer,
    FiveSteps,
    PlanRepository,
    Question,
    join_reasons,
    ladder_from_answers,
    load_content,
    plan_lines,
    shorten,
)
from bot.sender_ids import split_sender

log = logging.getLogger(__name__)

ANSWER_SLOT = "fs_answer"
STATE_SLOT = "fs_state"
REQUESTED_SLOT = "requested_slot"

# Stages of the walk within one conversation (kept in the fs_state slot).
CHOOSE, NAME, ABOUT, WALK, PICK_STEP, PICK_QUESTION, MENU = (
    "choose", "name", "about", "walk", "pick_step", "pick_question", "menu",
)
# Why the form stopped (read by action_five_steps_end).
STOP_PAUSE, STOP_CRISIS, STOP_DONE, STOP_SHOW_PLAN, STOP_TROUBLE = "pause", "crisis", "done", "show_plan", "trouble"

# Intents that steer the walk while it runs, and the command each one means.
COMMAND_INTENTS = {
    "pause_walkthrough": "pause",
    "goodbye": "pause",
    "skip_question": "skip",
    "go_back": "back",
    "show_plan": "show_plan",
    "new_project": "new_project",
    "edit_answer": "edit",
    "continue_walkthrough": "continue",
    "start_walkthrough": "start",
    "tell_me_more": "more",
}
# The button that carries out each command (knowledge/five_steps.yml `buttons`).
COMMAND_BUTTONS = {
    "pause": "stop",
    "skip": "skip",
    "back": "back",
    "show_plan": "show_plan",
    "new_project": "new_project",
    "edit": "change_answer",
}
# Commands recognised from an exact phrase in knowledge/five_steps.yml `phrases`.
PHRASE_COMMANDS = ("pause", "skip", "back")
# Longer messages than this that only NLU calls a command are checked with the champion first...
SHORT_COMMAND_WORDS = 3
# ...unless the command loses nothing typed (it only carries on or asks again).
HARMLESS_COMMANDS = ("continue", "start", "more", "new_project")
CRISIS_INTENT = "crisis"
CRISIS_RESPONSE = "utter_crisis"
GLOSSARY_INTENT = "ask_acronym"
TELL_ME_MORE_ACTION = "action_tell_me_more"
DOWNLOAD_PATH = "/api/plan.md"
DOWNLOAD_CHANNEL = "web"
MAX_PROJECT_BUTTONS = 5


# --- the database (opened on first use by actions.db) -----------------------------------------------------------


def get_repository() -> PlanRepository:
    """The plan repository on the action server's app database (actions.db)."""
    return PlanRepository(get_sessions())


def content() -> FiveSteps:
    """The walk-through's questions and wording."""
    return load_content()


# --- reading a message ---------------------------------------------------------------------------

_SPLIT_CHOICES = re.compile(r"\s*(?:,|;|/|&|\+|\n|\band\b|\bor\b)\s*", re.IGNORECASE)
_STEP_NUMBER = re.compile(r"\bstep\s*([1-5])\b|^\s*([1-5])\s*$", re.IGNORECASE)


# --- the walk ------------------------------------------------------------------------------------


class Walk:
    """One champion's walk-through: their projects, the current stage and what to say next."""

    def __init__(
        self,
        sender_id: str,
        state: Dict[str, Any],
        domain: Optional[DomainDict] = None,
        repository: Optional[PlanRepository] = None,
    ) -> None:
        """Look up (or create) the champion behind sender_id."""
        self.repo = repository or get_repository()
        self.content = content()
        self.sender_id = sender_id
        self.champion = self.repo.champion_for(sender_id)
        self.state = dict(state)
        self.responses = set((domain or {}).get("responses") or {})

    # -- projects --

    def project(self) -> Optional[Project]:
        """The project in the state, if it is still this champion's."""
        return self.repo.project(self.champion.id, self.state.get("project"))

    def unfinished(self) -> List[Project]:
        """This champion's unfinished projects, most recent first."""
        return self.repo.projects(self.champion.id, unfinished_only=True)

    def latest(self) -> Optional[Project]:
        """This champion's most recently worked-on project."""
        projects = self.repo.projects(self.champion.id)
        return projects[0] if projects else None

    def answers(self, project: Project) -> Dict[str, Answer]:
        """The project's saved answers."""
        return self.repo.answers(project.id)

    def go(self, stage: str, project: Optional[Project] = None, mode: Optional[str] = None) -> None:
        """Move to stage (with project and the way to ask next)."""
        self.state.update(stage=stage, mode=mode, pending=None, stop=None)
        if project is not None:
            self.state["project"] = project.id
        if stage not in (PICK_QUESTION,):
            self.state.pop("step", None)

    def resume(self, project: Optional[Project] = None) -> None:
        """Pick up where the champion left off: a chosen, current or latest unfinished project."""
        project = project or self._current_unfinished()
        if project is not None:
            self.go(WALK if project.current_question else MENU, project, mode="resume")
            return
        latest = self.latest()
        if latest is not None:
            self.go(MENU, latest)
        else:
            self.go(NAME)

    def _current_unfinished(self) -> Optional[Project]:
        """The project in the state if it is unfinished, else the latest unfinished one."""
        project = self.project()
        if project is not None and project.completed_at is None and project.current_question:
            return project
        unfinished = self.unfinished()
        return unfinished[0] if unfinished else None

    def start(self) -> None:
        """Start: choose among unfinished projects, or name a new one."""
        if self.unfinished():
            self.go(CHOOSE)
        else:
            self.go(NAME)

    def edit(self, message: Message, outcome: Outcome) -> None:
        """Go to the answer the champion wants to change (or ask which one)."""
        project = self.project() or self.latest()
        if project is None:
            self.go(NAME)
            return
        question = self.content.question(message.entities.get("fs_question")) or self._question_in(message)
        if question is not None:
            self.repo.move_to(project.id, question.key)
            self.go(WALK, project, mode="edit")
            return
        step = self._step_in(message)
        if step is not None:
            self.go(PICK_QUESTION, project)
            self.state["step"] = step
            return
        self.go(PICK_STEP, project)

    def _question_in(self, message: Message) -> Optional[Question]:
        """The question a typed request names ("change my answer to the aim"), if any."""
        if message.is_payload:
            return None
        text = f" {message.plain} "
        best, best_length = None, 0
        for question in self.content.questions:
            for name in (question.short, question.label, question.key.replace("_", " ")):
                name = normalise(name)
                if name and f" {name} " in text and len(name) > best_length:
                    best, best_length = question, len(name)
        return best

    def _step_in(self, message: Message) -> Optional[int]:
        """The step number a message names ("step 2", a button's fs_step, or a bare "2")."""
        raw = message.entities.get("fs_step")
        if raw is not None:
            try:
                number = int(str(raw).strip())
            except ValueError:
                return None
            return number if self.content.step(number) else None
        match = _STEP_NUMBER.search(message.text) if not message.is_payload else None
        if match:
            return int(match.group(1) or match.group(2))
        plain = message.plain
        for step in self.content.steps:
            if plain and plain == normalise(step.title):
                return step.number
        return None

    # -- asking --

    def ask(self, outcome: Outcome) -> None:
        """Queue whatever the current stage asks next."""
        stage = self.state.get("stage")
        content = self.content
        if stage == CHOOSE:
            projects = self.unfinished()[:MAX_PROJECT_BUTTONS]
            if not projects:
                self.go(NAME)
                return self.ask(outcome)
            buttons = [content.button("carry_on_project", name=p.name, id=p.id) for p in projects]
            buttons.append(content.button("new_project"))
            outcome.say(content.message("choose_project"), buttons)
        elif stage == NAME:
            outcome.say(content.message("ask_name"), [content.button("stop")])
        elif stage == ABOUT:
            project = self.project()
            outcome.say(content.message("ask_about", name=project.name if project else ""), [content.button("skip"), content.button("stop")])
        elif stage == PICK_STEP:
            buttons = [content.button("pick_step", number=s.number, title=s.title) for s in content.steps]
            outcome.say(content.message("pick_step"), buttons + [content.button("stop")])
        elif stage == PICK_QUESTION:
            step = content.step(int(self.state.get("step") or 1)) or content.steps[0]
            buttons = [content.button("pick_question", short=q.short, key=q.key) for q in step.questions]
            outcome.say(content.message("pick_question", number=step.number), buttons + [content.button("stop")])
        elif stage == MENU:
            project = self.project() or self.latest()
            if project is None:
                self.go(NAME)
                return self.ask(outcome)
            outcome.say(
                content.message("menu", name=project.name),
                [content.button("show_plan"), content.button("change_answer"), content.button("new_project"), content.button("stop")],
            )
        else:
            self._ask_question(outcome)
        self.state["mode"] = None

    def _ask_question(self, outcome: Outcome) -> None:
        """Queue the current question of the project (with the step's intro when a step begins)."""
        content = self.content
        project = self.project()
        if project is None:
            self.resume()
            if self.state.get("stage") != WALK:
                return self.ask(outcome)
            project = self.project()
        question = content.question(project.current_question)
        if question is None:
            if project.current_question is not None:  # a key from an older version of the content
                first_open = content.next_open_key(None, set(self.answers(project)))
                self.repo.move_to(project.id, first_open, completed=first_open is None)
                question = content.question(first_open)
            if question is None:
                self.go(MENU, project)
                return self.ask(outcome)
        answers = self.answers(project)
        saved = answers.get(question.key)
        step = content.step(question.step)
        mode = self.state.get("mode")
        if mode == "multi" and saved is not None and not saved.skipped:
            selected = content.display(question, saved.value)
            outcome.say(content.message("multi_selected", selected=selected), self._buttons(question, saved))
            return
        if mode == "resume":
            outcome.say(content.message("resume_header", name=project.name, number=step.number, title=step.title))
        elif mode == "again":
            outcome.say(content.message("again"))
        elif mode == "edit":
            outcome.say(content.message("edit_intro", label=question.label))
        if content.is_first_in_step(question.key) and saved is None and mode in (None, "resume"):
            outcome.say(step.intro)
        outcome.say(self._prompt(question, saved), self._buttons(question, saved))

    def _prompt(self, question: Question, saved: Optional[Answer]) -> str:
        """The question's text, with what the champion already answered."""
        content = self.content
        text = question.prompt
        if saved is None:
            return text
        if saved.skipped:
            return f"{text}\n\n{content.message('skipped_before')}"
        if question.kind == "multi":
            selected = content.display(question, saved.value)
            return f"{text}\n\n{content.message('multi_selected', selected=selected)}" if selected else text
        shown = shorten(content.display(question, saved.value), content.limits["chat_answer_chars"])
        return f"{text}\n\n{content.message('saved_answer', answer=shown)}"

    def _buttons(self, question: Question, saved: Optional[Answer]) -> List[Dict[str, str]]:
        """Option buttons, then Done (several choices), Skip or Keep, Back and Stop."""
        content = self.content
        buttons = [{"title": o.title, "payload": o.title} for o in question.options]
        if question.kind == "multi":
            buttons.append(content.button("done"))
        has_answer = saved is not None and not saved.skipped
        if not has_answer:
            buttons.append(content.button("skip"))
        elif question.kind != "multi":  # for several choices, Done keeps them
            buttons.append(content.button("keep"))
        if content.previous_key(question.key) is not None:
            buttons.append(content.button("back"))
        buttons.append(content.button("stop"))
        return buttons

    # -- handling a message --

    def handle(self, message: Message) -> Outcome:
        """Deal with one message while the form runs; the outcome says what to send and whether to stop."""
        outcome = Outcome()
        content = self.content
        pending = self.state.get("pending")
        last_topic = self.state.get("last_topic")
        self.state["pending"] = None
        self.state["last_topic"] = None

        if message.intent == CRISIS_INTENT:
            outcome.say(response=CRISIS_RESPONSE)
            outcome.say(content.message("crisis_paused"))
            return self._stop(outcome, STOP_CRISIS)

        if pending and message.plain in self._phrases("save_pending"):
            message = Message(text=pending, intent=None, confidence=0.0)
            return self._answer_by_stage(message, outcome, confirmed=True)

        if not message.text:
            outcome.say(content.message("empty"))
            return self._retry(outcome)
        if len(message.text) > content.limits["answer_max"]:
            outcome.say(content.message("too_long", max=content.limits["answer_max"]))
            return self._retry(outcome)

        command, certain = self._command(message)
        if command == "more" and (not last_topic or message.plain in self._phrases("carry_on")):
            command = "continue"  # "carry on" means carry on with the walk unless more was asked for
        if command and (certain or self._safe_to_obey(command, message)):
            return self._obey(command, message, outcome)

        setting = setting_action(message)
        if setting is not None:  # "stop messages from the team": done at once, then the same question
            outcome.delegates.append(setting)
            return self._again(outcome)
        if self._knowledge(message, outcome) or self._interruption(message, outcome):
            return self._again(outcome)

        if command:  # NLU thinks it's a command, but it may be an answer: check first
            return self._confirm(command, message, outcome)
        return self._answer_by_stage(message, outcome)

    def _phrases(self, name: str) -> set:
        """A phrase list from the content, normalised."""
        return {normalise(p) for p in self.content.phrases.get(name, ())}

    def _command(self, message: Message) -> Tuple[Optional[str], bool]:
        """(command, certain) the message asks for: from a button, an exact phrase or NLU; else (None, False)."""
        if message.is_payload:
            return COMMAND_INTENTS.get(message.intent), True
        for command in PHRASE_COMMANDS:
            if message.plain in self._phrases(command):
                return command, True
        command = COMMAND_INTENTS.get(message.intent or "")
        limits = self.content.limits
        # "goodbye" and "pause_walkthrough" both mean stop: count their confidence together.
        together = sum(c for name, c in message.ranking if COMMAND_INTENTS.get(name) == command)
        confidence = max(message.confidence, together)
        if (
            command
            and confidence * 100 >= limits["min_confidence"]
            and message.words <= limits["max_command_words"]
        ):
            if command == "edit":
                words = set(message.plain.split())
                if not words & self._phrases("edit_words"):
                    return None, False
                # "change my answer to step 2 aim": names what to change, so it is certainly a request.
                if words & {"answer", "answers", "step"} or self._question_in(message):
                    return command, True
            return command, False
        return None, False

    def _safe_to_obey(self, command: str, message: Message) -> bool:
        """True when an NLU-only command can't be an answer: a short message, or no free text is expected."""
        if message.words <= SHORT_COMMAND_WORDS or command in HARMLESS_COMMANDS:
            return True
        stage = self.state.get("stage")
        if stage in (NAME, ABOUT):
            return False
        if stage == WALK:
            question = self._current_question()
            return question is not None and question.kind != "text" and not question.allow_text
        return True

    def _current_question(self) -> Optional[Question]:
        """The question the project is at, if walking."""
        project = self.project()
        return self.content.question(project.current_question) if project else None

    def _confirm(self, command: str, message: Message, outcome: Outcome) -> Outcome:
        """Ask whether a longer message was a command or an answer, keeping it in case it's an answer."""
        content = self.content
        name = content.command_names.get(command, command)
        button = content.button(COMMAND_BUTTONS.get(command, "stop"))
        button["title"] = content.message("confirm_yes", command=name)
        outcome.say(content.message("confirm_command", command=name), [button, content.button("save_pending")])
        self.state["pending"] = message.text
        return self._quiet(outcome)

    def _obey(self, command: str, message: Message, outcome: Outcome) -> Outcome:
        """Carry out a command: stop, skip, back, show the plan, new project, change an answer, ..."""
        content = self.content
        stage = self.state.get("stage")
        if command == "pause":
            outcome.say(content.message("paused"), [content.button("carry_on")])
            return self._stop(outcome, STOP_PAUSE)
        if command == "show_plan":
            chosen = self.repo.project(self.champion.id, message.entities.get("fs_project"))
            if chosen is not None:
                self.state["project"] = chosen.id
            return self._stop(outcome, STOP_SHOW_PLAN)
        if command == "new_project":
            self.go(NAME)
            return outcome
        if command == "edit":
            self.edit(message, outcome)
            return outcome
        if command == "more":
            self._tell_me_more(outcome)
            self._again(outcome)
            self.state["last_topic"] = "more"
            return outcome
        if command in ("continue", "start"):
            chosen = self.repo.project(self.champion.id, message.entities.get("fs_project"))
            if chosen is not None and chosen.completed_at is None:
                self.resume(chosen)
            elif chosen is not None:
                self.go(MENU, chosen)
            elif stage == WALK:
                return self._again(outcome)
            elif command == "start":
                self.start()
            else:
                self.resume()
            return outcome
        if stage == WALK:
            if command == "skip":
                return self._skip(outcome)
            if command == "back":
                return self._back(outcome)
        if stage == ABOUT and command == "skip":
            project = self.project()
            if project is not None:
                self.go(WALK, project)
            return outcome
        self.state["mode"] = "again"
        return outcome

    def _knowledge(self, message: Message, outcome: Outcome) -> bool:
        """Answer a knowledge question asked mid-walk (True if one was answered)."""
        intent = message.intent or ""
        if not intent.startswith("ask_"):
            return False
        if not message.is_payload:
            if message.confidence * 100 < self.content.limits["question_confidence"]:
                return False
            if not self._looks_like_question(message):
                return False
        if intent == GLOSSARY_INTENT:
            self.state["last_topic"] = GLOSSARY_INTENT
            return self._explain_acronym(outcome)
        response = "utter_" + intent[len("ask_"):]
        if response not in self.responses:
            return False
        outcome.say(response=response)
        self.state["last_topic"] = response
        return True

    def _looks_like_question(self, message: Message) -> bool:
        """True for "...?" or a message starting with what/how/why/is/can/tell/..."""
        words = message.plain.split()
        return message.text.rstrip().endswith("?") or bool(words and words[0] in self._phrases("question_starts"))

    def _explain_acronym(self, outcome: Outcome) -> bool:
        """Let the glossary's own action explain the acronym (its messages join the outcome)."""
        try:
            from actions.glossary import ActionExplainAcronym
        except ImportError:  # pragma: no cover - the glossary is part of the project
            return False
        outcome.delegates.append(ActionExplainAcronym())
        return True

    def _tell_me_more(self, outcome: Outcome) -> bool:
        """Let the shared "tell me more" action continue the last answer, if it is there."""
        action = find_action(TELL_ME_MORE_ACTION)
        if action is None:
            return False
        outcome.delegates.append(action)
        return True

    def _interruption(self, message: Message, outcome: Outcome) -> bool:
        """A thank-you, hello, help request, medical question, ... mid-walk: reply briefly (True if so)."""
        spec = self.content.interruptions.get(message.intent or "")
        if not spec:
            return False
        if not message.is_payload:
            if message.confidence * 100 < self.content.limits["min_confidence"]:
                return False
            if spec.get("max_words") and message.words > int(spec["max_words"]):
                return False
            if spec.get("questions_only") and not self._looks_like_question(message):
                return False
        if spec.get("response"):
            if spec["response"] not in self.responses:
                return False
            outcome.say(response=spec["response"])
        else:
            outcome.say(self.content.message(spec["message"]))
        return True

    def _again(self, outcome: Outcome) -> Outcome:
        """Offer to carry on, and ask the same thing again (after answering something else)."""
        self.state["mode"] = "again" if self.state.get("stage") == WALK else None
        return outcome

    def _retry(self, outcome: Outcome) -> Outcome:
        """Ask the same question again, plainly (after an answer we couldn't use)."""
        self.state["mode"] = "retry" if self.state.get("stage") == WALK else None
        return outcome

    def _quiet(self, outcome: Outcome) -> Outcome:
        """Ask nothing more this turn: the reply already asks the champion something."""
        self.state["mode"] = "quiet"
        return outcome

    def _stop(self, outcome: Outcome, reason: str) -> Outcome:
        """End the form for now; the position stays in the database."""
        self.state.update(stop=reason, mode=None, pending=None)
        outcome.stop = reason
        return outcome

    # -- answers, by stage --

    def _answer_by_stage(self, message: Message, outcome: Outcome, confirmed: bool = False) -> Outcome:
        """Use the message as the answer the current stage asked for."""
        stage = self.state.get("stage")
        handler = {
            CHOOSE: self._choose,
            NAME: self._name,
            ABOUT: self._about,
            PICK_STEP: self._pick_step,
            PICK_QUESTION: self._pick_question,
            MENU: self._menu,
        }.get(stage)
        if handler is not None:
            return handler(message, outcome)
        return self._answer(message, outcome, confirmed)

    def _choose(self, message: Message, outcome: Outcome) -> Outcome:
        """A project picked by name (buttons arrive as /continue_walkthrough commands)."""
        plain = message.plain
        if plain in {normalise(self.content.buttons["new_project"]["title"]), "new", "new project", "a new one"}:
            self.go(NAME)
            return outcome
        for project in self.unfinished():
            if plain and plain == normalise(project.name):
                self.resume(project)
                return outcome
        names = ", ".join(f'"{p.name}"' for p in self.unfinished()[:MAX_PROJECT_BUTTONS])
        outcome.say(self.content.message("pick_an_option", options=names))
        return self._retry(outcome)

    def _name(self, message: Message, outcome: Outcome) -> Outcome:
        """A new project's name: a few letters, at most name_max characters."""
        content = self.content
        name = " ".join(message.text.split())
        if not readable(name, 2):
            outcome.say(content.message("name_unreadable"))
            return self._quiet(outcome)
        if len(name) > content.limits["name_max"]:
            outcome.say(content.message("name_too_long", max=content.limits["name_max"]))
            return self._quiet(outcome)
        project = self.repo.create_project(self.champion.id, name, content.first_key())
        self.go(ABOUT, project)
        return outcome

    def _about(self, message: Message, outcome: Outcome) -> Outcome:
        """One line on what the project is about; then the walk begins."""
        content = self.content
        about = " ".join(message.text.split())
        if not readable(about, 2):
            outcome.say(content.message("unreadable"))
            return self._quiet(outcome)
        if len(about) > content.limits["about_max"]:
            outcome.say(content.message("about_too_long", max=content.limits["about_max"]))
            return self._quiet(outcome)
        project = self.project()
        if project is None:
            self.go(NAME)
            return outcome
        self.repo.set_about(project.id, about)
        outcome.say(content.message("project_saved", name=project.name))
        self.go(WALK, project)
        return outcome

    def _pick_step(self, message: Message, outcome: Outcome) -> Outcome:
        """Which step to change an answer in."""
        step = self._step_in(message)
        if step is None:
            question = self._question_in(message)
            if question is not None:
                return self._jump(question, outcome)
            titles = ", ".join(str(s.number) for s in self.content.steps)
            outcome.say(self.content.message("pick_an_option", options=titles))
            return self._retry(outcome)
        self.go(PICK_QUESTION, self.project())
        self.state["step"] = step
        return outcome

    def _pick_question(self, message: Message, outcome: Outcome) -> Outcome:
        """Which answer to change, by its short name."""
        question = self._question_in(message)
        step = self.content.step(int(self.state.get("step") or 1))
        if question is None and step is not None:
            for candidate in step.questions:
                if message.plain == normalise(candidate.short):
                    question = candidate
        if question is None:
            names = ", ".join(q.short for q in (step.questions if step else ()))
            outcome.say(self.content.message("pick_an_option", options=names))
            return self._retry(outcome)
        return self._jump(question, outcome)

    def _jump(self, question: Question, outcome: Outcome) -> Outcome:
        """Go to question to change its answer."""
        project = self.project() or self.latest()
        if project is None:
            self.go(NAME)
            return outcome
        self.repo.move_to(project.id, question.key)
        self.go(WALK, project, mode="edit")
        return outcome

    def _menu(self, message: Message, outcome: Outcome) -> Outcome:
        """The finished-plan menu only takes its buttons (commands); anything else gets it again."""
        self.state["mode"] = None
        return outcome

    def _answer(self, message: Message, outcome: Outcome, confirmed: bool = False) -> Outcome:
        """An answer to the current question: checked, saved at once, and the walk moves on."""
        content = self.content
        project = self.project()
        if project is None or project.current_question is None:
            self.resume()
            return outcome
        question = content.question(project.current_question)
        if question is None:
            return outcome
        answers = self.answers(project)
        if question.kind == "multi":
            return self._multi(question, project, answers, message, outcome)
        if question.kind in ("choice", "yes_no"):
            value = self._match_option(question, message)
            if value is None:
                if question.allow_text and readable(message.text, 2):
                    return self._save(question, project, answers, message.text, outcome)
                if not readable(message.text):
                    outcome.say(content.message("unreadable"))
                else:
                    options = ", ".join(f'"{o.title}"' for o in question.options)
                    outcome.say(content.message("pick_an_option", options=options))
                return self._retry(outcome)
            return self._save(question, project, answers, value, outcome)
        if not readable(message.text, 2):
            outcome.say(content.message("unreadable"))
            return self._retry(outcome)
        if not confirmed and message.text.rstrip().endswith("?"):
            outcome.say(
                content.message("pending_question"),
                [content.button("save_pending"), content.button("skip"), content.button("stop")],
            )
            self.state["pending"] = message.text
            return self._quiet(outcome)
        return self._save(question, project, answers, message.text, outcome)

    def _option_names(self, question: Question) -> Dict[str, str]:
        """Every normalised way of naming each option → its value."""
        names: Dict[str, str] = {}
        for option in question.options:
            for name in (option.title, option.value.replace("_", " "), *option.aliases):
                names.setdefault(normalise(name) or name.strip(), option.value)
        return names

    def _match_option(self, question: Question, message: Message) -> Optional[str]:
        """The option a message names: the whole message, or for yes/no its first words."""
        names = self._option_names(question)
        plain = message.plain or message.text.strip()
        if plain in names:
            return names[plain]
        if question.kind == "yes_no" or any(o.value in ("yes", "no") for o in question.options):
            words = plain.split()
            for length in (3, 2, 1):
                if len(words) > length and " ".join(words[:length]) in names:
                    return names[" ".join(words[:length])]
        if message.intent in ("affirm", "deny") and message.confidence * 100 >= self.content.limits["min_confidence"]:
            wanted = "yes" if message.intent == "affirm" else "no"
            for option in question.options:
                if option.value == wanted:
                    return wanted
        return None

    def _multi(self, question: Question, project: Project, answers: Dict[str, Answer], message: Message, outcome: Outcome) -> Outcome:
        """Several choices: each tap adds (or removes) one; Done, or typing several at once, finishes."""
        content = self.content
        saved = answers.get(question.key)
        selected = content.selected(question, saved.value if saved and not saved.skipped else None)
        plain = message.plain
        exclusive = {o.value for o in question.options if o.exclusive}
        if plain in self._phrases("done"):
            if not selected:
                outcome.say(content.message("multi_nothing"))
                return self._retry(outcome)
            return self._save(question, project, answers, ",".join(selected), outcome)
        if plain in self._phrases("all"):
            chosen = [o.value for o in question.options if not o.exclusive]
            return self._save(question, project, answers, ",".join(chosen), outcome)
        names = self._option_names(question)
        parts = [normalise(p) for p in _SPLIT_CHOICES.split(message.text) if normalise(p)]
        if not parts and message.text.strip() in names:
            parts = [message.text.strip()]
        values = [names.get(p) for p in parts]
        if not parts or any(v is None for v in values):
            if not readable(message.text):
                outcome.say(content.message("unreadable"))
            else:
                options = ", ".join(f'"{o.title}"' for o in question.options)
                outcome.say(content.message("pick_an_option", options=options))
            return self._retry(outcome)
        values = list(dict.fromkeys(values))
        if len(values) == 1:
            value = values[0]
            if value in exclusive:
                return self._save(question, project, answers, value, outcome)
            selected = [v for v in selected if v not in exclusive]
            selected = [v for v in selected if v != value] if value in selected else selected + [value]
            ordered = [o.value for o in question.options if o.value in selected]
            if ordered:
                self.repo.save_answer(project.id, question.key, ",".join(ordered))
            else:
                self.repo.forget_answer(project.id, question.key)
            self.state["mode"] = "multi"
            return outcome
        values = [v for v in values if v not in exclusive] or values[:1]
        ordered = [o.value for o in question.options if o.value in values]
        return self._save(question, project, answers, ",".join(ordered), outcome)

    def _save(self, question: Question, project: Project, answers: Dict[str, Answer], value: Optional[str], outcome: Outcome, skipped: bool = False) -> Outcome:
        """Save the answer (or skip), then tips, the ladder level, the step's closing words, and move on."""
        content = self.content
        dealt_with = set(answers) | {question.key}
        next_key = content.next_open_key(question.key, dealt_with)
        self.repo.save_answer(
            project.id, question.key, value, skipped=skipped, move_to=next_key, completed=next_key is None
        )
        if not skipped:
            for option_value in content.selected(question, value):
                option = question.option(option_value)
                if option is not None and option.tip:
                    outcome.say(option.tip.strip())
        if question.key in content.ladder["questions"]:
            self._place_on_ladder(project, outcome)
        step = content.step(question.step)
        if content.is_last_in_step(question.key) and step.outro:
            outcome.say(step.outro)
        self.state["mode"] = None
        if next_key is None:
            return self._stop(outcome, STOP_DONE)
        return outcome

    def _place_on_ladder(self, project: Project, outcome: Outcome) -> None:
        """Once the three ladder questions are dealt with, save the level and explain it."""
        content = self.content
        answers = self.answers(project)
        result = ladder_from_answers(content, answers)
        key = content.ladder["answer_key"]
        if result is None:
            if all(k in answers for k in content.ladder["questions"]):
                self.repo.forget_answer(project.id, key)
            return
        level, reasons = result
        self.repo.save_answer(project.id, key, level)
        outcome.say(content.levels[level].text.replace("{reasons}", join_reasons(reasons)))

    def _skip(self, outcome: Outcome) -> Outcome:
        """Skip the current question (an answer given before is kept)."""
        project = self.project()
        question = self._current_question()
        if project is None or question is None:
            self.resume()
            return outcome
        answers = self.answers(project)
        saved = answers.get(question.key)
        if saved is not None and not saved.skipped:
            return self._save(question, project, answers, saved.value, outcome)
        return self._save(question, project, answers, None, outcome, skipped=True)

    def _back(self, outcome: Outcome) -> Outcome:
        """Go back to the question before, showing what was saved for it."""
        project = self.project()
        question = self._current_question()
        if project is None or question is None:
            self.resume()
            return outcome
        previous = self.content.previous_key(question.key)
        if previous is None:
            outcome.say(self.content.message("back_at_start"))
            return self._retry(outcome)
        self.repo.move_to(project.id, previous)
        self.state["mode"] = "back"
        return outcome


def find_action(name: str) -> Optional[Action]:
    """An action of this action server by name (its module imported on demand), or None."""
    for module in ("actions.basics",):
        try:
            importlib.import_module(module)
        except ImportError:
            continue
    pending = list(Action.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        try:
            action = cls()
            if action.name() == name:
                return action
        except Exception:  # noqa: BLE001 - abstract helpers can't be made or named
            continue
    return None


# --- Rasa actions --------------------------------------------------------------------------------


def _plan_messages(walk: Walk, project: Project) -> Outcome:
    """The plan, one phone-sized message per step, then the download and other plans."""
    content = walk.content
    outcome = Outcome()
    answers = walk.answers(project)
    about = content.message("plan_about", about=project.about) if project.about else ""
    outcome.say(content.message("plan_header", name=project.name, about=about))
    for step in content.steps:
        lines = "\n".join(
            content.message("plan_line", label=label, answer=shown)
            for label, shown in plan_lines(content, answers, step, content.limits["chat_answer_chars"])
        )
        outcome.say(
            content.message("plan_step", number=step.number, title=step.title, lines=lines),
            [content.button("change_step", number=step.number)],
        )
    channel, external_id = split_sender(walk.sender_id)
    if channel == DOWNLOAD_CHANNEL:
        url = DOWNLOAD_PATH + "?" + urlencode({"sender_id": external_id, "project": project.id})
        outcome.say(
            content.message("plan_download"),
            json_message={"download": {"url": url, "label": content.message("plan_download_label")}},
        )
    if project.completed_at is None and project.current_question:
        outcome.say(
            content.message("plan_unfinished"),
            [content.button("carry_on_project", name=content.buttons["carry_on"]["title"], id=project.id)],
        )
    others = [p for p in walk.repo.projects(walk.champion.id) if p.id != project.id][:MAX_PROJECT_BUTTONS]
    if others:
        outcome.say(
            content.message("other_plans"),
            [content.button("show_plan_project", name=p.name, id=p.id) for p in others],
        )
    return outcome


def _trouble(dispatcher: CollectingDispatcher) -> None:
    """Say kindly that the saved plans can't be reached (the database is down)."""
    say_trouble(dispatcher, content().message("trouble"))


class ActionStartWalkthrough(Action):
    """Get the walk ready before five_steps_form runs: start, continue, new project, change an answer."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_start_walkthrough"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Choose the stage from the intent (and any project or question in the button payload)."""
        message = read_message(tracker)
        try:
            walk = Walk(sender_of(tracker), get_state(tracker, STATE_SLOT), domain)
            self._prepare(walk, message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return [FollowupAction("action_listen")]  # don't start the form without the database
        return [SlotSet(ANSWER_SLOT, None), SlotSet(REQUESTED_SLOT, None), SlotSet(STATE_SLOT, walk.state)]

    @staticmethod
    def _prepare(walk: "Walk", message: Message) -> None:
        """Set the walk's stage for the intent that started it."""
        intent = message.intent
        if intent == "new_project":
            walk.go(NAME)
        elif intent == "start_walkthrough":
            walk.start()
        elif intent == "edit_answer":
            walk.edit(message, Outcome())
        else:  # continue_walkthrough, and skip / go back when no walk is running
            chosen = walk.repo.project(walk.champion.id, message.entities.get("fs_project"))
            if chosen is not None and chosen.completed_at is not None:
                walk.go(MENU, chosen)
            else:
                walk.resume(chosen)


class ActionAskFsAnswer(Action):
    """Ask the walk's next question (five_steps_form calls this whenever it needs fs_answer)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_ask_fs_answer"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Send the question for the current stage, with its buttons."""
        state = get_state(tracker, STATE_SLOT)
        if state.get("mode") == "quiet":  # we just asked the champion something else
            state["mode"] = None
            return [SlotSet(STATE_SLOT, state)]
        try:
            walk = Walk(sender_of(tracker), state, domain)
            outcome = Outcome()
            walk.ask(outcome)
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        outcome.send(dispatcher)
        return [SlotSet(STATE_SLOT, walk.state)]


class ValidateFiveStepsForm(FormValidationAction):
    """Check and save each message given to five_steps_form; steer the walk."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "validate_five_steps_form"

    async def validate_fs_answer(
        self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> Dict[Text, Any]:
        """Handle one message; keep the form going (fs_answer empty) or stop it (requested_slot None)."""
        if not isinstance(slot_value, str):
            # Called as the form starts, with action_start_walkthrough's emptied fs_answer: nothing to do.
            return {}
        message = read_message(tracker, slot_value)
        if message.intent == CRISIS_INTENT:  # first, and even if the database is down
            dispatcher.utter_message(response=CRISIS_RESPONSE)
            state = dict(get_state(tracker, STATE_SLOT), stop=STOP_CRISIS, mode=None, pending=None)
            try:
                dispatcher.utter_message(text=content().message("crisis_paused"))
            except Exception:  # noqa: BLE001 - the crisis reply has gone; nothing else matters
                log.exception("could not add the 'plan saved' note after a crisis reply")
            return {ANSWER_SLOT: None, STATE_SLOT: state, REQUESTED_SLOT: None}
        try:
            walk = Walk(sender_of(tracker), get_state(tracker, STATE_SLOT), domain)
            outcome = walk.handle(message)
        except SQLAlchemyError:
            _trouble(dispatcher)
            state = dict(get_state(tracker, STATE_SLOT), stop=STOP_TROUBLE, mode=None, pending=None)
            return {ANSWER_SLOT: None, STATE_SLOT: state, REQUESTED_SLOT: None}
        slots: Dict[Text, Any] = {ANSWER_SLOT: None, STATE_SLOT: walk.state}
        for event in await outcome.send_all(dispatcher, tracker, domain):
            slots[event["name"]] = event.get("value")
        if outcome.stop:
            slots[REQUESTED_SLOT] = None
        return slots


class ActionFiveStepsEnd(Action):
    """After five_steps_form stops: the completion message, or the plan the champion asked for."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_five_steps_end"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Say well done (all answered) or show the plan ("show my plan" mid-walk); a pause was said already."""
        state = get_state(tracker, STATE_SLOT)
        reason = state.get("stop")
        done = [SlotSet(STATE_SLOT, dict(state, stop=None, mode=None, pending=None)), SlotSet(ANSWER_SLOT, None)]
        if reason not in (STOP_DONE, STOP_SHOW_PLAN):
            return done
        try:
            walk = Walk(sender_of(tracker), state, domain)
            self._say(walk, reason, dispatcher)
        except SQLAlchemyError:
            _trouble(dispatcher)
        return done

    @staticmethod
    def _say(walk: "Walk", reason: str, dispatcher: CollectingDispatcher) -> None:
        """Well done with what to do next, or the plan."""
        project = walk.project()
        content = walk.content
        if reason == STOP_DONE and project is not None:
            dispatcher.utter_message(
                text=content.message("completed", name=project.name),
                buttons=[content.button("show_plan"), content.button("change_answer"), content.button("new_project")],
            )
        elif reason == STOP_SHOW_PLAN:
            project = project or walk.latest()
            if project is not None:
                _plan_messages(walk, project).send(dispatcher)


class ActionShowPlan(Action):
    """Show the champion's plan step by step, with a download link on the web chat."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_show_plan"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Show the chosen, current or latest project's plan (or offer to start one)."""
        message = read_message(tracker)
        try:
            walk = Walk(sender_of(tracker), get_state(tracker, STATE_SLOT), domain)
            project = (
                walk.repo.project(walk.champion.id, message.entities.get("fs_project"))
                or walk.project()
                or walk.latest()
            )
            outcome = _plan_messages(walk, project) if project is not None else None
        except SQLAlchemyError:
            _trouble(dispatcher)
            return []
        content = walk.content
        if project is None:
            dispatcher.utter_message(
                text=content.message("no_plan"),
                buttons=[{"title": content.message("no_plan_button"), "payload": "/start_walkthrough"}],
            )
            return []
        outcome.send(dispatcher)
        walk.state["project"] = project.id
        return [SlotSet(STATE_SLOT, walk.state)]


class ActionOfferResume(Action):
    """Offer to carry on an unfinished walk (for the greeting: sends nothing if there is none)."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_offer_resume"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Name the most recent unfinished project and where it stopped, with Carry on / Not now."""
        try:
            walk = Walk(sender_of(tracker), get_state(tracker, STATE_SLOT), domain)
            unfinished = [p for p in walk.unfinished() if p.current_question]
        except SQLAlchemyError:
            log.exception("could not look for an unfinished walk")
            return []  # the greeting stands on its own
        if not unfinished:
            return []
        project = unfinished[0]
        content = walk.content
        question = content.question(project.current_question)
        step = content.step(question.step) if question else content.steps[0]
        dispatcher.utter_message(
            text=content.message("offer_resume", name=project.name, number=step.number, title=step.title),
            buttons=[
                content.button("carry_on_project", name=content.buttons["carry_on"]["title"], id=project.id),
                content.button("not_now"),
            ],
        )
        return []


class ActionPauseWalkthrough(Action):
    """"Stop" when no walk is running: reassure that everything is saved."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_pause_walkthrough"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[Dict[str, Any]]:
        """Say the plans are saved and can be continued any time."""
        dispatcher.utter_message(text=content().message("nothing_to_pause"))
        return []
