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
