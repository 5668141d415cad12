"""The five steps walk-through: form validation and actions, driven like Rasa drives them, on a real SQLite file."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from rasa_sdk.executor import CollectingDispatcher

from actions.db import use_sessions
from actions import walkthrough as wt
from tests.form_chat import ActionChat, nlu_result
from tests.champion_data import opted_out
from bot.db import make_engine, make_session_factory, migrate
from bot.plans import PlanRepository, load_content, plan_markdown

CONTENT = load_content()
DOMAIN: Dict[str, Any] = {
    "forms": {"five_steps_form": {"required_slots": ["fs_answer"]}},
    "slots": {
        "fs_answer": {"type": "text", "mappings": [{"type": "from_text", "conditions": [{"active_loop": "five_steps_form", "requested_slot": "fs_answer"}]}]},
        "fs_state": {"type": "any", "mappings": [{"type": "custom"}]},
    },
    "responses": {
        "utter_crisis": [{"text": "crisis"}],
        "utter_tokenism": [{"text": "tokenism"}],
        "utter_tokenism_more": [{"text": "more on tokenism"}],
        "utter_no_more": [{"text": "no more"}],
        "utter_medical": [{"text": "medical"}],
        "utter_levels": [{"text": "levels"}],
        "utter_acronym_definition": [{"text": "{term} stands for {expansion}. {meaning}"}],
        "utter_acronym_unknown": [{"text": "unknown"}],
    },
}
SENDER = "web-3f2a9c1e-champion"


class Stack:
    """The action server's database: a fresh engine on the same SQLite file is a restart."""

    def __init__(self, url: str) -> None:
        """Migrate url and open it."""
        self.url = url
        migrate(url)
        self.engine = None
        self.restart()

    def restart(self) -> PlanRepository:
        """Drop every connection and cached object, then open the database again."""
        if self.engine is not None:
            self.engine.dispose()
        use_sessions(None)
        self.engine = make_engine(self.url)
        sessions = make_session_factory(self.engine)
        self.repo = PlanRepository(sessions)
        use_sessions(sessions)
        return self.repo

    def close(self) -> None:
        """Close everything."""
        use_sessions(None)
        self.engine.dispose()


@pytest.fixture
def stack(tmp_path: Path):
    """A migrated SQLite app database for the actions."""
    s = Stack(f"sqlite:///{tmp_path / 'app.db'}")
    yield s
    s.close()


