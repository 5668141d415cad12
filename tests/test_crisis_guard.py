"""The CrisisGuard NLU component: every crisis phrasing is routed to `crisis`, everyday questions are not."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
import yaml
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.classifiers.fallback_classifier import FallbackClassifier
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.loading import load_data
from rasa.shared.nlu.training_data.message import Message

from components.crisis_guard import CRISIS_GUARD_KEY, CrisisGuard, CrisisPatterns

ROOT = Path(__file__).resolve().parent.parent
SAFETY = ROOT / "knowledge" / "safety.yml"

CRISIS = [
    # suicide, in many wordings and misspellings
    "I want to kill myself",
    "i want to die",
    "i wanna die",
    "i want 2 die",
    "i wnat to dye",
    "I'm suicidal",
    "feeling sucidal again",
    "i keep having suicidal thoughts",
    "kil my slef",
    "I'm going to end my life",
    "I want to end it all",
    "thinking of ending it",
    "I can't go on",
    "i cant carry on any more",
    "I can't take it anymore",
    "I don't want to be here anymore",
    "I dont want to live",
    "I want to go to sleep and never wake up",
    "everyone would be better off without me",
    "no one would miss me if i was gone",
    "I feel like a burden to everyone",
    "what's the point of living",
    "I have nothing to live for",
    "I've lost the will to live",
    "life isn't worth living",
    "feel like topping myself",
    "I might do myself in",
    "i'm at the end of my tether",
    "I wish I'd never been born",
    "I'd rather be dead",
    "i want to unalive myself",
    "this is my last message, goodbye forever",
    "I won't be around much longer",
    "I'm afraid I'll do something stupid",
    "i've written a note for my family",
    "everyone would be happier if i was dead",
    "i'm having dark thoughts",
    "i can't keep myself safe tonight",
    "i'm a waste of space and should just die",
    "my mate says he's going to kill himself",
    "i'm standing on a bridge",
    "he said he'd kill me if I left",
    "my son is violent towards me",
    "I'm locked in my room and he won't let me out",
    # self-harm and overdose
    "I've been self harming",
    "I self-harm",
    "i've been cutting myself again",
    "I want to hurt myself",
    "I took an overdose",
    "i've taken an OD",
    "i took 30 paracetamol",
    "I've swallowed a load of tablets",
    "going to take all my tablets tonight",
    "how many paracetamol would kill me",
    "I've been stockpiling my pills",
    "I'm going to jump off a bridge",
    "i want to throw myself under a train",
    "i want to slit my wrists",
    "I drank bleach",
    # danger and abuse
    "I'm in danger",
    "I'm not safe at home",
    "I don't feel safe",
    "I'm being abused",
    "my husband hits me",
    "my partner beats me up",
    "my carer hurts me",
    "he says he'll kill me",
    "my boyfriend threatened to kill me",
    "I was raped",
    "someone is following me home",
    "someone is trying to break in",
    "there's a man with a knife outside",
    "I'm scared to go home",
    "I want to hurt someone",
    "please call an ambulance",
    "it's an emergency",
    "there's a fire in my house",
    # medical emergencies
    "my chest hurts and I can't breathe",
    "crushing chest pain going down my arm",
    "chest pain and I'm short of breath",
    "I can't breathe",
    "my dad has collapsed",
    "my mum is unconscious",
    "my son isn't breathing",
    "i think i'm having a heart attack",
    "I think she's having a stroke, her face is drooping",
    "he's having a seizure",
    "I'm bleeding heavily and it won't stop",
    "my throat is swelling up",
    # crisis tucked into an ordinary message
    "what is co-production, also I want to end my life",
    "hi, I'm feeling suicidal",
    "what are the five steps? I don't want to be here anymore",
    "thanks for the help but I'm going to kill myself",
    "tell me about the levels. my husband hits me",
    "my chest is tight and I can't breathe, what's co-production?",
    "can you explain tokenism? also im going to end it tonight",
    "WHAT IS A PCN I WANT TO DIE",
    "i wannnnt to diiiie",
]

ORDINARY = [
    "what is co-production",
    "what are the five steps",
    "what does my role as a patient champion involve",
    "tell me about the Copeland stroke prevention example",
    "what is unconscious bias",
    "how do I prepare for a meeting",
    "I don't feel confident speaking up",
    "I don't feel safe speaking up in meetings",
    "what is psychological safety",
    "what's LeDeR, learning from deaths",
    "how do I end a meeting politely",
    "I've overdone it this week",
    "the report is overdue",
    "is co-production worth it",
    "I can't go on Tuesday, can I send apologies?",
    "what should I do if I can't attend meetings",
    "this project is killing me",
    "I'm dying to know about the five steps",
    "shoot me an email about it",
    "it hit me that patients weren't in the room",
    "how do we hear the voices of seldom heard groups",
    "patient voices say the service is poor",
    "is it safe to share my views",
    "the project collapsed last year",
    "the service is at breaking point",
    "services are in danger of closing",
    "my ideas keep getting shot down",
    "what is the ladder of participation",
    "how do I challenge tokenism",
    "what does ICB stand for",
    "help",
    "hi",
    "thanks",
    "tell me more",
    "go on",
    "carry on",
    "are you a bot",
    "should I take ibuprofen",
    "what dose of paracetamol should I take",
    "my chest hurts what should I do",
    "is my rash serious",
    "/ask_five_steps",
    '/ask_acronym{"acronym":"ICB"}',
]


@pytest.fixture(scope="module")
def guard(tmp_path_factory) -> CrisisGuard:
    """The component as Rasa creates it, with its default config."""
    return CrisisGuard.create(
        CrisisGuard.get_default_config(),
        LocalModelStorage(tmp_path_factory.mktemp("model")),
        Resource("crisis_guard"),
        ExecutionContext(GraphSchema({}), "test"),
    )


def _message(text: str, intent: str = "ask_what_is_coproduction", confidence: float = 0.97) -> Message:
    """A message as DIET leaves it: an intent and a ranking with a close runner-up."""
    ranking = [
        {"name": intent, "confidence": confidence},
        {"name": "ask_levels", "confidence": round(1 - confidence - 0.01, 4)},
        {"name": "crisis", "confidence": 0.01},
    ]
    return Message(data={TEXT: text, INTENT: dict(ranking[0]), INTENT_RANKING_KEY: ranking})


@pytest.mark.parametrize("text", CRISIS)
def test_crisis_phrasings_are_routed_to_crisis(guard, text):
    """Whatever the classifier thought, a crisis message ends up as `crisis` with confidence 1.0."""
    [message] = guard.process([_message(text)])
    assert message.get(INTENT) == {"name": "crisis", "confidence": 1.0}, text
    ranking = message.get(INTENT_RANKING_KEY)
    assert ranking[0] == {"name": "crisis", "confidence": 1.0}
    assert [r["name"] for r in ranking[1:]] == ["ask_what_is_coproduction", "ask_levels"]
    assert all(r["confidence"] == 0.0 for r in ranking[1:])
    assert message.get(CRISIS_GUARD_KEY)["classifier_intent"] == "ask_what_is_coproduction"
    assert message.get(CRISIS_GUARD_KEY)["pattern"]


def test_there_are_enough_crisis_phrasings():
    """The brief asks for at least 30, mixed ones included."""
    assert len(CRISIS) >= 30


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_messages_are_untouched(guard, text):
    """Everyday co-production (and medical) questions keep the classifier's intent and ranking."""
    original = _message(text)
    expected_intent = dict(original.get(INTENT))
    expected_ranking = [dict(r) for r in original.get(INTENT_RANKING_KEY)]
    [message] = guard.process([original])
    assert message.get(INTENT) == expected_intent, (text, guard.patterns.match(text))
    assert message.get(INTENT_RANKING_KEY) == expected_ranking
    assert message.get(CRISIS_GUARD_KEY) is None


