"""The jargon buster: action_explain_acronym and the glossary data it reads."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions import glossary
from actions.glossary import ActionExplainAcronym, find_entry, normalise

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = ROOT / "knowledge" / "glossary.yml"
NLU = ROOT / "nlu" / "glossary.yml"
DOMAIN = ROOT / "domain" / "glossary.yml"
SEEDS_DIR = Path(os.environ.get("SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
MAX_MEANING_WORDS = 35


def _entries() -> List[Dict[str, Any]]:
    """The glossary entries as stored."""
    return yaml.safe_load(GLOSSARY.read_text(encoding="utf-8"))["glossary"]


def _lookup_table() -> List[str]:
    """Elements of the `acronym` lookup table in nlu/glossary.yml."""
    data = yaml.safe_load(NLU.read_text(encoding="utf-8"))
    tables = [item for item in data["nlu"] if item.get("lookup") == "acronym"]
    assert len(tables) == 1
    return [
        line.strip()[2:].strip()
        for line in tables[0]["examples"].splitlines()
        if line.strip().startswith("- ")
    ]


def _tracker(entities: Optional[List[Dict[str, Any]]] = None, slot: Any = None, text: str = "") -> Tracker:
    """A tracker whose latest message is an ask_acronym with the given entities."""
    return Tracker(
        sender_id="test",
        slots={"acronym": slot},
        latest_message={
            "text": text,
            "intent": {"name": "ask_acronym", "confidence": 1.0},
            "entities": entities or [],
        },
        events=[],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )


def _acronym(value: Any, extractor: str = "DIETClassifier") -> Dict[str, Any]:
    """An `acronym` entity as the NLU pipeline reports it."""
    return {"entity": "acronym", "value": value, "extractor": extractor}


async def _run(tracker: Tracker):
    """Run the action; return (messages, events)."""
    dispatcher = CollectingDispatcher()
    events = await ActionExplainAcronym().run(dispatcher, tracker, {})
    return dispatcher.messages, events


def _definition(messages, term: str) -> Dict[str, Any]:
    """The single utter_acronym_definition message, checked to be for `term`."""
    assert len(messages) == 1
    message = messages[0]
    assert message["response"] == "utter_acronym_definition"
    assert message["term"] == term
    entry = next(e for e in _entries() if e["term"] == term)
    assert message["expansion"] == entry["expansion"]
    assert message["meaning"] == entry["meaning"]
    assert message["metadata"] == {"source": entry["source"]}
    return message


# --- The action -------------------------------------------------------------


def test_action_name():
    """The class is registered under the name the domain uses."""
    assert ActionExplainAcronym().name() == "action_explain_acronym"


async def test_known_term():
    """'PCN' is explained with its expansion and meaning, and the slot is set."""
    messages, events = await _run(_tracker([_acronym("PCN")], text="what does PCN mean"))
    message = _definition(messages, "PCN")
    assert message["expansion"] == "Primary Care Network"
    assert events == [SlotSet("acronym", "PCN")]


async def test_lower_case():
    """'leder' finds LeDeR."""
    messages, events = await _run(_tracker([_acronym("leder")]))
    _definition(messages, "LeDeR")
    assert events == [SlotSet("acronym", "LeDeR")]


@pytest.mark.parametrize("typed, term", [("PPGs", "PPG"), ("ppg's", "PPG"), ("GUMs", "GUM"), ("ICSs", "ICS")])
async def test_plural(typed, term):
    """Plurals and possessives find the singular term."""
    messages, events = await _run(_tracker([_acronym(typed)]))
    _definition(messages, term)
    assert events == [SlotSet("acronym", term)]


@pytest.mark.parametrize(
    "typed, term",
    [("a and e", "A&E"), ("a&e", "A&E"), ("covid", "COVID-19"), ("Covid-19", "COVID-19"),
     ("CNTW", "NTW"), ("PCN?", "PCN"), ("'ICB'", "ICB"), ("LGBTQ+", "LGBTQ"), ("P.C.N.", "PCN")],
)
async def test_alias_and_punctuation(typed, term):
    """Aliases, stray punctuation and dotted spellings find the entry."""
    messages, _ = await _run(_tracker([_acronym(typed)]))
    _definition(messages, term)


async def test_pals_is_not_a_plural():
    """PALS is its own entry, not the plural of something else."""
    messages, _ = await _run(_tracker([_acronym("pals")]))
    _definition(messages, "PALS")


async def test_ccg_mentions_icbs():
    """The CCG answer says CCGs were replaced by Integrated Care Boards in July 2022."""
    messages, _ = await _run(_tracker([_acronym("CCGs")]))
    meaning = _definition(messages, "CCG")["meaning"]
    assert "Integrated Care Boards (ICBs)" in meaning and "July 2022" in meaning


async def test_unknown_term():
    """An acronym not in the glossary gets the honest 'I don't know' reply, never a guess."""
    messages, events = await _run(_tracker([_acronym("XYZQ")], text="what does XYZQ mean"))
    assert len(messages) == 1
    assert messages[0]["response"] == "utter_acronym_unknown"
    assert "term" not in messages[0] and "XYZQ" not in repr(messages[0])
    assert events == [SlotSet("acronym", None)]


