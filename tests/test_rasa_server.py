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


def _story_trackers():
    """Every training and test story of the assistant as a tracker (forms and their loops included)."""
    from rasa.shared.core.generator import TrainingDataGenerator
    from rasa.shared.importers.importer import TrainingDataImporter

    importer = TrainingDataImporter.load_from_dict(domain_path="domain", training_data_paths=["stories", "tests/stories"])
    generator = TrainingDataGenerator(importer.get_stories(), importer.get_domain(), augmentation_factor=0,
                                      remove_duplicates=False)
    return [list(tracker.events) for tracker in generator.generate_story_trackers()]


def _random_conversations(count: int, length: int):
    """Random event sequences mixing forms (accepted, rejected, interrupted), reverts, restarts and new sessions."""
    import random

    from rasa.shared.core.events import (
        ActionExecuted, ActionExecutionRejected, ActionReverted, ActiveLoop, Restarted, SessionStarted, SlotSet,
        UserUttered, UserUtteranceReverted,
    )

    makers = [
        lambda: UserUttered("hi", {"name": "greet", "confidence": 1.0}),
        lambda: ActionExecuted("action_listen"),
        lambda: ActionExecuted("utter_greet"),
        lambda: ActionExecuted("five_steps_form"),
        lambda: ActionExecuted("reminder_form"),
        lambda: ActiveLoop("five_steps_form"),
        lambda: ActiveLoop("reminder_form"),
        lambda: ActiveLoop(None),
        lambda: ActionExecutionRejected("five_steps_form"),
        lambda: SlotSet("requested_slot", "fs_answer"),
        lambda: ActionReverted(),
        lambda: UserUtteranceReverted(),
        lambda: Restarted(),
        lambda: SessionStarted(),
    ]
    weights = [8, 8, 4, 6, 3, 2, 1, 2, 2, 3, 1, 1, 1, 1]
    rng = random.Random(20261122)
    return [[rng.choices(makers, weights)[0]() for _ in range(length)] for _ in range(count)]


def test_applied_events_folded_incrementally_are_rasas_after_every_event(monkeypatch):
    """After each event of every story (and of random conversations with reverts, restarts and rejected
    forms), the incremental fold gives exactly the events Rasa's own applied_events gives."""
    from rasa.shared.core.trackers import DialogueStateTracker

    from components.rasa_server import fold_applied_events_incrementally

    rasas = DialogueStateTracker.applied_events
    monkeypatch.setattr(DialogueStateTracker, "applied_events", rasas)  # put back after the test
    fold_applied_events_incrementally()
    assert DialogueStateTracker.applied_events is not rasas
    conversations = _story_trackers() + _random_conversations(300, 60)
    checked = 0
    for events in conversations:
        tracker = DialogueStateTracker("fold-check", [])
        for event in events:
            tracker.update(event)
            ours = tracker.applied_events()
            assert [id(e) for e in ours] == [id(e) for e in rasas(tracker)], events
            ours.append("callers may change the list they get")
            checked += 1
    assert checked > 18_000


async def test_a_second_message_of_a_conversation_checks_the_lock_every_50_ms(monkeypatch):
    """A message that arrives while another of its conversation is being answered is taken 50 ms after,
    not up to a second after (Rasa's own wait), and still only once the first is done."""
    import asyncio

    from rasa.core import lock_store
    from rasa.core.lock_store import InMemoryLockStore, LockStore

    from components.rasa_server import poll_conversation_locks_often

    monkeypatch.setattr(LockStore, "lock", LockStore.lock)  # put back after the test
    poll_conversation_locks_often()
    waits, order = [], []
    real_sleep = asyncio.sleep

    async def sleep(seconds):
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(lock_store.asyncio, "sleep", sleep)
    store = InMemoryLockStore()
    first_in = asyncio.Event()

    async def answer(name, hold):
        async with store.lock("web-quick"):
            order.append(f"{name} starts")
            first_in.set()
            for _ in range(hold):
                await real_sleep(0)
            order.append(f"{name} ends")

    first = asyncio.create_task(answer("first", 20))
    await first_in.wait()
    await asyncio.gather(first, answer("second", 0))
    assert order == ["first starts", "first ends", "second starts", "second ends"]
    assert waits and set(waits) == {0.05}


async def test_an_action_call_reaches_the_action_server_with_exactly_rasas_values(monkeypatch):
    """With the ujson encoding, the action server decodes the very call Rasa builds: other scripts, emoji,
    markup, quotes, a line separator and a 40-digit number included."""
    import json

    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.core.channels.channel import CollectingOutputChannel
    from rasa.utils import endpoints
    from rasa.utils.endpoints import EndpointConfig

    from components.rasa_server import encode_action_calls_with_ujson

    monkeypatch.setattr(endpoints.EndpointConfig, "session", endpoints.EndpointConfig.session)
    encode_action_calls_with_ujson()
    received = []

    async def webhook(request):
        received.append(json.loads(await request.text()))
        return web.json_response({"events": [], "responses": []})

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        domain = Domain.from_dict({"intents": ["greet"], "actions": ["action_echo"]})
        tracker = DialogueStateTracker.from_events("web-é", [UserUttered(
            'Ça va? 你好 🙂 </script><b>"x"</b> \\ / \u2028', {"name": "greet", "confidence": 0.5},
            metadata={"big": 10**40, "nested": [1.5, None, True]})])
        action = RemoteAction("action_echo", EndpointConfig(str(server.make_url("/webhook"))))
        for _ in range(2):
            await action.run(CollectingOutputChannel(), None, tracker, domain)
            expected = json.loads(json.dumps(action._action_call_format(tracker, domain)))
            assert received[-1] == expected
        assert received[-1]["tracker"]["latest_message"]["metadata"]["big"] == 10**40
    finally:
        await server.close()