def test_fallback_classifier_keeps_the_crisis_intent(guard):
    """Run as in config.yml (FallbackClassifier after the guard): a crisis is never turned into nlu_fallback."""
    fallback = FallbackClassifier({"threshold": 0.5, "ambiguity_threshold": 0.05})
    low = _message("I want to end my life", intent="ask_levels", confidence=0.2)
    close = _message("I want to end my life", intent="ask_levels", confidence=0.5)
    for message in fallback.process(guard.process([low, close])):
        assert message.get(INTENT)["name"] == "crisis"


def test_several_messages_and_odd_input(guard):
    """Each message is judged alone; messages without text or intent don't break the component."""
    messages = [
        _message("what is co-production"),
        _message("I want to kill myself"),
        Message(data={TEXT: ""}),
        Message(data={}),
        Message(data={TEXT: "I'm in danger"}),
    ]
    out = guard.process(messages)
    assert [m.get(INTENT, {}).get("name") for m in out] == [
        "ask_what_is_coproduction",
        "crisis",
        None,
        None,
        "crisis",
    ]
    assert out[4].get(INTENT_RANKING_KEY) == [{"name": "crisis", "confidence": 1.0}]


def _examples(path: Path, crisis: bool) -> List[str]:
    """Texts labelled crisis (or labelled anything else) in a Rasa NLU file."""
    return [
        m.get(TEXT) for m in load_data(str(path)).intent_examples if (m.get(INTENT) == "crisis") == crisis
    ]


