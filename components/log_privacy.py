"""Keep what champions wrote, slot values, tracker dumps, sender ids and tokens out of the Rasa server's logs.

Rasa 3.6 puts private content into some of its INFO-to-ERROR records (the default level):

- a custom action that fails: rasa_sdk answers 500 with ``{"error": ..., "request_body": <the whole
  tracker>}``; Rasa raises ``ClientResponseError("500, Internal Server Error, body='<that body>'")``
  and `rasa.core.processor` logs it with ``logger.exception("Encountered an exception while running
  action '<name>'...")``, so the traceback carries every message and slot of the conversation;
- `rasa.core.actions.action`: ``"Failed to execute custom action '<name>' as a result of error
  '<str(e)>'..."`` (the same body) and ``logger.error(exception.message)`` (the action server's own
  rejection text);
- `rasa.core.channels.rest` (structlog): ``structlogger.exception("rest.message.received.failure",
  text=<the message>)``, rendered as JSON with every traceback frame's local variables;
- `rasa.core.processor`: the circuit breaker names the sender (``web-<the web chat's secret id>``);
- `rasa.shared.core.events`: ``"... Parameters: {parameters}"`` (an event's slot values);
- `sanic.error`, `sanic.root`, `asyncio`: an unhandled exception's message, request URLs.

`PrivateLogFilter` (on those stdlib loggers) and `redact_event_dict` (a structlog processor) replace
those parts with "[redacted]" and keep the rest: the action's name, the error's type and Rasa's own
explanation, the traceback's frames. Nothing is dropped. DEBUG records are left alone: at DEBUG Rasa
logs every message anyway, and DEBUG is for a developer's machine (SECURITY.md).
"""
from __future__ import annotations

import logging
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Pattern, Union

REDACTED = "[redacted]"
# Records below this level keep everything (see the module docstring).
LOWEST_REDACTED_LEVEL = logging.INFO

# Error texts whose whole wording is Rasa's (or rasa_sdk's) own and names only an action or a URL
# from the endpoints file: they are kept as they are.
_KEPT_ERRORS = tuple(
    re.compile(pattern)
    for pattern in (
        r"Failed to execute custom action '[^'\n]*'",  # RemoteAction.run, a reply other than 200/400
        # RemoteAction.run, the action server cannot be reached
        r"Failed to execute custom action '[^'\n]*'\. Couldn't connect to the server at '[^'\n]*\.",
        r"Custom action '[^'\n]*' rejected to run",  # Rasa's ActionExecutionRejection default
        r"Custom action '[^'\n]*' rejected execution\.",  # rasa_sdk's ActionExecutionRejection default
        r"Failed to extract slot [\w.-]+ with action [\w.-]+",  # rasa.core.actions.forms
    )
)
# Error texts of which only a known first part is kept.
_PARTLY_KEPT_ERRORS = tuple(
    (re.compile(pattern, re.DOTALL), replacement)
    for pattern, replacement in (
        # rasa.utils.endpoints.ClientResponseError: f"{status}, {message}, body='{text}'", where text
        # is the action server's reply (rasa_sdk puts the whole request, the tracker, into it).
        (r"(\d{3}, [^\n]*?, body=).*", r"\1" + REDACTED),
        # RemoteAction.run: "Failed to run custom action '{}'. Action server responded with a non 200
        # status code of {}. Make sure ... Error: {}" (the error may carry the reply).
        (
            r"(Failed to run custom action '[^'\n]*'\. Action server responded with a non 200 status"
            r" code of \S+\..*?Error: ).*",
            r"\1" + REDACTED,
        ),
    )
)
# SQLAlchemy's text for an engine made with hide_parameters=True (components/rasa_server.py makes
# Rasa's tracker store do that): the statement without its values is kept, PostgreSQL's DETAIL
# lines (which quote key values, such as a sender id) are not.
_SQL_PARAMETERS_HIDDEN = "[SQL parameters hidden due to hide_parameters=True]"
_POSTGRES_DETAIL = re.compile(r"(DETAIL:[ \t]*)[^\n]*")


