"""Settings of the action server, read from the environment on first use (never at import time)."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ActionSettings:
    """What the custom actions need to know about their environment."""

    data_dir: Path
    database_url: str
    # The organisations champions volunteer with (ORGANISATIONS_FILE; see knowledge/organisations.yml).
    organisations_file: Path = ROOT / "knowledge" / "organisations.yml"


def load_settings(environ: Optional[Mapping[str, str]] = None) -> ActionSettings:
    """Build ActionSettings from environ (default: os.environ): DATA_DIR (data), DATABASE_URL, ORGANISATIONS_FILE."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("DATA_DIR") or "data")
    database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'app.db'}"
    organisations_file = Path(env.get("ORGANISATIONS_FILE") or ROOT / "knowledge" / "organisations.yml")
    return ActionSettings(data_dir=data_dir, database_url=database_url, organisations_file=organisations_file)


_lock = threading.Lock()
_settings: Optional[ActionSettings] = None


def get_settings() -> ActionSettings:
    """The action server's settings, read from the environment the first time they are asked for."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings()
        return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    global _settings
    with _lock:
        _settings = None
