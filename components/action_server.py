"""Run the action server (`python -m components.action_server --actions actions --port 5055`) with private
content kept out of its logs.

It is rasa_sdk's own command line (the same options as `rasa run actions`, which only hands over to it,
after importing all of Rasa), started after `components/log_privacy.py`'s filter is on the loggers an
unexpected error reaches: rasa_sdk's "Exception occurred during execution of request" record, Sanic's and
asyncio's, whose tracebacks would otherwise carry the exception's message (a champion's words, if an
action's error quoted them). The error's type, the traceback's frames and the action's name are kept
(SECURITY.md, "Logging").
"""
from __future__ import annotations

# rasa_sdk's loggers that write at INFO or above (an error's traceback included).
ACTION_SERVER_LOGGERS = ("rasa_sdk.endpoint", "rasa_sdk.executor", "rasa_sdk.forms", "rasa_sdk.interfaces",
                         "rasa_sdk.utils")


def main() -> None:
    """Install the log filter, then hand over to rasa_sdk's command line."""
    from components import log_privacy

    log_privacy.install_log_filter(log_privacy.PRIVATE_LOGGERS + ACTION_SERVER_LOGGERS)
    from rasa_sdk.__main__ import main as sdk_main

    sdk_main()


if __name__ == "__main__":
    main()
