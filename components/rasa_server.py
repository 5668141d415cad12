"""Run Rasa's command line (`python -m components.rasa_server run ...`) with a faster action-reply check.

Rasa 3.6 checks every reply from the action server with `jsonschema.validate`, which
re-checks the schema itself on each call: that took over half of the Rasa process's
time per message in bench/latency.py. Here the schema is compiled once and each reply
is still validated against it; an invalid reply goes through Rasa's own check, so the
error and its message are exactly Rasa's.
"""
from __future__ import annotations

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
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
