"""Run Rasa's command line (`python -m components.rasa_server run ...`) with this project's changes.

Each change is one function below, installed by `main()` before Rasa starts:
- speed (figures in bench/RESULTS.md): the action-reply schema compiled once, not per reply; the
  model loaded without compiling a training step; requests to the action server encoded with ujson;
  a tracker's applied events folded incrementally; a waiting message checking its conversation's
  lock every 50 ms, not every second;
- safety: SQL statement values, message text and other private content kept out of the logs;
  malformed REST requests answered with a 400 instead of a 500 or a crash.
Each keeps Rasa's behaviour otherwise; tests/test_rasa_server.py checks that. The conversation tests
(`rasa test core` in scripts/test.sh) run through this module too.
"""
from __future__ import annotations

import itertools
import os
import sys


def install_cached_action_validation() -> None:
    """Validate action-server replies with a validator compiled once, not per reply."""
    from jsonschema.validators import validator_for
    from rasa.core.actions.action import RemoteAction

    if getattr(RemoteAction, "_companion_cached_validation", False):
        return
    spec = RemoteAction.action_response_format_spec()
    validator = validator_for(spec)(spec)
    rasa_check = RemoteAction._validate_action_result

    def _validate_action_result(self: RemoteAction, result) -> bool:
        """True for a valid reply; otherwise Rasa's own check raises its ValidationError."""
        if validator.is_valid(result):
            return True
        return rasa_check(self, result)

    RemoteAction._validate_action_result = _validate_action_result
    RemoteAction._companion_cached_validation = True


def encode_action_calls_with_ujson() -> None:
    """Encode Rasa's requests to the action server with ujson instead of the standard library's json.

    Each call sends the whole conversation session (about 120 KB after 30 messages); json.dumps took
    a tenth of the Rasa process's time under load (bench/RESULTS.md), ujson (already installed with
    Sanic, which the action server decodes with) about a third of that. The action server decodes
    exactly the values json.dumps would have sent; a value ujson can't encode falls back to json.dumps.
    """
    import json

    import aiohttp
    import ujson
    from rasa.utils import endpoints

    if getattr(endpoints.EndpointConfig.session, "_companion_ujson", False):
        return

    def dumps(value) -> str:
        """ujson.dumps, or json.dumps for whatever ujson refuses."""
        try:
            return ujson.dumps(value)
        except (OverflowError, TypeError, ValueError):
            return json.dumps(value)

    def session(self: endpoints.EndpointConfig) -> aiohttp.ClientSession:
        """Rasa's client session for an endpoint, encoding JSON bodies with dumps."""
        auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
        return aiohttp.ClientSession(
            headers=self.headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=endpoints.DEFAULT_REQUEST_TIMEOUT),
            json_serialize=dumps,
        )

    session._companion_ujson = True
    endpoints.EndpointConfig.session = session


def fold_applied_events_incrementally() -> None:
    """Work out a tracker's applied events from where the previous call left off, not from its first event.

    Rasa 3.6's ``DialogueStateTracker.applied_events`` (the events left after reverts, restarts and
    repeated form turns) goes over every event of the session each time it is called, several times
    for every action predicted, with backward scans for each form turn: the largest part of dialogue
    prediction, growing with the conversation (bench/RESULTS.md). It is a fold over the events whose
    only other input is the set of loop (form) names activated anywhere in the tracker. So each
    tracker keeps the fold's result and the events it had folded; the next call folds in only the
    events added since, when its first and last folded events are still in place and no new loop name
    has appeared. Otherwise, Rasa's whole fold runs, exactly as before.
    tests/test_rasa_server.py compares the two on every story's tracker, event by event.
    """
    from rasa.shared.core.events import (
        ActionExecuted,
        ActionReverted,
        ActiveLoop,
        Restarted,
        SessionStarted,
        UserUttered,
        UserUtteranceReverted,
    )
    from rasa.shared.core.trackers import DialogueStateTracker

    if getattr(DialogueStateTracker.applied_events, "_companion_incremental", False):
        return

    def fold(tracker: DialogueStateTracker, loop_names, applied: list, events) -> list:
        """The loop of Rasa 3.6's applied_events (rasa/shared/core/trackers.py), from a given state."""
        for event in events:
            if isinstance(event, (Restarted, SessionStarted)):
                applied = []
            elif isinstance(event, ActionReverted):
                tracker._undo_till_previous(ActionExecuted, applied)
            elif isinstance(event, UserUtteranceReverted):
                tracker._undo_till_previous(UserUttered, applied)
                tracker._undo_till_previous(ActionExecuted, applied)
            elif (
                isinstance(event, ActionExecuted)
                and event.action_name in loop_names
                and not tracker._first_loop_execution_or_unhappy_path(event.action_name, applied)
            ):
                tracker._undo_till_previous_loop_execution(event.action_name, applied)
            else:
                applied.append(event)
        return applied

    def applied_events(self: DialogueStateTracker) -> list:
        """All events that should be applied, without reverted ones (as Rasa's), folding only new events."""
        events = self.events
        count = len(events)
        kept = self.__dict__.get("_companion_applied")
        if kept is not None and 0 < kept[0] <= count and events[0] is kept[1] and events[kept[0] - 1] is kept[2]:
            folded, _, _, loop_names, applied = kept
            new = list(itertools.islice(events, folded, None))
            if not any(isinstance(event, ActiveLoop) and event.name and event.name not in loop_names for event in new):
                applied = fold(self, loop_names, list(applied), new)
                self._companion_applied = (count, events[0], events[-1], loop_names, applied)
                return list(applied)
        loop_names = frozenset(event.name for event in events if isinstance(event, ActiveLoop) and event.name)
        applied = fold(self, loop_names, [], events)
        if count:
            self._companion_applied = (count, events[0], events[-1], loop_names, applied)
        return list(applied)

    applied_events._companion_incremental = True
    DialogueStateTracker.applied_events = applied_events