def parse(text: str, intent: Optional[str] = None, confidence: float = 0.3, entities: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What NLU would make of text (a button payload is certain)."""
    return nlu_result(text, intent, confidence, entities)


class Chat(ActionChat):
    """One champion's conversation, run the way Rasa runs five_steps_form and its actions."""

    def __init__(self, sender: str = SENDER) -> None:
        """A conversation with no slots set yet."""
        super().__init__(sender, "five_steps_form", DOMAIN, ["fs_answer", "fs_state"])
        self.log: List[List[Dict[str, Any]]] = []

    async def send(
        self, text: str, intent: Optional[str] = None, confidence: float = 0.3,
        history: Optional[List[Dict[str, Any]]] = None, **entities: str,
    ) -> List[Dict[str, Any]]:
        """The champion sends text (after earlier events `history`); returns every message the bot sends back."""
        latest = parse(text, intent, confidence, entities)
        said: List[Dict[str, Any]] = []
        if not self.form_active:
            name = latest["intent"]["name"]
            if name in ("start_walkthrough", "continue_walkthrough", "new_project", "edit_answer", "skip_question", "go_back", "tell_me_more"):
                dispatcher = CollectingDispatcher()
                started = await wt.ActionStartWalkthrough().run(dispatcher, self.tracker(latest, [{"event": "user", "text": text}]), DOMAIN)
                said += dispatcher.messages
                for event in started:
                    if event.get("event") == "slot":
                        self.slots[event["name"]] = event["value"]
                self.form_active = True
                # As the form starts, Rasa runs the validation action with the entry action's slot
                # events last on the tracker (fs_answer emptied): it must change nothing.
                events = [{"event": "user", "text": text}, {"event": "action", "name": "action_start_walkthrough"}] + started
                dispatcher = CollectingDispatcher()
                validated = await wt.ValidateFiveStepsForm().run(dispatcher, self.tracker(latest, events), DOMAIN)
                assert dispatcher.messages == [] and all(e.get("name") != "fs_state" for e in validated)
                said += await self.said(wt.ActionAskFsAnswer(), latest)
            elif name == "show_plan":
                said += await self.said(wt.ActionShowPlan(), latest)
            elif name == "pause_walkthrough":
                said += await self.said(wt.ActionPauseWalkthrough(), latest)
            else:
                raise AssertionError(f"no rule for {name} outside the form")
            self.log.append(said)
            return said
        events = list(history or []) + [
            {"event": "user", "text": text, "parse_data": latest},
            {"event": "slot", "name": "fs_answer", "value": text},
        ]
        self.slots["fs_answer"] = text
        dispatcher = CollectingDispatcher()
        result = await wt.ValidateFiveStepsForm().run(dispatcher, self.tracker(latest, events), DOMAIN)
        said += dispatcher.messages
        for event in result:
            if event.get("event") == "slot":
                self.slots[event["name"]] = event["value"]
        if any(e.get("name") == "requested_slot" and e.get("value") is None for e in result if e.get("event") == "slot"):
            self.form_active = False
            said += await self.said(wt.ActionFiveStepsEnd(), latest)
        else:
            said += await self.said(wt.ActionAskFsAnswer(), latest)
        self.log.append(said)
        return said

    def position(self) -> Optional[str]:
        """The question the champion's project is at, from the database."""
        repo = wt.get_repository()
        project = repo.project(repo.champion_for(self.sender).id, (self.slots["fs_state"] or {}).get("project"))
        return project.current_question if project else None

    def answers(self) -> Dict[str, Any]:
        """Saved answers of the current project: value, or "SKIPPED"."""
        repo = wt.get_repository()
        project_id = (self.slots["fs_state"] or {}).get("project")
        return {k: ("SKIPPED" if a.skipped else a.value) for k, a in repo.answers(int(project_id)).items()}


def texts(messages: List[Dict[str, Any]]) -> str:
    """Everything the bot said, as one string (responses shown as their names)."""
    return "\n".join(m.get("text") or m.get("response") or "" for m in messages)


def payloads(messages: List[Dict[str, Any]]) -> List[str]:
    """Every button payload offered."""
    return [b["payload"] for m in messages for b in m.get("buttons") or []]


async def new_project(chat: Chat, name: str = "Stroke clinic redesign", about: str = "Redesigning the stroke clinic with patients") -> None:
    """Start the walk and name a project."""
    said = await chat.send("/start_walkthrough")
    assert CONTENT.message("ask_name").split(".")[0] in texts(said)
    said = await chat.send(name)
    assert "In one line" in texts(said)
    said = await chat.send(about)
    assert f'saved "{name}"' in texts(said)
    assert chat.position() == "parts"


# Answers for the whole walk, in order (what a champion would type or tap).
WALK = [
    ("parts", ["Co-design", "Co-evaluation", "Done"], "co_design,co_evaluation"),
    ("from_start", ["Yes"], "yes"),
    ("equal_partner", ["No"], "no"),
    ("throughout", ["yes, from beginning to end"], "yes"),
    ("level_agreed", ["Not yet"], "not_yet"),
    ("expectations", ["Monthly meetings for a year, reading papers beforehand"], None),
    ("aim", ["Fewer missed stroke clinic appointments"], None),
    ("achieve", ["Patients on the steering group from the start"], None),
    ("evaluate_change", ["A survey before and after"], None),
    ("outcomes", ["Shorter waits and clearer letters"], None),
    ("skills", ["Being objective", "Being realistic", "Done"], "objective,realistic"),
    ("prepared", ["Yes, I will"], "yes"),
    ("support", ["engagement team and my project lead"], "engagement_team,project_lead"),
    ("lead_meetings", ["Every month"], "monthly"),
    ("review_aims", ["Check the aims at every third meeting"], None),
    ("you_said_we_did", ["Nothing yet"], None),
    ("evaluation", ["Patient survey and a staff focus group"], None),
    ("good_practice", ["A short talk at the peer support group"], None),
]


async def answer(chat: Chat, key: str) -> List[Dict[str, Any]]:
    """Answer question key as WALK says; returns what the last message got back."""
    said: List[Dict[str, Any]] = []
    for item_key, messages, _ in WALK:
        if item_key == key:
            for text in messages:
                said = await chat.send(text)
    return said


def expected(key: str) -> str:
    """The value WALK's answer to key is saved as."""
    for item_key, messages, value in WALK:
        if item_key == key:
            return value if value is not None else messages[-1]
    raise KeyError(key)


# --- the whole walk ------------------------------------------------------------------------------


async def test_whole_walk_saves_every_answer_and_finishes(stack):
    """Steps 1 to 5 with intros, the ladder level, tips, the reminder note, then the completion offer."""
    chat = Chat()
    await new_project(chat)
    seen = []
    for key, _, _ in WALK:
        assert chat.position() == key
        said = await answer(chat, key)
        seen.append(texts(said))
        assert chat.answers()[key] == expected(key)
    everything = "\n".join(texts(m) for m in chat.log)
    for step in CONTENT.steps:
        assert step.intro in everything
    # Ladder: yes / no / yes → intermediate, with the reason.
    assert "intermediate" in seen[3] and "you're not an equal partner" in seen[3]
    assert chat.answers()["level"] == "intermediate"
    # Tips for the skills the champion is least sure of, and only those.
    skills = CONTENT.question("skills")
    assert skills.option("objective").tip.strip() in seen[10]
    assert skills.option("realistic").tip.strip() in seen[10]
    assert skills.option("empathic").tip.strip() not in everything
    # Step 3 ends by saying reminders are coming, without pretending to set one.
    assert CONTENT.step(3).outro in seen[11]
    # The end: form stops, completion message offers the plan.
    assert not chat.form_active
    assert CONTENT.message("completed", name="Stroke clinic redesign") in seen[-1]
    assert "/show_plan" in payloads(chat.log[-1])
    assert chat.position() is None


async def test_each_question_has_buttons_for_its_options_and_to_stop(stack):
    """Choice questions offer their options as buttons; every question can be skipped or stopped."""
    chat = Chat()
    await new_project(chat)
    said = chat.log[-1]
    titles = [b["title"] for m in said for b in m.get("buttons") or []]
    assert {"Co-design", "Co-decision", "Co-delivery", "Co-evaluation", "Done", "Skip this one", "Stop for now"} <= set(titles)
    assert "Go back" not in titles  # nothing before the first question


# --- stop, resume, restart --------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["stop", "later", "I'll finish this tomorrow", "/pause_walkthrough"])
async def test_stopping_keeps_the_place_and_carry_on_resumes_there(stack, stop):
    """Stop mid-step (several ways); "carry on" later comes back to the same question."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start"):
        await answer(chat, key)
    said = await chat.send(stop, "pause_walkthrough", 0.95)
    assert not chat.form_active
    assert CONTENT.message("paused") in texts(said)
    assert chat.position() == "equal_partner"
    assert chat.answers() == {"parts": "co_design,co_evaluation", "from_start": "yes"}
    said = await chat.send("continue my plan", "continue_walkthrough", 0.9)
    assert chat.form_active
    assert "Welcome back" in texts(said)
    assert CONTENT.question("equal_partner").prompt in texts(said)


async def test_stop_team_messages_mid_walk_is_done_and_the_question_comes_again(stack):
    """"Stop messages from the team" mid-walk stops them at once, is not saved as an answer, and the walk goes on."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("please stop messages from the team", "opt_out_messages", 0.93)
    assert "utter_opted_out" in [m.get("response") for m in said]
    assert opted_out(SENDER) and chat.form_active
    assert CONTENT.question("parts").prompt in texts(said)
    assert chat.position() == "parts" and chat.answers() == {}


async def test_resume_after_a_restart_with_a_new_conversation(stack):
    """Days later, after the servers restarted and Rasa forgot the conversation, the walk continues."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout"):
        await answer(chat, key)
    await chat.send("I'll finish this tomorrow", "pause_walkthrough", 0.9)
    stack.restart()
    fresh = Chat()  # same sender, no slots: a new Rasa session
    offer = await fresh.said(wt.ActionOfferResume(), parse("hello", "greet", 0.99))
    assert "Stroke clinic redesign" in texts(offer) and "Step 1" in texts(offer)
    carry_on = [b["payload"] for b in offer[0]["buttons"]][0]
    said = await fresh.send(carry_on)
    assert CONTENT.question("level_agreed").prompt in texts(said)
    assert fresh.position() == "level_agreed"


async def test_offer_resume_says_nothing_without_an_unfinished_walk(stack):
    """A greeting with nothing to continue gets no offer."""
    assert await Chat().said(wt.ActionOfferResume(), parse("hi", "greet", 0.99)) == []


async def test_walk_survives_a_restart_in_the_middle_of_step_3(stack):
    """Stop the servers mid Step 3, start them again, finish: every earlier answer is intact."""
    chat = Chat()
    await new_project(chat)
    keys = [key for key, _, _ in WALK]
    for key in keys[: keys.index("skills")]:
        await answer(chat, key)
    await chat.send("Being empathic")  # half-way through the skills self-check
    before = chat.answers()
    assert before["skills"] == "empathic"
    # Restart: new engine on the same file, a new conversation with no memory.
    stack.restart()
    chat = Chat()
    said = await chat.send("/continue_walkthrough")
    assert "Step 3" in texts(said)
    assert chat.answers() == before
    said = await chat.send("Done")
    assert CONTENT.question("skills").option("empathic").tip.strip() in texts(said)
    for key in keys[keys.index("prepared"):]:
        await answer(chat, key)
    final = chat.answers()
    for key in keys[: keys.index("skills")]:
        assert final[key] == before[key]
    assert final["skills"] == "empathic"
    assert chat.position() is None and not chat.form_active


# --- skip, back, change an answer -------------------------------------------------------------------


async def test_skip_moves_on_and_is_shown_in_the_plan(stack):
    """Skip saves a "skipped" mark and moves on; the plan says (skipped)."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("/skip_question")
    assert chat.answers() == {"parts": "SKIPPED"}
    assert chat.position() == "from_start"
    assert CONTENT.question("from_start").prompt in texts(said)
    await chat.send("skip")
    assert chat.position() == "equal_partner"


async def test_back_shows_the_saved_answer_and_a_new_answer_replaces_it(stack):
    """Back goes to the previous question showing the saved answer; answering replaces it and moves on."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed", "expectations"):
        await answer(chat, key)
    said = await chat.send("go back", "go_back", 0.97)
    assert chat.position() == "expectations"
    assert "Monthly meetings for a year" in texts(said)
    assert "/skip_question" in payloads(said)  # "Keep my answer"
    await chat.send("Fortnightly meetings until March")
    assert chat.answers()["expectations"] == "Fortnightly meetings until March"
    assert chat.position() == "aim"
    # Keep my answer: go back, tap Keep, the answer stays.
    await chat.send("/go_back")
    await chat.send("/skip_question")
    assert chat.answers()["expectations"] == "Fortnightly meetings until March"
    assert chat.position() == "aim"


async def test_back_at_the_first_question(stack):
    """There's nothing before the first question: say so kindly and ask it again."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("/go_back")
    assert CONTENT.message("back_at_start") in texts(said)
    assert chat.position() == "parts"


async def test_change_an_earlier_answer_by_name_mid_walk(stack):
    """"change my answer to the aim" jumps to that question; answering it returns to the first open question."""
    chat = Chat()
    await new_project(chat)
    keys = [key for key, _, _ in WALK]
    for key in keys[: keys.index("skills")]:
        await answer(chat, key)
    said = await chat.send("change my answer to step 2 aim", "edit_answer", 0.9)  # 7 words, a text question
    assert chat.position() == "aim"
    assert "Fewer missed stroke clinic appointments" in texts(said)
    await chat.send("Nobody misses a stroke clinic appointment")
    assert chat.answers()["aim"] == "Nobody misses a stroke clinic appointment"
    assert chat.position() == "skills"


async def test_change_an_answer_from_the_plan_buttons(stack):
    """After finishing, "Change Step 2" then a question button jumps there; answering finishes again."""
    chat = Chat()
    await new_project(chat)
    for key, _, _ in WALK:
        await answer(chat, key)
    plan = await chat.send("/show_plan")
    change_step_2 = [p for p in payloads(plan) if '"fs_step":"2"' in p][0]
    said = await chat.send(change_step_2)
    assert chat.form_active
    outcome_button = [p for p in payloads(said) if '"fs_question":"outcomes"' in p][0]
    said = await chat.send(outcome_button)
    assert "Shorter waits and clearer letters" in texts(said)
    said = await chat.send("Shorter waits")
    assert chat.answers()["outcomes"] == "Shorter waits"
    assert not chat.form_active and "Well done" in texts(said)


# --- the middle of a step: questions, crisis, odd answers ----------------------------------------------


async def test_knowledge_question_mid_step_is_answered_then_the_question_comes_back(stack):
    """A question about tokenism mid-step gets the knowledge answer, then an offer to carry on."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    said = await chat.send("what does tokenism mean?", "ask_tokenism", 0.93)
    assert [m.get("response") for m in said][0] == "utter_tokenism"
    assert CONTENT.message("again") in texts(said)
    assert CONTENT.question("from_start").prompt in texts(said)
    assert chat.form_active and chat.position() == "from_start"
    assert "from_start" not in chat.answers()


async def test_tell_me_more_after_a_knowledge_answer_mid_walk(stack):
    """"Tell me more" after a mid-walk answer continues that answer; then the question comes back."""
    chat = Chat()
    await new_project(chat)
    await chat.send("what does tokenism mean?", "ask_tokenism", 0.93)
    history = [{"event": "bot", "text": "tokenism", "metadata": {"utter_action": "utter_tokenism"}}]
    said = await chat.send("/tell_me_more", history=history)
    assert said[0]["response"] == "utter_tokenism_more"
    assert CONTENT.question("parts").prompt in texts(said) and chat.position() == "parts"


async def test_carry_on_mid_walk_with_nothing_to_continue_asks_the_question_again(stack):
    """"carry on" (NLU: tell_me_more) mid-walk, with no answer to continue, just carries on with the walk."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("carry on", "tell_me_more", 0.95)
    assert "utter_no_more" not in [m.get("response") for m in said]
    assert CONTENT.question("parts").prompt in texts(said)


async def test_acronym_question_mid_step_uses_the_glossary(stack):
    """"what does PCN mean?" mid-walk is answered by the glossary's own action."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("what does PCN mean?", "ask_acronym", 0.95, acronym="PCN")
    assert said[0]["response"] == "utter_acronym_definition" and said[0]["term"] == "PCN"
    assert chat.position() == "parts" and chat.form_active


async def test_button_payload_for_a_topic_mid_walk_is_answered(stack):
    """A related-topic button (/ask_levels) tapped mid-walk is answered like a question."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    said = await chat.send("/ask_levels")
    assert said[0]["response"] == "utter_levels"
    assert chat.position() == "from_start"


async def test_a_statement_answer_is_not_mistaken_for_a_question(stack):
    """An answer NLU thinks is about a topic, but isn't a question, is saved as the answer."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed", "expectations"):
        await answer(chat, key)
    await chat.send("Avoid tokenism by involving patients early", "ask_tokenism", 0.9)
    assert chat.answers()["aim"] == "Avoid tokenism by involving patients early"


async def test_crisis_mid_step_gets_the_crisis_reply_first_and_pauses(stack):
    """A crisis message mid-step: the crisis reply comes first, the walk pauses, nothing is lost."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    said = await chat.send("I want to end it all", "crisis", 1.0)
    assert said[0]["response"] == "utter_crisis"
    assert not chat.form_active
    assert chat.position() == "from_start"
    assert chat.answers() == {"parts": "co_design,co_evaluation"}


@pytest.mark.parametrize(
    "text, reply",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * 2001, "too_long"),
        ("🙂🙂🙂", "unreadable"),
        ("?!...", "unreadable"),
        ("k", "unreadable"),
    ],
)
async def test_empty_huge_and_unreadable_answers_get_a_kind_reply_and_nothing_is_lost(stack, text, reply):
    """Odd answers to a text question: a kind reply, the question again, earlier answers intact."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    before = chat.answers()
    said = await chat.send(text)
    expected_reply = CONTENT.message(reply, max=CONTENT.limits["answer_max"])
    assert expected_reply in texts(said)
    assert CONTENT.question("expectations").prompt in texts(said)
    assert chat.answers() == before and chat.position() == "expectations"


async def test_an_answer_of_exactly_2000_characters_is_saved(stack):
    """The limit is inclusive."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    await chat.send("a" * 2000)
    assert chat.answers()["expectations"] == "a" * 2000


