"""What a champion wrote, their slots, their web chat id and tokens stay out of the Rasa server's logs,
while the action's name and the error's type stay in (components/log_privacy.py)."""
from __future__ import annotations

import json
import logging
import sys

import pytest
import structlog
from rasa.core.actions.action import RemoteAction
from rasa.core.channels.channel import CollectingOutputChannel
from rasa.core.nlg import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import RasaException
from rasa.utils.endpoints import ClientResponseError, EndpointConfig

from components.log_privacy import REDACTED, PrivateLogFilter
from components.rasa_server import hide_private_log_content, install_cached_action_validation

SECRET = "my password is hunter2, ring me on 07700 900123"
WEB_ID = "3f2b9c4e-0d1a-4c5e-9f7a-2b8d6e1c0a9f"
ACTION = "action_save_reflection"


def record(name, level, msg, args=(), exc_info=None, func="run"):
    """A LogRecord as logging.Logger.makeRecord builds it for a call in Rasa's module `name`."""
    return logging.LogRecord(name, level, f"/rasa/{name.replace('.', '/')}.py", 1, msg, args, exc_info, func)


def filtered_text(log_record: logging.LogRecord) -> str:
    """The record passed through the filter (which must keep it), as a handler would print it."""
    assert PrivateLogFilter().filter(log_record) is True
    return logging.Formatter("%(levelname)s %(name)s %(message)s").format(log_record)


def conversation() -> DialogueStateTracker:
    """A web chat conversation whose message and slot hold the secret."""
    return DialogueStateTracker.from_events(
        f"web-{WEB_ID}", [UserUttered(SECRET), SlotSet("reflection_text", SECRET)]
    )


async def run_failing_custom_action(status: int, reply_body: str) -> BaseException:
    """Run RemoteAction against an action server answering `status` with `reply_body`; the exception Rasa raised."""
    endpoint = EndpointConfig("http://127.0.0.1:5055/webhook")

    async def request(**_kwargs):
        """The action server's error reply, as rasa.utils.endpoints.EndpointConfig.request raises it."""
        raise ClientResponseError(status, "Internal Server Error", reply_body)

    endpoint.request = request
    domain = Domain.empty()
    with pytest.raises(Exception) as raised:
        await RemoteAction(ACTION, endpoint).run(
            CollectingOutputChannel(), TemplatedNaturalLanguageGenerator(domain.responses), conversation(), domain
        )
    return raised.value


def rasa_sdk_500_body() -> str:
    """rasa_sdk's exception_handler reply: {"error": str(exception), "request_body": request.json} (the whole tracker)."""
    tracker = conversation().current_state()
    return json.dumps({"error": f"KeyError: '{SECRET}'", "request_body": {"next_action": ACTION, "tracker": tracker}})


async def test_a_crashed_custom_action_is_logged_with_its_name_and_error_types_but_not_the_conversation():
    """processor._run_action's logger.exception: the traceback keeps Rasa's wording, loses the 500 reply's tracker."""
    exception = await run_failing_custom_action(500, rasa_sdk_500_body())
    assert SECRET in str(exception.__cause__)  # what Rasa 3.6 would log
    log_record = record(
        "rasa.core.processor",
        logging.ERROR,
        f"Encountered an exception while running action '{ACTION}'."
        "Bot will continue, but the actions events are lost. "
        "Please check the logs of your action server for "
        "more information.",
        exc_info=(type(exception), exception, exception.__traceback__),
        func="_run_action",
    )

    text = filtered_text(log_record)

    assert SECRET not in text and WEB_ID not in text and "hunter2" not in text
    assert f"Encountered an exception while running action '{ACTION}'" in text
    assert "Traceback (most recent call last):" in text
    assert "rasa.utils.endpoints.ClientResponseError: 500, Internal Server Error, body=[redacted]" in text
    assert "The above exception was the direct cause of the following exception:" in text
    assert f"rasa.shared.exceptions.RasaException: Failed to execute custom action '{ACTION}'" in text


async def test_an_invalid_action_reply_says_where_it_failed_but_not_what_it_held():
    """A reply that fails Rasa's check raises jsonschema's ValidationError, which prints the whole reply."""
    install_cached_action_validation()
    action = RemoteAction(ACTION, None)
    try:
        action._validate_action_result({"events": [{"event": "slot", "name": "x", "value": SECRET}], "responses": SECRET})
    except Exception:
        exc_info = sys.exc_info()
    assert SECRET in str(exc_info[1])

    message = f"Encountered an exception while running action '{ACTION}'."
    text = filtered_text(record("rasa.core.processor", logging.ERROR, message, exc_info=exc_info))

    assert SECRET not in text
    assert (
        "jsonschema.exceptions.ValidationError: "
        "the action server's reply failed the 'type' check at responses: [redacted]"
    ) in text


