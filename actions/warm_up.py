"""What the first conversations after the action server starts would otherwise wait for.

The knowledge files (knowledge/*.yml) are read, and the date parser (dateparser, with its English
data and time zone tables) is imported and run once, on the first message that needs them: that
made the first reminder after each start take about 0.4 s longer than the rest (bench/RESULTS.md).
components/action_server.py calls `warm_up()` before the server takes its first call.
"""
from __future__ import annotations

from datetime import datetime, timezone


def warm_up() -> None:
    """Read every knowledge file the actions use and run the date parser once."""
    from bot import checkins, my_data, plans, reflections, reminder_times, time_zones

    for module in (checkins, my_data, plans, reflections, reminder_times, time_zones):
        module.load_content()
    reminder_times.parse_meeting("remind me about the PPG meeting on 23/11 at 2pm", datetime.now(timezone.utc))
