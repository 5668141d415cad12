"""Run Rasa's command line (`python -m components.rasa_server run ...`) with a faster action-reply check.

Rasa 3.6 checks every reply from the action server with `jsonschema.validate`, which
re-checks the schema itself on each call: that took over half of the Rasa process's
time per message in bench/latency.py. Here the schema is compiled once and each reply
is still validated against it; an invalid reply goes through Rasa's own check, so the
error and its message are exactly Rasa's.
"""
from __future__ import annotations

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


def main() -> None:
    """Install the faster check, then hand over to Rasa's own command line."""
    install_cached_action_validation()
    from rasa.__main__ import main as rasa_main

    sys.argv[0] = "rasa"
    rasa_main()


if __name__ == "__main__":
    main()