def redact_error_text(text: str) -> str:
    """An error's text with anything that may be private replaced by "[redacted]" (Rasa's own wording kept)."""
    if not text.strip():
        return text
    if any(pattern.fullmatch(text) for pattern in _KEPT_ERRORS):
        return text
    for pattern, replacement in _PARTLY_KEPT_ERRORS:
        if pattern.fullmatch(text):
            return pattern.sub(replacement, text, count=1)
    if _SQL_PARAMETERS_HIDDEN in text:
        return _POSTGRES_DETAIL.sub(r"\1" + REDACTED, text)
    return REDACTED


def _type_name(exc_type: type) -> str:
    """An exception type's name as tracebacks print it ("KeyError", "rasa.shared.exceptions.RasaException")."""
    module = getattr(exc_type, "__module__", None)
    if module in (None, "builtins", "__main__"):
        return exc_type.__qualname__
    return f"{module}.{exc_type.__qualname__}"


def redact_exception_message(exc: BaseException) -> str:
    """An exception's message as kept in the logs: a failed reply check says where; anything else via redact_error_text."""
    if type(exc).__module__.startswith("jsonschema") and hasattr(exc, "validator"):
        # jsonschema's ValidationError prints the whole reply it checked (response texts, slot values).
        where = "/".join(str(part) for part in getattr(exc, "absolute_path", ())) or "the top"
        return f"the action server's reply failed the {exc.validator!r} check at {where}: {REDACTED}"
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails has nothing to keep
        return REDACTED
    return redact_error_text(text)


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _chain_lines(exc: BaseException, seen: set) -> List[str]:
    """The traceback lines of exc and the exceptions it was raised from, with redacted messages."""
    seen.add(id(exc))
    lines: List[str] = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        lines += _chain_lines(cause, seen) + [_CAUSE]
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        lines += _chain_lines(context, seen) + [_CONTEXT]
    if exc.__traceback__ is not None:
        lines.append("Traceback (most recent call last):\n")
        lines += traceback.format_tb(exc.__traceback__)
    message = redact_exception_message(exc)
    lines.append(f"{_type_name(type(exc))}: {message}\n" if message else f"{_type_name(type(exc))}\n")
    return lines


def redacted_traceback(exc: BaseException) -> str:
    """The traceback Python would print for exc (frames, types, chained causes), each exception's message redacted."""
    return "".join(_chain_lines(exc, set())).rstrip("\n")


def _exception_from(exc_info: Any) -> Optional[BaseException]:
    """The exception an `exc_info` value refers to (True: the one being handled), or None."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1]
    if exc_info is True:
        return sys.exc_info()[1]
    return None


@dataclass(frozen=True)
class Rule:
    """A known Rasa (or Sanic, asyncio) message shape and how to redact it; `function` limits it to one caller."""

    pattern: Pattern[str]
    replacement: Union[str, Callable[["re.Match[str]"], str]]
    function: Optional[str] = None
    lowest_level: int = LOWEST_REDACTED_LEVEL

    def apply(self, record: logging.LogRecord, message: str) -> str:
        """The message with this rule's redaction, or the message unchanged when the rule does not apply."""
        if record.levelno < self.lowest_level or (self.function and record.funcName != self.function):
            return message
        return self.pattern.sub(self.replacement, message)


def _rule(
    pattern: str, replacement: Union[str, Callable], function: Optional[str] = None, level: int = LOWEST_REDACTED_LEVEL
) -> Rule:
    """A Rule whose pattern matches across lines."""
    return Rule(re.compile(pattern, re.DOTALL), replacement, function, level)


def _sender(match: "re.Match[str]") -> str:
    """The sender id in a message redacted, its channel prefix ("web-", "tg-") kept."""
    channel = re.match(r"[a-z]{1,10}-", match.group("sender"))
    return match.group("before") + (channel.group(0) if channel else "") + REDACTED + match.group("after")


def _error_part(match: "re.Match[str]") -> str:
    """The "error" group of a message passed through redact_error_text."""
    return match.group("before") + redact_error_text(match.group("error")) + match.group("after")