# How often a message waiting for its conversation's lock (another message of the same conversation
# is being answered) checks again. Rasa's default is once a second.
LOCK_POLL_SECONDS = 0.05


def poll_conversation_locks_often() -> None:
    """Let a message that waits for its conversation's lock check every 50 ms instead of every second.

    Rasa answers one message of a conversation at a time: a second message that arrives while the
    first is being answered (two quick messages, a tap on a button while typing) waits for the
    conversation's lock, and Rasa 3.6 looks again only once a second, so its reply came up to a
    second late although the first answer takes tens of milliseconds. The lock and the order are
    Rasa's own (and the Redis lock store's in production); only the wait between checks is shorter.
    """
    from rasa.core.lock_store import LOCK_LIFETIME, LockStore

    rasa_lock = LockStore.lock
    if getattr(rasa_lock, "_companion_poll", False):
        return

    def lock(self: LockStore, conversation_id, lock_lifetime=LOCK_LIFETIME, wait_time_in_seconds=LOCK_POLL_SECONDS):
        """Rasa's LockStore.lock, checking every LOCK_POLL_SECONDS by default."""
        return rasa_lock(self, conversation_id, lock_lifetime, wait_time_in_seconds)

    lock._companion_poll = True
    LockStore.lock = lock


def load_models_without_tracing_training() -> None:
    """Load DIET's trained weights without first compiling its training step (about 25 s of start-up).

    To create its variables before restoring the saved weights, Rasa 3.6 (``RasaModel.load``) trains
    the new model for one step on one example, as a TensorFlow graph: tracing that graph, with its
    gradients, was most of the time from start to ready (bench/RESULTS.md). Here that one step runs
    eagerly instead, which creates the same variables without tracing anything; the saved weights
    then replace them exactly as before, and predictions are compiled as before
    (tests/test_rasa_server.py checks that the parse of every held-out message is unchanged).
    Models loaded to be trained further (``finetune_mode``) keep Rasa's own way.
    """
    from rasa.utils.tensorflow.models import RasaModel

    rasa_load = RasaModel.load.__func__
    if getattr(rasa_load, "_companion_eager_build", False):
        return

    def load(cls, model_file_name, model_data_example, predict_data_example=None, finetune_mode=False, *args, **kwargs):
        """RasaModel.load with the weight-building step run eagerly."""
        if finetune_mode or kwargs.get("config", {}).get("run_eagerly"):
            return rasa_load(cls, model_file_name, model_data_example, predict_data_example, finetune_mode, *args, **kwargs)
        import tensorflow as tf
        from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator

        model = cls(*args, **kwargs)
        learning_rate = kwargs.get("config", {}).get("learning_rate", 0.001)
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), run_eagerly=True)
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        model.load_weights(model_file_name)
        model.run_eagerly = False  # predictions run as a compiled graph, as Rasa's own load leaves them
        if predict_data_example:
            model.run_inference(predict_data_example)
        return model

    load._companion_eager_build = True
    RasaModel.load = classmethod(load)


def hide_sql_parameters() -> None:
    """Make every SQLAlchemy engine Rasa creates (its SQL tracker store) keep statement values out
    of error messages, which Rasa logs: they would carry champions' messages (SECURITY.md)."""
    import sqlalchemy

    create_engine = sqlalchemy.create_engine
    if getattr(create_engine, "_companion_hides_parameters", False):
        return

    def create_engine_hiding_parameters(*args, **kwargs):
        """sqlalchemy.create_engine with hide_parameters=True unless asked otherwise."""
        kwargs.setdefault("hide_parameters", True)
        return create_engine(*args, **kwargs)

    create_engine_hiding_parameters._companion_hides_parameters = True
    sqlalchemy.create_engine = create_engine_hiding_parameters