def test_slot_filling_failure_keeps_the_action_name_and_rasas_error_but_not_the_servers_reply():
    """ActionExtractSlots: f"Failed to execute custom action '{custom_action}' as a result of error '{str(e)}'. ..."."""
    def warning(error: str) -> str:
        """The slot-filling warning for this error text, filtered."""
        return filtered_text(record(
            "rasa.core.actions.action",
            logging.WARNING,
            f"Failed to execute custom action '{ACTION}' as a result of error '{error}'. The default action "
            f"'action_extract_slots' failed to fill slots with custom mappings.",
            func="_execute_custom_action",
        ))

    rejected = warning(f"Sorry, '{SECRET}' is not a valid time")  # an ActionExecutionRejection's message
    assert SECRET not in rejected
    assert f"Failed to execute custom action '{ACTION}' as a result of error '{REDACTED}'. The default action" in rejected

    reply = warning(f"500, Internal Server Error, body='{rasa_sdk_500_body()}'")
    assert SECRET not in reply and "500, Internal Server Error, body=[redacted]" in reply

    assert f"error 'Failed to execute custom action '{ACTION}''" in warning(f"Failed to execute custom action '{ACTION}'")


def test_an_action_servers_rejection_text_is_redacted_but_the_defaults_are_kept():
    """RemoteAction.run on a 400 reply: logger.error(exception.message), the text the action server chose."""
    text = filtered_text(record("rasa.core.actions.action", logging.ERROR, f"Could not save '{SECRET}'"))
    assert SECRET not in text and "A custom action rejected to run: [redacted]" in text

    default = f"Custom action '{ACTION}' rejected execution."
    assert default in filtered_text(record("rasa.core.actions.action", logging.ERROR, default))
    unreachable = (
        f"Failed to run custom action '{ACTION}'. Couldn't connect to the server at "
        "'http://127.0.0.1:5055/webhook'. Is the server running? Error: Cannot connect to host 127.0.0.1:5055"
    )
    assert unreachable in filtered_text(record("rasa.core.actions.action", logging.ERROR, unreachable))


def test_the_circuit_breaker_names_the_channel_but_not_the_web_chats_id():
    """f"Circuit breaker tripped. Stopped predicting more actions for sender '{tracker.sender_id}'."."""
    text = filtered_text(record(
        "rasa.core.processor",
        logging.WARNING,
        f"Circuit breaker tripped. Stopped predicting more actions for sender 'web-{WEB_ID}'.",
        func="_run_prediction_loop",
    ))
    assert WEB_ID not in text
    assert "Circuit breaker tripped. Stopped predicting more actions for sender 'web-[redacted]'." in text


def test_event_parameters_and_request_query_strings_are_redacted():
    """rasa.shared.core.events ("Parameters: {parameters}") and sanic.error ("... uri: %s", repr(request.url))."""
    events = filtered_text(record(
        "rasa.shared.core.events",
        logging.WARNING,
        "Event from parameters called with parameters for multiple events. This is not supported, "
        f"only the first event will be returned. Parameters: {{'reflection_text': '{SECRET}'}}",
    ))
    assert SECRET not in events and events.endswith("Parameters: [redacted]")

    try:
        raise ValueError(SECRET)
    except ValueError:
        sanic = filtered_text(record(
            "sanic.error", logging.ERROR, "Exception occurred while handling uri: %s",
            (f"'http://127.0.0.1:5005/webhooks/rest/webhook?token={WEB_ID}'",), sys.exc_info(),
        ))
    assert WEB_ID not in sanic and SECRET not in sanic
    assert "uri: 'http://127.0.0.1:5005/webhooks/rest/webhook?[redacted]'" in sanic
    assert "ValueError: [redacted]" in sanic


def test_debug_records_are_left_alone():
    """At DEBUG (a developer's machine only) records keep everything: Rasa logs every message there anyway."""
    message = f"Circuit breaker tripped. Stopped predicting more actions for sender 'web-{WEB_ID}'."
    assert WEB_ID in filtered_text(record("rasa.core.processor", logging.DEBUG, message))