_REDACTED_URL_QUERY = r"\g<url>?" + REDACTED
_ASYNCIO_CONTEXT_LINE = r"\g<key>: " + REDACTED

# The message shapes redacted, by logger (the format strings are quoted from Rasa 3.6.21, Sanic 21.12
# and Python 3.10's asyncio). Messages of these loggers that match none of them are Rasa's own
# wording with action, response or slot names only, and are kept as they are.
MESSAGE_RULES: Dict[str, tuple] = {
    "rasa.core.actions.action": (
        # ActionExtractSlots: f"Failed to execute custom action '{custom_action}' as a result of error
        # '{str(e)}'. The default action '{self.name()}' failed to fill slots with custom mappings."
        _rule(
            r"^(?P<before>Failed to execute custom action '[^'\n]*' as a result of error ')(?P<error>.*)"
            r"(?P<after>'\. The default action '[^'\n]*' failed to fill slots with custom mappings\.)$",
            _error_part,
        ),
        # RemoteAction.run on a 400 reply: logger.error(exception.message), the text the action server
        # sent back. Rasa's other messages in run() ("Couldn't create message for response '{}'.",
        # "Failed to run custom action '{}'. Couldn't connect to the server at ...") are kept.
        _rule(
            r"^(?!Couldn't create message for response |Failed to run custom action '"
            r"|Custom action '[^'\n]*' rejected (?:to run$|execution\.$)"
            r"|Failed to extract slot [\w.-]+ with action [\w.-]+$).*$",
            "A custom action rejected to run: " + REDACTED,
            function="run",
            level=logging.ERROR,
        ),
    ),
    "rasa.core.processor": (
        # f"Circuit breaker tripped. Stopped predicting more actions for sender '{tracker.sender_id}'."
        _rule(
            r"^(?P<before>Circuit breaker tripped\. Stopped predicting more actions for sender ')"
            r"(?P<sender>.*)(?P<after>'\.)$",
            _sender,
        ),
    ),
    "rasa.shared.core.events": (
        # f"Event from parameters called with parameters for multiple events. ... Parameters: {parameters}"
        _rule(r"^(Event from parameters called with parameters for multiple events\..*?Parameters: ).*$", r"\1" + REDACTED),
    ),
    "rasa.core.tracker_store": (
        # f"... Please investigate the following error: {error}." and f"Could not create tables: {e}":
        # SQL errors (values hidden) may quote key values in PostgreSQL's DETAIL line.
        Rule(_POSTGRES_DETAIL, r"\1" + REDACTED),
    ),
    "rasa.server": (
        # ErrorResponse logs its message: f"An unexpected error occurred. Error: {e}" and friends.
        _rule(r"^(?P<before>.*?Error: )(?P<error>.*)(?P<after>)$", _error_part),
        # "Messages of sender '{}' cannot be handled.".format(sender)
        _rule(r"^(?P<before>Messages of sender ')(?P<sender>.*)(?P<after>' cannot be handled\.)$", _sender),
    ),
    "sanic.error": (
        # "Exception occurred while handling uri: %s" (and "... for uri: %s"), repr(request.url):
        # the query string is redacted.
        _rule(r"(?P<url>uri: '[^'?\s]*)\?[^'\s]*", _REDACTED_URL_QUERY),
    ),
    "sanic.root": (
        # f'The error response will not be sent to the client for the following exception:"{exception}".'
        _rule(
            r'^(?P<before>The error response will not be sent to the client for the following exception:")'
            r'(?P<error>.*)(?P<after>"\. A previous response has at least partially been sent\.)$',
            _error_part,
        ),
    ),
    "asyncio": (
        # default_exception_handler: "Exception in callback {callback with its arguments}", then one
        # "key: repr(value)" line per context item (a task's repr names its exception and message).
        _rule(r"^Exception in callback [^\n]*", "Exception in callback " + REDACTED),
        Rule(re.compile(r"^(?P<key>[a-z_]+): (?!\[redacted\]$).*$", re.MULTILINE), _ASYNCIO_CONTEXT_LINE),
    ),
}
# Every message of these loggers also has its traceback's messages redacted (above: "Nothing is dropped").
PRIVATE_LOGGERS = tuple(MESSAGE_RULES) + ("rasa.core.channels.rest", "rasa.core.channels.channel", "rasa.core.nlg.interpolator")


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record of one of PRIVATE_LOGGERS in place: its message by MESSAGE_RULES, its traceback's messages."""
    if record.levelno < LOWEST_REDACTED_LEVEL or getattr(record, "companion_redacted", False):
        return
    record.companion_redacted = True
    if isinstance(record.msg, BaseException) and not record.args:
        # Sanic: error_logger.exception(exception): the message is the exception itself.
        record.msg = f"{_type_name(type(record.msg))}: {redact_exception_message(record.msg)}"
    rules = MESSAGE_RULES.get(record.name, ())
    if rules:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left to logging's own error report
            message = None
        if message is not None:
            redacted = message
            for rule in rules:
                redacted = rule.apply(record, redacted)
            if redacted != message:
                record.msg, record.args = redacted, ()
    exception = _exception_from(record.exc_info)
    if exception is not None:
        # Formatters print exc_text when it is set; without exc_info no handler can print the original.
        record.exc_text = redacted_traceback(exception)
        record.exc_info = None


