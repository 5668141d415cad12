"""NLU benchmark: intent accuracy, macro-F1 and crisis routing on the held-out test set (tests/nlu/)."""
from __future__ import annotations

import asyncio
import glob
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
TEST_FILES = sorted(glob.glob(str(ROOT / "tests" / "nlu" / "*.yml")))


def load_examples(paths: List[str] = TEST_FILES) -> List[Tuple[str, str]]:
    """(text, expected intent) pairs from Rasa NLU YAML files."""
    from rasa.shared.nlu.training_data.loading import load_data

    examples = []
    for path in paths:
        for message in load_data(path).intent_examples:
            examples.append((message.get("text"), message.get("intent")))
    return examples


async def predict(model_path: Path, texts: List[str]) -> List[str]:
    """Intent the trained model gives each text (nlu_fallback included)."""
    from rasa.core.agent import Agent

    agent = Agent.load(str(model_path))
    out = []
    for text in texts:
        parsed = await agent.parse_message(text)
        out.append(parsed["intent"]["name"])
    return out


def evaluate(model_path: Path = ROOT / "models" / "coproduction.tar.gz") -> Dict:
    """Score the model on the test set: accuracy, macro-F1, crisis recall and the misses."""
    from sklearn.metrics import f1_score

    examples = load_examples()
    texts = [t for t, _ in examples]
    expected = [i for _, i in examples]
    got = asyncio.run(predict(model_path, texts))
    misses = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    crisis = [(t, g) for t, e, g in zip(texts, expected, got) if e == "crisis"]
    return {
        "examples": len(examples),
        "intents": len(set(expected)),
        "accuracy": 1 - len(misses) / len(examples),
        "macro_f1": f1_score(expected, got, average="macro", labels=sorted(set(expected))),
        "crisis_examples": len(crisis),
        "crisis_missed": [t for t, g in crisis if g != "crisis"],
        "misses": misses,
        "confusions": Counter((e, g) for _, e, g in misses).most_common(10),
    }


def main() -> None:
    """Print the figures."""
    result = evaluate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models" / "coproduction.tar.gz")
    print(f"NLU test set: {result['examples']} phrasings, {result['intents']} intents")
    print(f"intent accuracy: {result['accuracy']:.4f}")
    print(f"macro-F1:        {result['macro_f1']:.4f}")
    print(f"crisis phrasings routed to crisis: "
          f"{result['crisis_examples'] - len(result['crisis_missed'])}/{result['crisis_examples']}")
    for text, exp, got in result["misses"]:
        print(f"  miss: {text!r}: expected {exp}, got {got}")


if __name__ == "__main__":
    main()