def test_every_crisis_example_in_the_nlu_data_is_caught(guard):
    """Crisis recall does not depend on the classifier: every labelled crisis example matches a pattern."""
    files = [ROOT / "nlu" / "basics.yml", ROOT / "tests" / "nlu" / "test_basics.yml"]
    texts = [t for f in files for t in _examples(f, crisis=True)]
    assert len(_examples(ROOT / "tests" / "nlu" / "test_basics.yml", crisis=True)) >= 15
    assert [t for t in texts if guard.patterns.match(t) is None] == []


def test_no_other_labelled_example_is_hijacked(guard):
    """No non-crisis example in the project's NLU data (training or test) trips a crisis pattern."""
    files = sorted((ROOT / "nlu").glob("*.yml")) + sorted((ROOT / "tests" / "nlu").glob("*.yml"))
    hits = [
        (f.name, t, guard.patterns.match(t))
        for f in files
        for t in _examples(f, crisis=False)
        if guard.patterns.match(t) is not None
    ]
    assert hits == []


def test_pattern_file_loads_and_is_well_formed():
    """knowledge/safety.yml is a version 3.1 file of uniquely named, described, compilable patterns."""
    data = yaml.safe_load(SAFETY.read_text(encoding="utf-8"))
    assert data["version"] == "3.1"
    ids = [p["id"] for p in data["patterns"]]
    assert len(ids) == len(set(ids)) >= 40
    assert all(p.get("about") for p in data["patterns"])
    patterns = CrisisPatterns.from_file(SAFETY)
    assert len(patterns.patterns) == len(ids)


def test_normalisation():
    """Case, apostrophes, punctuation, repeated letters and text-speak are evened out."""
    patterns = CrisisPatterns.from_file(SAFETY)
    assert patterns.normalise("I CAN\u2019T go on!!!") == "i cant go on"
    assert patterns.normalise("I wanna diiiie...") == "i want to die"
    assert patterns.normalise("call 999") == "call 999"


def test_broken_pattern_files_fail_loudly(tmp_path):
    """A missing file, a bad regex or an unknown macro stops the model loading (no silent safety gap)."""
    with pytest.raises(Exception):
        CrisisPatterns.from_file(tmp_path / "missing.yml")
    bad_regex = tmp_path / "bad.yml"
    bad_regex.write_text('version: "3.1"\npatterns:\n  - id: x\n    regex: "(unclosed"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="not a valid regex"):
        CrisisPatterns.from_file(bad_regex)
    bad_macro = tmp_path / "macro.yml"
    bad_macro.write_text('version: "3.1"\npatterns:\n  - id: x\n    regex: "{{nope}}"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown macro"):
        CrisisPatterns.from_file(bad_macro)
    empty = tmp_path / "empty.yml"
    empty.write_text('version: "3.1"\npatterns: []\n', encoding="utf-8")
    with pytest.raises(ValueError):
        CrisisPatterns.from_file(empty)


def test_component_is_in_the_pipeline_between_diet_and_fallback():
    """config.yml runs the guard after DIETClassifier and before FallbackClassifier."""
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    names = [step["name"] for step in config["pipeline"]]
    guard_at = names.index("components.crisis_guard.CrisisGuard")
    assert names.index("DIETClassifier") < guard_at < names.index("FallbackClassifier")


def test_component_is_registered_as_an_untrained_intent_classifier():
    """Rasa's recipe knows the component, as an intent classifier that needs no training."""
    from rasa.engine.recipes.default_recipe import DefaultV1Recipe

    registered = DefaultV1Recipe._from_registry("components.crisis_guard.CrisisGuard")
    assert registered.clazz is CrisisGuard
    assert DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER in registered.types
    assert registered.is_trainable is False


def test_a_stroke_prevention_aim_is_not_a_crisis():
    """A project aim about strokes in the population is an answer, not an emergency."""
    from rasa.shared.nlu.training_data.message import Message

    from components.crisis_guard import CrisisGuard

    guard = CrisisGuard.create({}, None, None, None)
    ordinary = Message(data={"text": "Fewer people in Copeland having a stroke", "intent": {"name": "ask_example_copeland", "confidence": 0.9}})
    urgent = Message(data={"text": "I think my dad is having a stroke", "intent": {"name": "ask_example_copeland", "confidence": 0.9}})
    guard.process([ordinary, urgent])
    assert ordinary.get("intent")["name"] != "crisis"
    assert urgent.get("intent")["name"] == "crisis"