async def test_choice_question_wants_one_of_its_options(stack):
    """Typing something that isn't an option gets the options listed; nothing is saved."""
    chat = Chat()
    await new_project(chat)
    said = await chat.send("banana")
    assert "Co-design" in texts(said) and chat.answers() == {}
    said = await chat.send("Done")
    assert CONTENT.message("multi_nothing") in texts(said)


async def test_several_choices_typed_at_once(stack):
    """"co-design and co-delivery" picks both and moves on; "all of them" picks all four."""
    chat = Chat()
    await new_project(chat)
    await chat.send("co-design and co-delivery")
    assert chat.answers()["parts"] == "co_design,co_delivery"
    assert chat.position() == "from_start"
    await chat.send("/go_back")
    await chat.send("all of them")
    assert chat.answers()["parts"] == "co_design,co_decision,co_delivery,co_evaluation"


async def test_tapping_a_chosen_option_again_removes_it(stack):
    """Multi-choice taps toggle, and the running selection is shown."""
    chat = Chat()
    await new_project(chat)
    await chat.send("Co-design")
    said = await chat.send("Co-decision")
    assert "So far: Co-design, Co-decision" in texts(said)
    await chat.send("Co-design")
    assert chat.answers()["parts"] == "co_decision"


async def test_an_exclusive_option_finishes_at_once(stack):
    """"I feel sure of them all" is the whole answer: no tips, on to the next question."""
    chat = Chat()
    await new_project(chat)
    keys = [key for key, _, _ in WALK]
    for key in keys[: keys.index("skills")]:
        await answer(chat, key)
    await chat.send("Being empathic")
    said = await chat.send("I feel sure of them all")
    assert chat.answers()["skills"] == "none"
    assert "Tip" not in texts(said) and chat.position() == "prepared"


