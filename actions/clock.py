"""The action server's clock: the real time, or one that tests pin."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Optional

_clock: Optional[Callable[[], datetime]] = None


def set_clock(clock: Optional[Callable[[], datetime]]) -> None:
    """Read "now" from clock (tests pin it); None: the real time."""
    global _clock
    _clock = clock


def now() -> datetime:
    """The current time in UTC (or the pinned one)."""
    return (_clock or (lambda: datetime.now(timezone.utc)))().astimezone(timezone.utc)