async def test_missing_entity_asks_which():
    """No acronym in the message and none in the slot: ask which one."""
    messages, events = await _run(_tracker([], text="what does it mean"))
    assert [m["response"] for m in messages] == ["utter_ask_which_acronym"]
    assert events == [SlotSet("acronym", None)]


async def test_falls_back_to_slot():
    """No entity in the latest message: the `acronym` slot is used."""
    messages, events = await _run(_tracker([], slot="icb"))
    _definition(messages, "ICB")
    assert events == [SlotSet("acronym", "ICB")]


async def test_entity_beats_slot():
    """The latest message's entity wins over an older slot value."""
    messages, _ = await _run(_tracker([_acronym("PPI")], slot="ICB"))
    _definition(messages, "PPI")


async def test_duplicate_entities_from_two_extractors():
    """DIET and the regex extractor both finding 'PCN' gives one answer."""
    entities = [_acronym("PCN"), _acronym("pcn", "RegexEntityExtractor")]
    messages, _ = await _run(_tracker(entities))
    _definition(messages, "PCN")


async def test_two_terms_and_an_unknown():
    """Known terms are each explained; an unknown one beside them is skipped, not guessed."""
    entities = [_acronym("CCG"), _acronym("XYZQ"), _acronym("ICB")]
    messages, events = await _run(_tracker(entities))
    assert [m["term"] for m in messages] == ["CCG", "ICB"]
    assert all(m["response"] == "utter_acronym_definition" for m in messages)
    assert events == [SlotSet("acronym", "ICB")]


async def test_at_most_three_terms():
    """A flood of acronyms gets at most three answers."""
    entities = [_acronym(t) for t in ["CCG", "ICB", "ICS", "ICP", "PCN", "PPG"]]
    messages, _ = await _run(_tracker(entities))
    assert len(messages) == glossary.MAX_TERMS_PER_MESSAGE


@pytest.mark.parametrize(
    "value",
    [
        "PCN" * 10_000,
        "<script>alert('PCN')</script>",
        "<b>PCN</b>",
        "[PCN](http://example.invalid)",
        "PCN 🙂",
        "🙂",
        "{term}",
        "P\u0000CN",
        "ＰＣＮ＜",
        "   ",
        12345,
        None,
        ["PCN"],
        {"value": "PCN"},
    ],
)
async def test_hostile_values_are_unknown(value):
    """Huge strings, markup, emoji and non-strings are treated as unknown, and never echoed."""
    messages, events = await _run(_tracker([_acronym(value)]))
    assert len(messages) == 1
    assert messages[0]["response"] in {"utter_acronym_unknown", "utter_ask_which_acronym"}
    assert "script" not in repr(messages) and "PCN" not in repr(messages)
    assert events == [SlotSet("acronym", None)]