async def test_a_long_answer_nlu_calls_stop_is_checked_before_stopping(stack):
    """A long free-text answer that NLU thinks means "stop" is not taken as stop without asking."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    text = "We stop for now and meet again later"
    said = await chat.send(text, "pause_walkthrough", 0.91)
    assert chat.form_active and "Just checking" in texts(said)
    said = await chat.send("Save it as my answer")
    assert chat.answers()["expectations"] == text and chat.position() == "aim"


async def test_an_unrecognised_question_can_be_saved_as_the_answer(stack):
    """A free-text answer ending in "?" that isn't a known question is kept until the champion confirms."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed", "expectations"):
        await answer(chat, key)
    said = await chat.send("Fewer missed appointments?", "nlu_fallback", 0.3)
    assert "aim" not in chat.answers() and "Save it as my answer" in [b["title"] for m in said for b in m.get("buttons") or []]
    await chat.send("Save it as my answer")
    assert chat.answers()["aim"] == "Fewer missed appointments?"


async def test_thanks_mid_walk_is_not_saved_as_an_answer(stack):
    """"thanks" to a text question gets a short reply, not saved as the answer."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    said = await chat.send("thanks", "thank", 0.98)
    assert CONTENT.message("mid_walk_thanks") in texts(said)
    assert "expectations" not in chat.answers()


# --- the ladder ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers, level",
    [
        (("Yes", "Yes", "Yes"), "transformative"),
        (("Yes", "No", "Yes"), "intermediate"),
        (("No", "Yes", "Not sure"), "intermediate"),
        (("No", "No", "No"), "descriptive"),
        (("Not sure", "No", "No"), "descriptive"),
    ],
)
async def test_ladder_level_and_its_reason(stack, answers, level):
    """The three ladder answers place the project on the ladder, and the reply says why."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    said = []
    for text in answers:
        said = await chat.send(text)
    assert chat.answers()["level"] == level
    assert CONTENT.levels[level].title.lower() in texts(said)
    if level != "transformative":
        assert "still valuable" in texts(said)


