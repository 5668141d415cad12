"""Conversation basics: action_tell_me_more, and the basics domain, NLU and rules files."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.basics import ActionTellMeMore, last_answer, next_part

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = ROOT / "domain" / "basics.yml"
NLU = ROOT / "nlu" / "basics.yml"
RULES = ROOT / "stories" / "rules_basics.yml"
MAX_WORDS = 80
MENU_PAYLOADS = [
    "/ask_what_is_coproduction",
    "/ask_five_steps",
    "/start_walkthrough",
    "/ask_champion_role",
    "/ask_glossary_help",
    "/ask_prepare_meeting",
    "/set_reminder",
    "/reflect",
    "/ask_examples",
]


def _user(text: str, intent: str) -> Dict[str, Any]:
    """A user event as the action server receives it."""
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent, "confidence": 0.9}}}


def _utter_action(name: str) -> List[Dict[str, Any]]:
    """The events an utter_ action leaves: the action, then the bot message naming it."""
    return [
        {"event": "action", "name": name},
        {"event": "bot", "text": f"(text of {name})", "metadata": {"utter_action": name}},
    ]


def _sent_by_custom_action(name: str) -> List[Dict[str, Any]]:
    """The events a custom action leaves when it sends a response: only a bot message."""
    return [{"event": "bot", "text": f"(text of {name})", "metadata": {"utter_action": name}}]


def _tracker(events: List[Dict[str, Any]]) -> Tracker:
    """A tracker whose history is `events` followed by the user asking for more."""
    events = events + [_user("tell me more", "tell_me_more"), {"event": "action", "name": "action_tell_me_more"}]
    return Tracker("test", {}, events[-2], events, False, None, {}, "action_listen")


def _domain(*responses: str) -> Dict[str, Any]:
    """A domain dict (as the action server receives it) with these responses."""
    return {"responses": {name: [{"text": f"text of {name}"}] for name in responses}}


async def _run(events: List[Dict[str, Any]], domain: Dict[str, Any]) -> List[Optional[str]]:
    """Runs action_tell_me_more and returns the responses it sent."""
    dispatcher = CollectingDispatcher()
    result = await ActionTellMeMore().run(dispatcher, _tracker(events), domain)
    assert result == []
    return [message.get("response") for message in dispatcher.messages]


def _basics_domain() -> Dict[str, Any]:
    """domain/basics.yml as loaded by YAML (anchors resolved)."""
    return yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))


async def test_more_after_a_topic_that_has_a_continuation():
    """After utter_levels, "tell me more" sends utter_levels_more."""
    events = [_user("what are the levels", "ask_levels")] + _utter_action("utter_levels")
    sent = await _run(events, _domain("utter_levels", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_levels_more"]


async def test_no_more_after_a_topic_without_a_continuation():
    """After an answer with no utter_X_more, the action says that's all."""
    events = [_user("what is tokenism", "ask_tokenism")] + _utter_action("utter_tokenism")
    sent = await _run(events, _domain("utter_tokenism", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_no_more"]


async def test_no_more_when_nothing_was_said_yet():
    """With no earlier bot utterance at all, the action says that's all."""
    events = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"}]
    sent = await _run(events, _domain("utter_levels", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_no_more"]


async def test_chain_continues_to_the_second_part():
    """After utter_levels_more (sent by this action), the next "more" sends utter_levels_more_2."""
    events = (
        [_user("what are the levels", "ask_levels")]
        + _utter_action("utter_levels")
        + [_user("more", "tell_me_more"), {"event": "action", "name": "action_tell_me_more"}]
        + _sent_by_custom_action("utter_levels_more")
    )
    domain = _domain("utter_levels", "utter_levels_more", "utter_levels_more_2", "utter_no_more")
    assert await _run(events, domain) == ["utter_levels_more_2"]


async def test_chain_ends_with_no_more():
    """When the continuation has no further part, the action says that's all (never repeats it)."""
    events = [_user("what are the levels", "ask_levels")] + _utter_action("utter_levels") + _sent_by_custom_action(
        "utter_levels_more"
    )
    sent = await _run(events, _domain("utter_levels", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_no_more"]


async def test_menu_and_fallback_replies_are_skipped():
    """The menu, the fallback and "that's all" are not answers: the answer before them is continued."""
    events = (
        [_user("what are the levels", "ask_levels")]
        + _utter_action("utter_levels")
        + _utter_action("utter_menu")
        + _utter_action("utter_default")
    )
    sent = await _run(events, _domain("utter_levels", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_levels_more"]


async def test_answers_sent_by_custom_actions_count():
    """A response a custom action sent (e.g. the glossary's) is the last answer too."""
    events = _utter_action("utter_levels") + _sent_by_custom_action("utter_acronym_definition")
    sent = await _run(events, _domain("utter_levels", "utter_levels_more", "utter_no_more"))
    assert sent == ["utter_no_more"]


async def test_missing_domain_is_handled():
    """If the domain was not sent, the action still answers (that's all) rather than failing."""
    events = [_user("what are the levels", "ask_levels")] + _utter_action("utter_levels")
    assert await _run(events, {}) == ["utter_no_more"]


def test_action_name():
    """The action's name matches the one declared in domain/basics.yml."""
    assert ActionTellMeMore().name() == "action_tell_me_more"
    actions = _basics_domain()["actions"]
    assert {"action_tell_me_more": {"send_domain": True}} in actions


@pytest.mark.parametrize(
    "name, expected",
    [
        ("utter_levels", "utter_levels_more"),
        ("utter_levels_more", "utter_levels_more_2"),
        ("utter_levels_more_2", "utter_levels_more_3"),
        ("utter_five_steps_more_9", "utter_five_steps_more_10"),
    ],
)
def test_next_part(name, expected):
    """X -> X_more -> X_more_2 -> X_more_3."""
    assert next_part(name) == expected


def test_last_answer_ignores_non_utter_events():
    """Slots, custom actions and user turns are not answers."""
    events = [
        {"event": "slot", "name": "acronym", "value": "ICB"},
        {"event": "action", "name": "action_listen"},
        {"event": "bot", "text": "hello", "metadata": {}},
        _user("hi", "greet"),
    ]
    assert last_answer(events) is None


def test_every_basics_response_has_a_source_and_fits_a_phone():
    """Each response names its source and stays within ~80 words."""
    responses = _basics_domain()["responses"]
    for name, variants in responses.items():
        for variant in variants:
            assert variant.get("metadata", {}).get("source"), name
            assert len(variant["text"].split()) <= MAX_WORDS, name


def test_menu_buttons():
    """The menu and the replies that offer it carry the topic buttons and "Plan my project"."""
    responses = _basics_domain()["responses"]
    for name in ["utter_menu", "utter_greet", "utter_help", "utter_out_of_scope", "utter_no_more", "utter_default"]:
        payloads = [button["payload"] for button in responses[name][0]["buttons"]]
        assert payloads == MENU_PAYLOADS, name


def test_crisis_reply_signposts_first():
    """The crisis reply starts with 999, then NHS 111 and Samaritans 116 123, and has no buttons."""
    crisis = _basics_domain()["responses"]["utter_crisis"][0]
    text = crisis["text"]
    assert text.index("999") < text.index("NHS 111") < text.index("116 123")
    assert text.index("116 123") < text.index("you matter")
    assert "Samaritans" in text
    assert crisis["metadata"]["source"] == "public"
    assert "buttons" not in crisis


def test_medical_reply_signposts():
    """The medical reply declines advice and points to the GP, NHS 111 and 999."""
    medical = _basics_domain()["responses"]["utter_medical"][0]["text"]
    assert "can't give medical advice" in medical
    for needle in ["GP", "NHS 111", "999"]:
        assert needle in medical


def test_every_intent_has_examples_and_a_rule():
    """Every basics intent has training examples and a rule."""
    intents = set(_basics_domain()["intents"])
    nlu = yaml.safe_load(NLU.read_text(encoding="utf-8"))["nlu"]
    trained = {item["intent"] for item in nlu if "intent" in item}
    assert trained == intents
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))["rules"]
    ruled = {step["intent"] for rule in rules for step in rule["steps"] if "intent" in step}
    assert intents <= ruled
    assert "nlu_fallback" in ruled


def test_every_continuation_has_a_base_answer():
    """Across the whole domain, each utter_X_more (or _more_N) continues a response that exists."""
    names = set()
    for path in (ROOT / "domain").glob("*.yml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        names.update((data.get("responses") or {}).keys())
    for name in names:
        if "_more" in name and name.startswith("utter_") and name != "utter_no_more":
            base = name.rsplit("_more", 1)[0]
            previous = [n for n in names if next_part(n) == name]
            assert previous, f"{name} continues nothing (no {base})"