async def test_hostile_slot_value_is_unknown():
    """A hostile value that reached the slot is also treated as unknown."""
    messages, _ = await _run(_tracker([], slot="<img src=x onerror=alert(1)>"))
    assert [m["response"] for m in messages] == ["utter_acronym_unknown"]


def test_normalise():
    """Normalisation: case, punctuation, full-width letters; None for non-acronyms."""
    assert normalise("ppg's") == "PPGS"
    assert normalise("A&E") == "AE"
    assert normalise("ＰＣＮ") == "PCN"
    assert normalise("x" * 41) is None
    assert normalise("<b>") is None
    assert normalise("") is None
    assert find_entry("pcn")["term"] == "PCN"
    assert find_entry("nope") is None


def test_glossary_is_loaded_once(monkeypatch):
    """The file is read on first use only, then cached."""
    calls = []
    real = glossary.load_glossary

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(glossary, "_index", None)
    monkeypatch.setattr(glossary, "load_glossary", counting)
    assert find_entry("ICB") and find_entry("PCN") and find_entry("nope") is None
    assert len(calls) == 1


# --- The data ----------------------------------------------------------------


def test_entries_are_complete():
    """Every entry has a term, expansion, one-line meaning of at most 35 words and a source."""
    for entry in _entries():
        for field in ("term", "expansion", "meaning", "source"):
            assert isinstance(entry.get(field), str) and entry[field].strip(), (entry, field)
        assert "\n" not in entry["meaning"].strip(), entry["term"]
        assert len(entry["meaning"].split()) <= MAX_MEANING_WORDS, entry["term"]
        assert set(entry) <= {"term", "expansion", "meaning", "source", "aliases", "in_lookup"}, entry["term"]
        assert entry.get("in_lookup", True) in (True, False), entry["term"]


def test_no_contacts_or_links_in_meanings():
    """No URL, e-mail address or phone number except NHS 111 and 999."""
    for entry in _entries():
        text = entry["meaning"] + " " + entry["expansion"]
        assert not re.search(r"https?://|www\.|@|\.uk\b|\.org\b|\.com\b", text), entry["term"]
        numbers = re.findall(r"\b\d[\d ]{5,}\d\b", text)
        assert numbers == [], entry["term"]


def test_ccg_statements_mention_icbs():
    """Wherever CCGs come up, the meaning says they were replaced by ICBs in July 2022."""
    for entry in _entries():
        if re.search(r"\bCCGs?\b|Clinical Commissioning Group", entry["meaning"]):
            said = f'{entry["term"]} stands for {entry["expansion"]}. {entry["meaning"]}'
            assert "Integrated Care Board" in said, entry["term"]
            assert "July 2022" in entry["meaning"], entry["term"]


def test_terms_and_aliases_are_unique():
    """No two entries share a term or alias (after normalisation)."""
    owner: Dict[str, str] = {}
    for entry in _entries():
        for name in [entry["term"], *(entry.get("aliases") or [])]:
            key = normalise(name)
            assert key, name
            assert owner.setdefault(key, entry["term"]) == entry["term"], name


def _names(entry: Dict[str, Any]) -> List[str]:
    """An entry's term and aliases."""
    return [entry["term"], *(entry.get("aliases") or [])]


def test_lookup_table_matches_glossary():
    """Every term and alias is in the `acronym` lookup table (bar `in_lookup: false`), and nothing else."""
    in_glossary = {
        name.lower() for entry in _entries() if entry.get("in_lookup", True) for name in _names(entry)
    }
    in_lookup = [name.lower() for name in _lookup_table()]
    assert len(in_lookup) == len(set(in_lookup)), "duplicate lookup entries"
    assert set(in_lookup) - in_glossary == set()
    assert in_glossary - set(in_lookup) == set()