async def test_going_back_on_the_ladder_changes_the_level(stack):
    """Changing a ladder answer recomputes the level."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    for text in ("Yes", "Yes", "Yes"):
        await chat.send(text)
    assert chat.answers()["level"] == "transformative"
    await chat.send("/go_back")  # to "throughout"
    await chat.send("No")
    assert chat.answers()["level"] == "intermediate"


# --- several projects --------------------------------------------------------------------------------


async def test_two_projects_are_kept_apart_and_the_champion_chooses(stack):
    """A second project has its own answers; starting again offers both unfinished projects."""
    chat = Chat()
    await new_project(chat, "Stroke clinic")
    await answer(chat, "parts")
    await chat.send("stop")
    await chat.send("/new_project")
    await chat.send("Diabetes leaflets")
    await chat.send("Rewriting the diabetes leaflets")
    await chat.send("Co-delivery")
    await chat.send("Done")
    await chat.send("stop")
    second = chat.answers()
    assert second == {"parts": "co_delivery"}
    said = await chat.send("/start_walkthrough")
    assert CONTENT.message("choose_project") in texts(said)
    titles = [b["title"] for m in said for b in m.get("buttons") or []]
    assert titles[:2] == ["Diabetes leaflets", "Stroke clinic"] and "A new project" in titles
    stroke = [b["payload"] for m in said for b in m.get("buttons") or [] if b["title"] == "Stroke clinic"][0]
    said = await chat.send(stroke)
    assert 'Welcome back to "Stroke clinic"' in texts(said)
    assert chat.answers() == {"parts": "co_design,co_evaluation"}


async def test_a_typed_project_name_chooses_it(stack):
    """The champion may type the project's name instead of tapping."""
    chat = Chat()
    await new_project(chat, "Stroke clinic")
    await chat.send("stop")
    await chat.send("/new_project")
    await chat.send("Diabetes leaflets")
    await chat.send("/pause_walkthrough")
    await chat.send("/start_walkthrough")
    said = await chat.send("stroke clinic")
    assert 'Welcome back to "Stroke clinic"' in texts(said)