# Rasa's REST channel reads any JSON it is sent: a body that is not an object, or a sender or message
# that is not text, made it answer 500 (metadata that is not an object: an empty 200), and a sender
# its tracker store cannot encode (a lone surrogate; a NUL on PostgreSQL) made the whole server exit.
# Our channels never send such things.
REST_MAX_SENDER_CHARS = 255  # the SQL tracker store's sender_id column
# Far above what the web chat and Telegram pass on (MAX_MESSAGE_CHARS, 2,000 by default): a longer
# message is refused before the model reads it, instead of holding up every conversation.
REST_MAX_MESSAGE_CHARS = 20_000


def _storable(text: str) -> bool:
    """True when text has no NUL and no lone surrogate (which no tracker store can keep)."""
    return "\x00" not in text and not any("\ud800" <= char <= "\udfff" for char in text)


def install_rest_request_checks() -> None:
    """Answer a malformed request to Rasa's REST channel with a 400 (or 413) instead of a 500 or a crash."""
    from rasa.core.channels.rest import RestInput
    from sanic.exceptions import InvalidUsage, PayloadTooLarge

    if getattr(RestInput, "_companion_checked_requests", False):
        return

    def json_object(request) -> dict:
        """The request's JSON body, which must be an object (Sanic answers 400 when it is not JSON)."""
        body = request.json
        if not isinstance(body, dict):
            raise InvalidUsage("The body must be a JSON object with a sender and a message.")
        return body

    async def _extract_sender(self: RestInput, request):
        """The sender: none (Rasa's default), or 1-255 printable characters."""
        sender = json_object(request).get("sender")
        if sender is not None and not (
            isinstance(sender, str) and 0 < len(sender) <= REST_MAX_SENDER_CHARS and sender.isprintable()
        ):
            raise InvalidUsage(f"sender must be 1-{REST_MAX_SENDER_CHARS} printable characters.")
        return sender

    def _extract_message(self: RestInput, request):
        """The message: text without NUL or lone surrogates, at most REST_MAX_MESSAGE_CHARS long."""
        message = json_object(request).get("message")
        if not isinstance(message, str) or not _storable(message):
            raise InvalidUsage("message must be text (without NUL characters or lone surrogates).")
        if len(message) > REST_MAX_MESSAGE_CHARS:
            raise PayloadTooLarge(f"message is longer than {REST_MAX_MESSAGE_CHARS} characters.")
        return message

    def get_metadata(self: RestInput, request):
        """The message's metadata: none, or a JSON object."""
        metadata = json_object(request).get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidUsage("metadata must be a JSON object.")
        return metadata

    RestInput._extract_sender = _extract_sender
    RestInput._extract_message = _extract_message
    RestInput.get_metadata = get_metadata
    RestInput._companion_checked_requests = True


def hide_private_log_content() -> None:
    """Keep message text, slot values, tracker dumps, sender ids and tokens out of Rasa's logs at INFO and
    above: a filter on the loggers that write them, and a structlog processor added once Rasa has
    configured structlog (components/log_privacy.py, SECURITY.md)."""
    import rasa.utils.log_utils

    from components import log_privacy

    log_privacy.install_log_filter()
    configure_structlog = rasa.utils.log_utils.configure_structlog
    if not getattr(configure_structlog, "_companion_redacts", False):

        def configure_structlog_redacting(*args, **kwargs) -> None:
            """Rasa's configure_structlog, then the redacting processor in front of Rasa's."""
            configure_structlog(*args, **kwargs)
            log_privacy.add_structlog_redaction()

        configure_structlog_redacting._companion_redacts = True
        rasa.utils.log_utils.configure_structlog = configure_structlog_redacting
    # rasa.__main__ imports the function by name: replace its copy too once it is loaded.
    rasa_main_module = sys.modules.get("rasa.__main__")
    if rasa_main_module is not None:
        rasa_main_module.configure_structlog = rasa.utils.log_utils.configure_structlog


def main() -> None:
    """Install the faster check, then hand over to Rasa's own command line (telemetry off unless asked for)."""
    # Rasa's telemetry also reports crashes (with their tracebacks) to an outside service:
    # conversations with champions must not leave the server, so it is off here.
    os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
    hide_sql_parameters()
    install_cached_action_validation()
    install_rest_request_checks()
    hide_private_log_content()
    load_models_without_tracing_training()
    encode_action_calls_with_ujson()
    fold_applied_events_incrementally()
    poll_conversation_locks_often()
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