def test_everyday_word_acronyms_are_trained():
    """Terms left out of the lookup table are annotated in the training data, so DIET learns them."""
    from rasa.shared.nlu.training_data.loading import load_data

    annotated = {
        entity["value"].lower()
        for message in load_data(str(NLU)).intent_examples
        for entity in message.get("entities") or []
        if entity["entity"] == "acronym"
    }
    for entry in _entries():
        if not entry.get("in_lookup", True):
            assert entry["term"].lower() in annotated, entry["term"]


def test_sources_exist():
    """Every source is 'public' or a seed file that exists."""
    assert SEEDS_DIR.is_dir(), f"seeds folder not found: {SEEDS_DIR} (set SEEDS_DIR)"
    for entry in _entries():
        source = entry["source"]
        assert source == "public" or (SEEDS_DIR / source).is_file(), (entry["term"], source)


def _mentions(seed_text: str, entry: Dict[str, Any]) -> bool:
    """The seed mentions the term (any case, plural allowed) or its full name."""
    flat = re.sub(r"\s+", " ", seed_text)
    term = re.escape(entry["term"])
    if re.search(rf"(?<![A-Za-z0-9]){term}(?:s|'s)?(?![A-Za-z0-9])", flat, re.IGNORECASE):
        return True
    expansion = re.sub(r"\s*\(.*?\)", "", entry["expansion"]).strip()
    return expansion.lower() in flat.lower()


def test_seed_sourced_terms_appear_in_their_seed():
    """A term credited to a seed really appears in that seed's text."""
    for entry in _entries():
        if entry["source"] == "public":
            continue
        text = (SEEDS_DIR / entry["source"]).read_text(encoding="utf-8")
        assert _mentions(text, entry), (entry["term"], entry["source"])


def test_domain_responses():
    """The responses the action sends exist, use the template variables and carry a source."""
    responses = yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))["responses"]
    for name in ("utter_acronym_definition", "utter_acronym_unknown",
                 "utter_ask_which_acronym", "utter_glossary_help"):
        assert name in responses, name
        for variant in responses[name]:
            assert variant["metadata"]["source"], name
            assert len(variant["text"].split()) <= 80, name
    text = responses["utter_acronym_definition"][0]["text"]
    assert {"{term}", "{expansion}", "{meaning}"} <= set(re.findall(r"\{\w+\}", text))


def test_example_buttons_name_known_terms():
    """Every /ask_acronym button payload names a term the glossary knows."""
    responses = yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))["responses"]
    payloads = [
        button["payload"]
        for variants in responses.values()
        for variant in variants
        for button in variant.get("buttons", [])
        if button["payload"].startswith("/ask_acronym")
    ]
    assert payloads
    for payload in payloads:
        assert payload.startswith("/ask_acronym{{") and payload.endswith("}}"), payload
        value = re.search(r'"acronym"\s*:\s*"([^"]+)"', payload).group(1)
        assert find_entry(value) is not None, payload


@pytest.mark.filterwarnings("ignore:Slot auto-fill has been removed")  # Rasa says this on every domain load
async def test_rasa_renders_the_responses():
    """Rasa fills the definition template and sends the example buttons as /intent{entities}."""
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.trackers import DialogueStateTracker

    domain = Domain.load(str(DOMAIN))
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    tracker = DialogueStateTracker("test", domain.slots)
    entry = next(e for e in _entries() if e["term"] == "CCG")
    message = await nlg.generate(
        "utter_acronym_definition", tracker, "rest",
        term=entry["term"], expansion=entry["expansion"], meaning=entry["meaning"],
    )
    assert message["text"] == f'CCG stands for Clinical Commissioning Group. {entry["meaning"]}'
    help_message = await nlg.generate("utter_glossary_help", tracker, "rest")
    payloads = [b["payload"] for b in help_message["buttons"]]
    assert '/ask_acronym{"acronym":"ICB"}' in payloads
    assert all("{{" not in p for p in payloads)