async def test_someone_elses_project_cannot_be_chosen(stack):
    """A payload naming another champion's project is ignored."""
    owner = Chat("web-owner")
    await new_project(owner, "Private project")
    project_id = owner.slots["fs_state"]["project"]
    other = Chat("web-someone-else")
    said = await other.send(f'/continue_walkthrough{{"fs_project":"{project_id}"}}')
    assert "Private project" not in texts(said)
    assert CONTENT.message("ask_name").split(".")[0] in texts(said)
    plan = await other.said(wt.ActionShowPlan(), parse(f'/show_plan{{"fs_project":"{project_id}"}}'))
    assert "Private project" not in texts(plan)


@pytest.mark.parametrize("name, reply", [("x" * 81, "name_too_long"), ("!!!", "name_unreadable")])
async def test_project_names_are_checked(stack, name, reply):
    """Too long or unreadable names get a kind reply and no project is made."""
    chat = Chat()
    await chat.send("/start_walkthrough")
    said = await chat.send(name)
    assert CONTENT.message(reply, max=80) in texts(said)
    repo = wt.get_repository()
    assert repo.projects(repo.champion_for(SENDER).id) == []


async def test_about_is_limited_to_one_line(stack):
    """An over-long "about" gets a kind reply; a good one saves it and starts Step 1."""
    chat = Chat()
    await chat.send("/start_walkthrough")
    await chat.send("Stroke clinic")
    said = await chat.send("y" * 301)
    assert CONTENT.message("about_too_long", max=300) in texts(said)
    said = await chat.send("Making the clinic easier to reach")
    assert CONTENT.step(1).intro in texts(said)


