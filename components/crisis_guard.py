"""CrisisGuard: an NLU component that routes any message matching a crisis pattern to `crisis`.

The patterns live in knowledge/safety.yml (see the comments there for how a
message is matched). The component runs after the DIETClassifier and before
the FallbackClassifier: when a pattern matches, the intent becomes `crisis`
with confidence 1.0 whatever the classifier thought, so a question with a
crisis sentence tucked into it still gets the crisis reply.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Pattern, Text, Type

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.utils.io import read_yaml_file

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATTERNS_FILE = "knowledge/safety.yml"
# Key under which the parse result records which pattern fired and what the
# classifier had predicted (no message text, so nothing personal is logged).
CRISIS_GUARD_KEY = "crisis_guard"

_APOSTROPHES = re.compile("['\u2019\u2018`\u00b4\u02bc]")
_NOT_LETTER_OR_DIGIT = re.compile(r"[^a-z0-9]+")
_REPEATED_LETTER = re.compile(r"([a-z])\1{2,}")
_MACRO = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class CrisisPattern:
    """One named crisis pattern, with an optional `unless` regex that cancels it."""

    id: Text
    regex: Pattern
    unless: Optional[Pattern] = None

    def matches(self, normalised_text: Text) -> bool:
        """Whether the pattern fires on an already normalised message."""
        if not self.regex.search(normalised_text):
            return False
        return not (self.unless and self.unless.search(normalised_text))


class CrisisPatterns:
    """The crisis patterns of knowledge/safety.yml and the text normalisation they expect."""

    def __init__(self, patterns: List[CrisisPattern], words: Dict[Text, Text]) -> None:
        """Wraps compiled patterns and the whole-word swaps applied before matching."""
        if not patterns:
            raise ValueError("The crisis pattern file holds no patterns.")
        self.patterns = patterns
        self.words = words

    @classmethod
    def from_file(cls, path: Path) -> "CrisisPatterns":
        """Loads and compiles the pattern file; raises ValueError on any mistake in it."""
        data = read_yaml_file(str(path))
        if not isinstance(data, dict) or not isinstance(data.get("patterns"), list):
            raise ValueError(f"{path}: expected a mapping with a `patterns` list.")
        macros = {str(k): str(v) for k, v in (data.get("macros") or {}).items()}
        words = {str(k): str(v) for k, v in (data.get("words") or {}).items()}
        patterns, seen = [], set()
        for entry in data["patterns"]:
            pattern_id = entry.get("id") if isinstance(entry, dict) else None
            if not pattern_id or "regex" not in entry:
                raise ValueError(f"{path}: every pattern needs an `id` and a `regex`: {entry!r}")
            if pattern_id in seen:
                raise ValueError(f"{path}: pattern id `{pattern_id}` is used twice.")
            seen.add(pattern_id)
            regex = cls._compile(path, pattern_id, entry["regex"], macros)
            unless = entry.get("unless")
            patterns.append(
                CrisisPattern(
                    id=pattern_id,
                    regex=regex,
                    unless=cls._compile(path, pattern_id, unless, macros) if unless else None,
                )
            )
        return cls(patterns, words)

    @staticmethod
    def _compile(path: Path, pattern_id: Text, source: Text, macros: Dict[Text, Text]) -> Pattern:
        """Expands `{{macro}}` references and compiles the regex."""

        def expand(match: "re.Match") -> Text:
            name = match.group(1)
            if name not in macros:
                raise ValueError(f"{path}: pattern `{pattern_id}` uses unknown macro `{name}`.")
            return macros[name]

        try:
            return re.compile(_MACRO.sub(expand, str(source)))
        except re.error as error:
            raise ValueError(f"{path}: pattern `{pattern_id}` is not a valid regex: {error}") from error

    def normalise(self, text: Text) -> Text:
        """Lower-cases, drops apostrophes and punctuation, squeezes repeated letters, swaps words."""
        text = _APOSTROPHES.sub("", text.lower())
        text = _NOT_LETTER_OR_DIGIT.sub(" ", text)
        text = _REPEATED_LETTER.sub(r"\1", text)
        return " ".join(self.words.get(word, word) for word in text.split())

    def match(self, text: Optional[Text]) -> Optional[Text]:
        """The id of the first pattern that fires on `text`, or None."""
        if not text:
            return None
        normalised = self.normalise(text)
        for pattern in self.patterns:
            if pattern.matches(normalised):
                return pattern.id
        return None


def resolve_patterns_file(configured: Text) -> Path:
    """Finds the pattern file: as given, else relative to the project root."""
    path = Path(configured)
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_ROOT / path


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=False
)
class CrisisGuard(GraphComponent, IntentClassifier):
    """Overrides the predicted intent with `crisis` when a message matches a crisis pattern."""

    @classmethod
    def required_components(cls) -> List[Type]:
        """Runs after an intent classifier, whose prediction it may override."""
        return [IntentClassifier]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        """Pattern file (relative to the project) and the intent to route matches to."""
        return {"patterns_file": DEFAULT_PATTERNS_FILE, "crisis_intent": "crisis"}

    def __init__(self, config: Dict[Text, Any], patterns: CrisisPatterns) -> None:
        """Keeps the config and the compiled patterns."""
        self.component_config = config
        self.patterns = patterns
        self.crisis_intent = config.get("crisis_intent", "crisis")

    @classmethod
    def create(
        cls,
        config: Dict[Text, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> "CrisisGuard":
        """Loads the patterns; fails loudly (no model without its safety net) if they are broken."""
        config = {**cls.get_default_config(), **(config or {})}
        path = resolve_patterns_file(config["patterns_file"])
        patterns = CrisisPatterns.from_file(path)
        logger.debug("CrisisGuard loaded %d patterns from %s", len(patterns.patterns), path)
        return cls(config, patterns)

    def process(self, messages: List[Message]) -> List[Message]:
        """Sets intent `crisis` (confidence 1.0, first in the ranking) on every matching message."""
        for message in messages:
            pattern_id = self.patterns.match(message.get(TEXT))
            if pattern_id is not None:
                self._route_to_crisis(message, pattern_id)
        return messages

    def _route_to_crisis(self, message: Message, pattern_id: Text) -> None:
        """Puts `crisis` on top; the other intents keep their order with confidence 0."""
        previous = message.get(INTENT) or {}
        crisis = {INTENT_NAME_KEY: self.crisis_intent, PREDICTED_CONFIDENCE_KEY: 1.0}
        others = [
            {**entry, PREDICTED_CONFIDENCE_KEY: 0.0}
            for entry in message.get(INTENT_RANKING_KEY) or []
            if entry.get(INTENT_NAME_KEY) != self.crisis_intent
        ]
        message.set(INTENT, crisis, add_to_output=True)
        message.set(INTENT_RANKING_KEY, [dict(crisis)] + others, add_to_output=True)
        message.set(
            CRISIS_GUARD_KEY,
            {
                "pattern": pattern_id,
                "classifier_intent": previous.get(INTENT_NAME_KEY),
                "classifier_confidence": previous.get(PREDICTED_CONFIDENCE_KEY),
            },
            add_to_output=True,
        )
        logger.info("CrisisGuard: pattern '%s' matched; intent set to '%s'.", pattern_id, self.crisis_intent)
