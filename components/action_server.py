"""Run the action server (`python -m components.action_server --actions actions --port 5055`) with private
content kept out of its logs.

It is rasa_sdk's own command line (the same options as `rasa run actions`, which only hands over to it,
after importing all of Rasa), started after `components/log_privacy.py`'s filter is on the loggers an
unexpected error reaches: rasa_sdk's "Exception occurred during execution of request" record, Sanic's and
asyncio's, whose tracebacks would otherwise carry the exception's message (a champion's words, if an
action's error quoted them). The error's type, the traceback's frames and the action's name are kept
(SECURITY.md, "Logging").

Before the server takes its first call, the actions package's `warm_up()` (if it has one) loads what the
first conversations would otherwise wait for (actions/warm_up.py).
"""
from __future__ import annotations

from typing import Optional

# rasa_sdk's loggers that write at INFO or above (an error's traceback included).
ACTION_SERVER_LOGGERS = ("rasa_sdk.endpoint", "rasa_sdk.executor", "rasa_sdk.forms", "rasa_sdk.interfaces",
                         "rasa_sdk.utils")


def warm_up(package: Optional[str]) -> None:
    """Run the actions package's warm_up module, if it has one."""
    import importlib
    import importlib.util

    try:
        found = package and importlib.util.find_spec(f"{package}.warm_up")
    except ModuleNotFoundError:  # no such package: rasa_sdk says so itself
        found = None
    if found:
        importlib.import_module(f"{package}.warm_up").warm_up()


def main() -> None:
    """Install the log filter, warm the actions up, then hand over to rasa_sdk's command line."""
    from rasa_sdk.__main__ import main_from_args
    from rasa_sdk.endpoint import create_argument_parser

    from components import log_privacy

    log_privacy.install_log_filter(log_privacy.PRIVATE_LOGGERS + ACTION_SERVER_LOGGERS)
    args = create_argument_parser().parse_args()
    warm_up(args.actions)
    main_from_args(args)


if __name__ == "__main__":
    main()