# --- the plan ---------------------------------------------------------------------------------------


async def test_show_plan_gives_one_message_per_step_and_a_download(stack):
    """The plan: a header, five step messages with their answers, and a download link for the web chat."""
    chat = Chat()
    await new_project(chat)
    for key, _, _ in WALK:
        await answer(chat, key)
    said = await chat.send("/show_plan")
    step_messages = [m for m in said if (m.get("text") or "").startswith("Step ")]
    assert len(step_messages) == 5
    assert "Co-design, Co-evaluation" in step_messages[0]["text"]
    assert "Level of co-production: Intermediate" in step_messages[0]["text"]
    assert "Fewer missed stroke clinic appointments" in step_messages[1]["text"]
    for message in step_messages:
        assert len(message["text"].split()) <= 110  # phone-sized
    download = [m for m in said if (m.get("custom") or {}).get("download")][0]["custom"]["download"]
    project_id = chat.slots["fs_state"]["project"]
    assert download["url"] == f"/api/plan.md?sender_id=3f2a9c1e-champion&project={project_id}"
    assert download["label"] == "Download my plan"


async def test_show_plan_mid_walk_shows_it_and_keeps_the_place(stack):
    """"Show my plan" mid-walk stops the form, shows the plan so far, and the walk can carry on."""
    chat = Chat()
    await new_project(chat)
    await answer(chat, "parts")
    said = await chat.send("show my plan", "show_plan", 0.96)
    assert not chat.form_active
    assert "(not answered yet)" in texts(said)
    assert any('"fs_project"' in p for p in payloads(said))  # carry on this project
    assert chat.position() == "from_start"


async def test_show_plan_without_a_project_offers_to_start(stack):
    """No plan yet: say so and offer to start."""
    said = await Chat().send("/show_plan")
    assert CONTENT.message("no_plan") in texts(said)
    assert "/start_walkthrough" in payloads(said)


async def test_long_answers_are_shortened_in_chat_but_whole_in_the_download(stack):
    """The chat summary stays phone-sized; the Markdown file has every word."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    long_answer = "word " * 300 + "END"
    await chat.send(long_answer.strip())
    said = await chat.send("/pause_walkthrough")
    said = await chat.send("/show_plan")
    assert "END" not in texts(said) and "…" in texts(said)
    repo = wt.get_repository()
    champion = repo.champion_for(SENDER)
    project = repo.projects(champion.id)[0]
    from datetime import datetime

    markdown = plan_markdown(CONTENT, project, repo.answers(project.id), datetime(2026, 1, 2))
    assert "END" in markdown


async def test_pause_with_no_walk_running(stack):
    """"stop" outside the walk reassures that plans are saved."""
    said = await Chat().send("/pause_walkthrough")
    assert CONTENT.message("nothing_to_pause") in texts(said)


async def test_settings_are_read_on_first_use(monkeypatch, tmp_path):
    """DATABASE_URL and DATA_DIR come from the environment when first asked for, with the documented defaults."""
    from actions import settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "d"))
    settings.reset_settings()
    try:
        assert settings.get_settings().database_url == f"sqlite:///{tmp_path / 'd' / 'app.db'}"
        monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
        assert settings.get_settings().database_url.endswith("d/app.db")  # cached
        settings.reset_settings()
        assert settings.get_settings().database_url == "sqlite:///elsewhere.db"
    finally:
        settings.reset_settings()
    assert settings.load_settings({}).database_url == "sqlite:///data/app.db"


async def test_the_action_server_opens_and_migrates_database_url_itself(monkeypatch, tmp_path):
    """Without an injected repository the actions migrate and use DATABASE_URL."""
    from actions import settings

    url = f"sqlite:///{tmp_path / 'fresh' / 'app.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    settings.reset_settings()
    use_sessions(None)
    try:
        chat = Chat()
        await chat.send("/start_walkthrough")
        await chat.send("Own database")
        assert (tmp_path / "fresh" / "app.db").exists()
        repo = wt.get_repository()
        assert [p.name for p in repo.projects(repo.champion_for(SENDER).id)] == ["Own database"]
    finally:
        use_sessions(None)
        settings.reset_settings()


async def test_goodbye_and_stop_count_together_mid_walk(stack):
    """NLU unsure between goodbye and pause: together they clearly mean stop."""
    chat = Chat()
    await new_project(chat)
    latest_text = "i'll come back to it later"
    chat_said = await chat.send(latest_text, "goodbye", 0.64)
    # Without a ranking, 64 % is not enough: kept as a possible answer (a choice question: options listed).
    assert chat.form_active
    wt_message = wt.Message(text=latest_text, intent="goodbye", confidence=0.64,
                            ranking=[("goodbye", 0.64), ("pause_walkthrough", 0.3), ("greet", 0.06)])
    walk = wt.Walk(SENDER, chat.slots["fs_state"], DOMAIN)
    outcome = walk.handle(wt_message)
    assert outcome.stop == wt.STOP_PAUSE
    assert "Co-design" in texts(chat_said)


@pytest.fixture
def broken_database(tmp_path):
    """The actions' database has no tables (as if it were unreachable): every query fails."""
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    use_sessions(make_session_factory(engine))
    yield
    use_sessions(None)
    engine.dispose()


