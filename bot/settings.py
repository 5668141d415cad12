"""Settings for the web chat process, read from the environment when asked (never at import time)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

# Repository root: relative defaults (DATA_DIR=data) are resolved against the
# current directory, like every other command in the README.
ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything the web chat process needs to know about its environment."""

    data_dir: Path
    database_url: str
    rasa_url: str
    web_host: str
    web_port: int
    rasa_timeout_seconds: float
    max_message_chars: int


def _number(env: Mapping[str, str], name: str, default: str, kind: type, minimum: float) -> float:
    """Read a number from env, refusing junk and values below minimum with a clear message."""
    raw = (env.get(name) or default).strip()
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Build Settings from environ (default: os.environ), filling in the documented defaults."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("DATA_DIR") or "data")
    database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'app.db'}"
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        rasa_url=(env.get("RASA_URL") or "http://127.0.0.1:5005").rstrip("/"),
        web_host=env.get("WEB_HOST") or "127.0.0.1",
        web_port=int(_number(env, "WEB_PORT", "8000", int, 0)),
        rasa_timeout_seconds=float(_number(env, "RASA_TIMEOUT_SECONDS", "10", float, 0.1)),
        max_message_chars=int(_number(env, "MAX_MESSAGE_CHARS", "2000", int, 1)),
    )
