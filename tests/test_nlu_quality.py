"""The trained model understands champions' own phrasings (held-out test set in tests/nlu/)."""
from pathlib import Path

import pytest

from bench.nlu_accuracy import evaluate

MODEL = Path(__file__).resolve().parent.parent / "models" / "coproduction.tar.gz"
ACCURACY_THRESHOLD = 0.95

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def scores():
    """Evaluate the trained model once for every test in this module."""
    if not MODEL.exists():
        pytest.fail("models/coproduction.tar.gz is missing: the test command trains it first")
    return evaluate(MODEL)


def test_intent_accuracy_meets_threshold(scores):
    """At least 95 % of unseen phrasings reach the right intent."""
    assert scores["accuracy"] >= ACCURACY_THRESHOLD, scores["misses"]


def test_every_crisis_phrasing_is_routed_to_crisis(scores):
    """No crisis message may be missed, whatever else it says."""
    assert scores["crisis_examples"] >= 15
    assert scores["crisis_missed"] == []


def _training_examples():
    """(text, intent) pairs of the training data in nlu/."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(MODEL.parent.parent / "nlu"))
    return [(m.get("text"), m.get("intent")) for m in data.intent_examples]


def test_every_intent_has_five_unseen_phrasings():
    """Each trained intent has at least five test phrasings, none copied from the training data."""
    from collections import Counter

    from bench.nlu_accuracy import load_examples

    training = _training_examples()
    tested = load_examples()
    counts = Counter(intent for _, intent in tested)
    short = {i: counts[i] for i in {i for _, i in training} if counts[i] < 5}
    assert short == {}
    seen = {t.lower().strip() for t, _ in training}
    assert [t for t, _ in tested if t.lower().strip() in seen] == []