async def test_database_trouble_gets_a_kind_reply_and_no_form(broken_database):
    """Starting with the database down: a kind reply, and the form is not started."""
    chat = Chat()
    dispatcher = CollectingDispatcher()
    events = await wt.ActionStartWalkthrough().run(dispatcher, chat.tracker(parse("/start_walkthrough"), []), DOMAIN)
    assert CONTENT.message("trouble") in texts(dispatcher.messages)
    assert events == [{"event": "followup", "name": "action_listen", "timestamp": None}]
    assert await chat.said(wt.ActionOfferResume(), parse("hi", "greet", 0.99)) == []
    said = await chat.said(wt.ActionShowPlan(), parse("/show_plan"))
    assert CONTENT.message("trouble") in texts(said)


async def test_crisis_reply_comes_even_when_the_database_is_down(broken_database):
    """The crisis reply never depends on the database."""
    chat = Chat()
    chat.form_active = True
    chat.slots["fs_state"] = {"stage": "walk", "project": 1}
    said = await chat.send("I can't go on", "crisis", 1.0)
    assert said[0]["response"] == "utter_crisis" and not chat.form_active


async def test_an_answer_when_the_database_is_down_stops_the_walk_kindly(broken_database):
    """Mid-walk database trouble: say sorry and stop; the champion can carry on later."""
    chat = Chat()
    chat.form_active = True
    chat.slots["fs_state"] = {"stage": "walk", "project": 1}
    said = await chat.send("Fewer missed appointments")
    assert CONTENT.message("trouble") in texts(said) and not chat.form_active


async def test_a_short_answer_that_sounds_medical_is_an_answer(stack):
    """"Diabetes leaflets" is a project name or an answer, not a medical question; a real question gets the GP reply."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    said = await chat.send("should I stop taking my tablets?", "medical_question", 0.95)
    assert said[0]["response"] == "utter_medical" and "expectations" not in chat.answers()
    await chat.send("Diabetes leaflets", "medical_question", 0.95)
    assert chat.answers()["expectations"] == "Diabetes leaflets"


async def test_new_project_mid_walk_needs_no_check(stack):
    """"start a new project" mid-walk goes straight to naming it (the first project keeps its place)."""
    chat = Chat()
    await new_project(chat, "First")
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed"):
        await answer(chat, key)
    said = await chat.send("start a new project", "new_project", 0.97)
    assert CONTENT.message("ask_name").split(".")[0] in texts(said)


async def test_carry_on_after_tell_me_more_carries_on_with_the_walk(stack):
    """After a knowledge answer, "tell me more" continues it, but "carry on" continues the walk."""
    chat = Chat()
    await new_project(chat)
    await chat.send("what does tokenism mean?", "ask_tokenism", 0.93)
    said = await chat.send("carry on", "tell_me_more", 0.96)
    assert [m.get("response") for m in said if m.get("response")] == []
    assert CONTENT.question("parts").prompt in texts(said)


async def test_change_an_answer_by_name_while_on_a_free_text_question(stack):
    """Even where any text could be an answer, "change my answer to step 2 aim" is clearly a request."""
    chat = Chat()
    await new_project(chat)
    for key in ("parts", "from_start", "equal_partner", "throughout", "level_agreed", "expectations", "aim", "achieve"):
        await answer(chat, key)
    assert chat.position() == "evaluate_change"
    await chat.send("change my answer to step 2 aim", "edit_answer", 0.95)
    assert chat.position() == "aim" and "evaluate_change" not in chat.answers()
