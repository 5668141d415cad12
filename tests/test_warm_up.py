"""The action server reads the knowledge files and loads the date parser before its first call."""
import sys

from bot import content
from components.action_server import warm_up


def test_the_action_server_warms_up_the_actions_before_the_first_call(monkeypatch):
    """After warm_up, every knowledge file the actions read is in memory and dateparser is loaded."""
    monkeypatch.setattr(content, "_cache", {})
    monkeypatch.delitem(sys.modules, "dateparser", raising=False)
    warm_up("actions")
    read = {path.name for path, _parse in content._cache}
    assert {"checkins.yml", "five_steps.yml", "reflections.yml", "reminders.yml", "time_zones.yml"} <= read
    assert "dateparser" in sys.modules


def test_a_package_without_a_warm_up_or_no_package_is_left_to_rasa_sdk():
    """No warm_up module, an unknown package or none at all: nothing happens here (rasa_sdk reports its own errors)."""
    warm_up("components")
    warm_up("no_such_actions_package")
    warm_up(None)
