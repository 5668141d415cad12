"""Every answer the assistant gives is traceable, phone-sized and free of invented contacts."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SEEDS = Path(os.environ.get("SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
MAX_WORDS = 80
# Acronyms everyone knows; every other one is spelt out in the message that uses it.
WELL_KNOWN = {"NHS", "GP", "GPs", "COVID-19", "UK"}
# Public numbers the assistant may give (DEVELOPERS.md: 999, NHS 111, Samaritans 116 123).
ALLOWED_NUMBERS = {"999", "111", "116 123"}


def _responses() -> Iterator[Tuple[str, str, Dict]]:
    """(file, response name, variation) for every response in the domain folder."""
    for path in sorted((ROOT / "domain").glob("*.yml")):
        data = yaml.safe_load(path.read_text()) or {}
        for name, variations in (data.get("responses") or {}).items():
            for variation in variations:
                yield path.name, name, variation


@functools.lru_cache(maxsize=None)
def _seed_texts() -> Dict[str, str]:
    """Seed file name -> its text."""
    return {p.name: p.read_text() for p in SEEDS.glob("*.txt")}


@functools.lru_cache(maxsize=None)
def _glossary() -> List[Dict]:
    """The glossary entries."""
    return yaml.safe_load((ROOT / "knowledge" / "glossary.yml").read_text())["glossary"]


RESPONSES = list(_responses())


def _sources(variation: Dict) -> List[str]:
    """The metadata.source of a response variation, as a list."""
    source = (variation.get("metadata") or {}).get("source")
    return [source] if isinstance(source, str) else list(source or [])


def test_seeds_are_there():
    """The documents the knowledge cites are available to check against."""
    assert len(_seed_texts()) == 5, f"seeds not found in {SEEDS}"


@pytest.mark.parametrize("file,name,variation", RESPONSES, ids=[f"{f}:{n}" for f, n, _ in RESPONSES])
def test_every_response_names_its_source(file, name, variation):
    """Each answer says which seed document it comes from ("public" / "none" where no seed applies)."""
    sources = _sources(variation)
    assert sources, f"{name} has no metadata.source"
    seeds = _seed_texts()
    for source in sources:
        assert source in seeds or source in {"public", "none"}, f"{name}: unknown source {source!r}"
    if "none" in sources:
        assert not re.search(r"\d", variation.get("text", "")), f"{name} states numbers but cites nothing"


@pytest.mark.parametrize("file,name,variation", RESPONSES, ids=[f"{f}:{n}" for f, n, _ in RESPONSES])
def test_every_message_fits_a_phone_screen(file, name, variation):
    """No message is longer than about 80 words; longer material goes behind "Tell me more"."""
    words = len(variation.get("text", "").split())
    assert words <= MAX_WORDS, f"{name} has {words} words"


@pytest.mark.parametrize("file,name,variation", RESPONSES, ids=[f"{f}:{n}" for f, n, _ in RESPONSES])
def test_no_invented_contacts(file, name, variation):
    """No e-mail address, phone number or web address that isn't in the seeds or publicly known."""
    text = variation.get("text", "")
    assert not re.search(r"\S+@\S+\.\w+", text), f"{name} holds an e-mail address"
    for number in re.findall(r"\b\d{3}(?: ?\d{3,4}){0,2}\b", text):
        if len(number.replace(" ", "")) >= 3 and number.startswith(("0", "1", "9")) and " " in number:
            assert number in ALLOWED_NUMBERS, f"{name} gives the number {number}"
    seeds = "\n".join(_seed_texts().values())
    for url in re.findall(r"(?:https?://|www\.)[^\s)\"']+", text):
        assert url.rstrip(".,") in seeds, f"{name} links to {url}, which no seed has"


@pytest.mark.parametrize("file,name,variation", RESPONSES, ids=[f"{f}:{n}" for f, n, _ in RESPONSES])
def test_acronyms_are_spelt_out_where_they_appear(file, name, variation):
    """An acronym in an answer comes with its full name in that same message."""
    if file == "glossary.yml":
        return  # the jargon buster names acronyms as examples of what to ask
    text = variation.get("text", "")
    lowered = text.lower()
    for entry in _glossary():
        term = entry["term"]
        full_name = entry["expansion"].split(" (")[0]
        if term in WELL_KNOWN:
            continue
        if re.search(rf"(?<![\w-]){re.escape(term)}s?(?![\w-])", text):
            assert full_name.lower() in lowered, f"{name} uses {term} without '{full_name}'"


@pytest.mark.parametrize("file,name,variation", RESPONSES, ids=[f"{f}:{n}" for f, n, _ in RESPONSES])
def test_ccgs_always_come_with_their_replacement(file, name, variation):
    """Wherever CCGs come up, the answer says Integrated Care Boards replaced them in July 2022."""
    text = variation.get("text", "")
    if re.search(r"\bCCGs?\b|Clinical Commissioning Group", text):
        assert "Integrated Care Board" in text and "2022" in text, name


def test_buttons_lead_somewhere():
    """Every button payload names an intent the assistant knows."""
    intents = set()
    for path in (ROOT / "domain").glob("*.yml"):
        for intent in (yaml.safe_load(path.read_text()) or {}).get("intents") or []:
            intents.add(intent if isinstance(intent, str) else next(iter(intent)))
    for file, name, variation in RESPONSES:
        for button in variation.get("buttons") or []:
            payload = button["payload"]
            assert payload.startswith("/"), f"{name}: {payload}"
            intent = re.split(r"[{@]", payload[1:])[0]
            assert intent in intents, f"{name}: button to unknown intent {intent}"