class PrivateLogFilter(logging.Filter):
    """A logging filter that redacts private content from records (redact_record) and lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact record in place; always True: records are changed, never dropped."""
        redact_record(record)
        return True


def install_log_filter(logger_names: Iterable[str] = PRIVATE_LOGGERS) -> PrivateLogFilter:
    """Put one PrivateLogFilter on each named logger (once); returns the filter in use."""
    loggers = [logging.getLogger(name) for name in logger_names]
    installed = next(
        (f for logger in loggers for f in logger.filters if isinstance(f, PrivateLogFilter)), None
    )
    log_filter = installed or PrivateLogFilter()
    for logger in loggers:
        if not any(isinstance(f, PrivateLogFilter) for f in logger.filters):
            logger.addFilter(log_filter)
    return log_filter


# Structured (structlog) event keys that may carry private content: Rasa's own list of keys to
# anonymise (rasa.utils.log_utils._anonymizer) and a few more.
SENSITIVE_EVENT_KEYS = frozenset(
    {
        "text", "response_text", "user_text", "slot_values", "parse_data_text", "parse_data_entities",
        "prediction_events", "tracker_latest_message", "prefilled_slots", "message", "response",
        "slot_candidates", "rasa_event", "rasa_events", "tracker_states", "current_states",
        "old_states", "successes", "current_entity", "next_entity", "states", "entity", "token_text",
        "user_message", "json_message",
        "sender_id", "conversation_id", "tracker", "slots", "body", "request_body", "token",
    }
)


def redact_event_dict(_logger: Any, method_name: str, event_dict: Dict[str, Any]) -> Dict[str, Any]:
    """structlog processor: private keys become "[redacted]", an exception becomes a redacted traceback (no locals)."""
    if method_name == "debug":
        return event_dict
    for key in SENSITIVE_EVENT_KEYS.intersection(event_dict):
        event_dict[key] = REDACTED
    exc_info = event_dict.get("exc_info")
    if method_name == "exception" and exc_info is None:
        exc_info = True
    exception = _exception_from(exc_info)
    if exception is not None:
        # Rasa renders exc_info with every frame's local variables (the message, the tracker...).
        event_dict["exception"] = redacted_traceback(exception)
    if exc_info is not None:
        event_dict["exc_info"] = False  # set, so that structlog's set_exc_info does not add it back
    return event_dict


def add_structlog_redaction() -> None:
    """Put redact_event_dict first in structlog's current processors (once); call after Rasa configures structlog."""
    import structlog

    processors = list(structlog.get_config()["processors"])
    if redact_event_dict not in processors:
        structlog.configure(processors=[redact_event_dict] + processors)