@pytest.fixture
def rasa_structlog(monkeypatch):
    """Rasa's structlog set-up (JSON, as on a server) done through the launcher's set-up; restored afterwards."""
    import rasa.utils.log_utils

    saved = structlog.get_config()
    hide_private_log_content()
    monkeypatch.setattr(rasa.utils.log_utils, "FORCE_JSON_LOGGING", "1")
    rasa.utils.log_utils.configure_structlog(logging.INFO)
    yield
    structlog.configure(**saved)


def test_the_rest_channels_failure_event_keeps_its_name_but_not_the_message(rasa_structlog, caplog):
    """rest.py: structlogger.exception("rest.message.received.failure", text=copy.deepcopy(text))."""
    caplog.set_level(logging.INFO)
    text = SECRET

    def handle(message: str) -> None:
        """Stands in for on_new_message failing on this message."""
        raise RasaException(f"could not handle {message}")

    try:
        handle(text)
    except Exception:
        structlog.get_logger().exception("rest.message.received.failure", text=text)

    [line] = [r.getMessage() for r in caplog.records if "rest.message.received.failure" in r.getMessage()]
    logged = json.loads(line)
    assert SECRET not in line and "hunter2" not in line
    assert logged["event"] == "rest.message.received.failure" and logged["level"] == "error"
    assert logged["text"] == REDACTED
    assert "rasa.shared.exceptions.RasaException: [redacted]" in logged["exception"]
    assert "in handle" in logged["exception"]  # the frames are kept, their local variables are not


def test_the_launchers_set_up_redacts_what_rasas_action_logger_writes():
    """components.rasa_server's set-up puts the filter on Rasa's loggers: a handler receives the redacted record."""
    hide_private_log_content()
    received = []

    class Collect(logging.Handler):
        """Keeps every record it is given, formatted."""

        def emit(self, log_record: logging.LogRecord) -> None:
            received.append(self.format(log_record))

    action_logger = logging.getLogger("rasa.core.actions.action")
    handler = Collect()
    action_logger.addHandler(handler)
    try:
        action_logger.warning(
            f"Failed to execute custom action '{ACTION}' "
            f"as a result of error '500, Internal Server Error, body='{rasa_sdk_500_body()}''. The default action "
            f"'action_extract_slots' failed to fill slots with custom "
            f"mappings."
        )
    finally:
        action_logger.removeHandler(handler)

    assert len(received) == 1
    assert SECRET not in received[0] and WEB_ID not in received[0]
    assert f"Failed to execute custom action '{ACTION}'" in received[0]
    assert "500, Internal Server Error, body=[redacted]" in received[0]


_FAILING_ACTION = '''
from rasa_sdk import Action


class ActionFail(Action):
    """An action whose error quotes what the champion wrote."""

    def name(self):
        """Name of the action."""
        return "action_fail"

    async def run(self, dispatcher, tracker, domain):
        """Fail, quoting the message."""
        raise RuntimeError("could not handle " + tracker.latest_message["text"])
'''


def test_the_action_servers_log_keeps_a_failed_actions_error_type_but_not_the_champions_words(tmp_path):
    """The action server as the Procfile starts it (components/action_server.py): an action that fails with
    the message in its error is logged with the error's type and where it failed, never with the words."""
    import os
    import subprocess
    import time
    import urllib.error
    import urllib.request
    from pathlib import Path

    from bench.stack import _wait_http, free_port

    (tmp_path / "failing_actions").mkdir()
    (tmp_path / "failing_actions" / "__init__.py").write_text(_FAILING_ACTION)
    port, root = free_port(), Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{tmp_path}", SANIC_HOST="127.0.0.1")
    log = tmp_path / "actions.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "components.action_server", "--actions", "failing_actions",
                                   "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        call = json.dumps({"next_action": "action_fail", "sender_id": "web-abc", "domain": {}, "tracker": {
            "sender_id": "web-abc", "slots": {}, "events": [],
            "latest_message": {"text": "marker-7f3a my private words"}}}).encode()
        _wait_http(f"http://127.0.0.1:{port}/health", time.monotonic() + 60)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/webhook", data=call, headers={"Content-Type": "application/json"}))
        assert refused.value.code == 500
        time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=20)
    written = log.read_text()
    assert "RuntimeError: " + REDACTED in written and "failing_actions/__init__.py" in written, written
    assert "marker-7f3a" not in written and "private words" not in written
