"""The faster action-reply check accepts what Rasa accepts and rejects what Rasa rejects."""
import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction

from components.rasa_server import install_cached_action_validation


def test_valid_reply_passes_and_invalid_reply_raises_rasas_error():
    """A well-formed reply is accepted; a malformed one still fails with Rasa's explanation."""
    install_cached_action_validation()
    action = RemoteAction("action_explain_acronym", None)
    assert action._validate_action_result({"events": [], "responses": [{"response": "utter_greet"}]})
    with pytest.raises(ValidationError, match="Failed to validate Action server response"):
        action._validate_action_result({"events": "not a list"})


# Loads the trained model the way Rasa does and the way components/rasa_server.py does, in a
# separate process (the faster load patches Rasa's model class), and parses every held-out message.
_COMPARE_LOADS = r"""
import asyncio, json, sys
from rasa.core.agent import Agent
from bench.nlu_accuracy import load_examples
from components.rasa_server import load_models_without_tracing_training

texts = [text for text, _ in load_examples()]

async def parses(agent):
    found = []
    for text in texts:
        parsed = await agent.parse_message(text)
        found.append([parsed["intent"]["name"], parsed["intent"]["confidence"],
                      sorted((e["entity"], str(e["value"])) for e in parsed["entities"])])
    return found

rasas = asyncio.run(parses(Agent.load(sys.argv[1])))
load_models_without_tracing_training()
ours = asyncio.run(parses(Agent.load(sys.argv[1])))
print(json.dumps({"texts": texts, "rasa": rasas, "ours": ours}))
"""


def test_the_faster_model_load_understands_every_message_exactly_as_rasas_own():
    """Loading DIET without tracing its training step changes no intent, confidence or entity."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import MODEL, ROOT

    if not MODEL.exists():
        pytest.skip("train the model first (scripts/train.sh)")
    result = subprocess.run(
        [sys.executable, "-c", _COMPARE_LOADS, str(MODEL)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "RASA_TELEMETRY_ENABLED": "false", "PYTHONPATH": str(ROOT)}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(found["texts"]) > 100
    for text, rasas, ours in zip(found["texts"], found["rasa"], found["ours"]):
        assert ours[0] == rasas[0] and ours[2] == rasas[2], text
        assert ours[1] == pytest.approx(rasas[1], abs=1e-5), text
