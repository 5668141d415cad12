"""The jargon buster: explains an acronym from knowledge/glossary.yml, never guesses."""
from __future__ import annotations

import os
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Text

import yaml
from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

GLOSSARY_FILE = Path(
    os.environ.get(
        "GLOSSARY_FILE",
        Path(__file__).resolve().parent.parent / "knowledge" / "glossary.yml",
    )
)

ENTITY = "acronym"
SLOT = "acronym"
MAX_RAW_LENGTH = 40  # longer "acronyms" are not acronyms: treated as unknown
MAX_TERMS_PER_MESSAGE = 3  # "what are ICB, ICS and ICP?" gets three answers, no more
MAX_KEY_LENGTH = 16

# What an acronym as typed may contain: ASCII letters and digits, spaces and
# the punctuation of "A&E", "PPG's", "COVID-19", "L.D.", "LGBTQ+".
_ALLOWED = re.compile(r"^[A-Za-z0-9 &'.\-+]+$")
# Punctuation a champion may type around the acronym ("PCN?", "'ICB'").
_EDGE_PUNCTUATION = "?!.,:;\"'()[] \t"

_lock = threading.Lock()
_index: Optional[Dict[Text, Dict[Text, Any]]] = None


def normalise(value: Any) -> Optional[Text]:
    """Lookup key for a typed acronym ("ppg's" → "PPGS"), or None if it can't be an acronym."""
    if not isinstance(value, str) or not value or len(value) > MAX_RAW_LENGTH:
        return None
    text = unicodedata.normalize("NFKC", value).replace("\u2019", "'")
    text = text.strip(_EDGE_PUNCTUATION)
    if not text or not _ALLOWED.match(text):
        return None
    key = re.sub(r"[^A-Z0-9]", "", text.upper())
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    return key


def load_glossary(path: Path = GLOSSARY_FILE) -> List[Dict[Text, Any]]:
    """The glossary entries from the YAML file."""
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    return list(data.get("glossary") or [])


def build_index(entries: Iterable[Dict[Text, Any]]) -> Dict[Text, Dict[Text, Any]]:
    """Map every normalised term and alias to its entry."""
    index: Dict[Text, Dict[Text, Any]] = {}
    for entry in entries:
        for name in [entry["term"], *(entry.get("aliases") or [])]:
            key = normalise(str(name))
            if key:
                index.setdefault(key, entry)
    return index


def _get_index() -> Dict[Text, Dict[Text, Any]]:
    """The glossary index, loaded on first use and then cached."""
    global _index
    if _index is None:
        with _lock:
            if _index is None:
                _index = build_index(load_glossary())
    return _index


def find_entry(value: Any) -> Optional[Dict[Text, Any]]:
    """The glossary entry for a typed acronym (plural or alias allowed), or None."""
    key = normalise(value)
    if key is None:
        return None
    index = _get_index()
    if key in index:
        return index[key]
    if len(key) > 2 and key.endswith("S"):  # "PPGs", "PPG's"
        return index.get(key[:-1])
    return None


def _requested_values(tracker: Tracker) -> List[Any]:
    """Acronym values in the latest message, or else the `acronym` slot (deduplicated, in order)."""
    entities = (tracker.latest_message or {}).get("entities") or []
    values = [e.get("value") for e in entities if e.get("entity") == ENTITY]
    values = [v for v in values if v not in (None, "")]
    if not values:
        slot_value = tracker.get_slot(SLOT)
        if slot_value not in (None, ""):
            values = [slot_value]
    seen = set()
    unique = []
    for value in values:
        marker = normalise(value) or repr(value)[:MAX_RAW_LENGTH]
        if marker not in seen:
            seen.add(marker)
            unique.append(value)
    return unique


class ActionExplainAcronym(Action):
    """Explain the acronym the champion asked about, or say plainly that we don't know it."""

    def name(self) -> Text:
        """Name of the action in the domain."""
        return "action_explain_acronym"

    async def run(
        self,
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: Dict[Text, Any],
    ) -> List[Dict[Text, Any]]:
        """Send utter_acronym_definition per known acronym, utter_acronym_unknown or utter_ask_which_acronym."""
        values = _requested_values(tracker)
        if not values:
            dispatcher.utter_message(response="utter_ask_which_acronym")
            return [SlotSet(SLOT, None)]

        explained: List[Dict[Text, Any]] = []
        for value in values:
            entry = find_entry(value)
            if entry is not None and entry not in explained:
                explained.append(entry)
            if len(explained) == MAX_TERMS_PER_MESSAGE:
                break

        if not explained:
            # Never echo what was typed: it may be huge, markup or anything else.
            dispatcher.utter_message(response="utter_acronym_unknown")
            return [SlotSet(SLOT, None)]

        for entry in explained:
            dispatcher.utter_message(
                response="utter_acronym_definition",
                term=entry["term"],
                expansion=entry["expansion"],
                meaning=entry["meaning"],
                metadata={"source": entry["source"]},
            )
        return [SlotSet(SLOT, explained[-1]["term"])]
