"""Settings for the web chat and delivery processes, read from the environment when asked (never at import time)."""
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
    """Everything the web chat and delivery processes need to know about its environment."""

    data_dir: Path
    database_url: str
    rasa_url: str
    web_host: str
    web_port: int
    rasa_timeout_seconds: float
    max_message_chars: int
    # Telegram (the delivery process runs the bot only when a token is set).
    telegram_bot_token: Optional[str] = None
    telegram_mode: str = "polling"  # "polling" or "webhook"
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_webhook_url: Optional[str] = None
    telegram_webhook_secret: Optional[str] = None
    telegram_webhook_host: str = "127.0.0.1"
    telegram_webhook_port: int = 8443
    # Telegram's limits: about 30 messages a second overall, about one a second per chat.
    telegram_max_per_second: float = 30.0
    telegram_seconds_per_chat: float = 1.0
    # The delivery layer.
    delivery_poll_seconds: float = 1.0
    delivery_max_attempts: int = 10
    # The reminder scheduler (inside the delivery process).
    reminder_tick_seconds: float = 1.0
    reminder_batch_size: int = 1000
    # The engagement team's tools (broadcasts, groups): refused when unset.
    team_token: Optional[str] = None
    # The web chat's public address (https://...), for link buttons on Telegram; unset: no links.
    public_base_url: Optional[str] = None
    organisations_file: Path = ROOT / "knowledge" / "organisations.yml"
    # Rasa's endpoints file: where its tracker store (the conversations) lives, read by the
    # "what do you know about me?" download and the erasure pass (bot/rasa_tracker.py).
    rasa_endpoints: Path = Path("endpoints.yml")
    # "Delete my data": the erasure pass removes a champion this long after their request
    # and their last message (bot/erasure.py).
    erasure_delay_seconds: float = 10.0
    # Conversation records (transcripts, Rasa's events, sent messages) older than this are deleted.
    retention_days: float = 365.0
    retention_check_seconds: float = 3600.0
    # The engagement team's console (bot/console): where it listens, how long a session lasts
    # without use, how many wrong passwords lock a username (for CONSOLE_LOCKOUT_MINUTES), and
    # whether its cookie needs HTTPS (set CONSOLE_SECURE_COOKIE=true behind an HTTPS proxy).
    console_host: str = "127.0.0.1"
    console_port: int = 8001
    console_idle_minutes: float = 30.0
    console_max_failures: int = 5
    console_lockout_minutes: float = 15.0
    console_secure_cookie: bool = False

    @property
    def rasa_urls(self) -> tuple:
        """The Rasa servers in RASA_URL (one, or several separated by commas)."""
        from bot.rasa_client import parse_rasa_urls

        return parse_rasa_urls(self.rasa_url)


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


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple) -> str:
    """Read one of a few allowed words from env, refusing anything else with a clear message."""
    raw = (env.get(name) or default).strip().lower()
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


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
        telegram_bot_token=(env.get("TELEGRAM_BOT_TOKEN") or "").strip() or None,
        telegram_mode=_choice(env, "TELEGRAM_MODE", "polling", ("polling", "webhook")),
        telegram_api_base_url=(env.get("TELEGRAM_API_BASE_URL") or "https://api.telegram.org/bot"),
        telegram_webhook_url=env.get("TELEGRAM_WEBHOOK_URL") or None,
        telegram_webhook_secret=env.get("TELEGRAM_WEBHOOK_SECRET") or None,
        telegram_webhook_host=env.get("TELEGRAM_WEBHOOK_HOST") or "127.0.0.1",
        telegram_webhook_port=int(_number(env, "TELEGRAM_WEBHOOK_PORT", "8443", int, 0)),
        telegram_max_per_second=float(_number(env, "TELEGRAM_MAX_PER_SECOND", "30", float, 0.1)),
        telegram_seconds_per_chat=float(_number(env, "TELEGRAM_SECONDS_PER_CHAT", "1", float, 0)),
        delivery_poll_seconds=float(_number(env, "DELIVERY_POLL_SECONDS", "1", float, 0.01)),
        delivery_max_attempts=int(_number(env, "DELIVERY_MAX_ATTEMPTS", "10", int, 1)),
        reminder_tick_seconds=float(_number(env, "REMINDER_TICK_SECONDS", "1", float, 0.05)),
        reminder_batch_size=int(_number(env, "REMINDER_BATCH_SIZE", "1000", int, 1)),
        team_token=(env.get("TEAM_TOKEN") or "").strip() or None,
        public_base_url=(env.get("PUBLIC_BASE_URL") or "").strip().rstrip("/") or None,
        organisations_file=Path(env.get("ORGANISATIONS_FILE") or ROOT / "knowledge" / "organisations.yml"),
        rasa_endpoints=Path(env.get("RASA_ENDPOINTS") or "endpoints.yml"),
        erasure_delay_seconds=float(_number(env, "ERASURE_DELAY_SECONDS", "10", float, 0)),
        retention_days=float(_number(env, "RETENTION_DAYS", "365", float, 1)),
        retention_check_seconds=float(_number(env, "RETENTION_CHECK_SECONDS", "3600", float, 1)),
        console_host=env.get("CONSOLE_HOST") or "127.0.0.1",
        console_port=int(_number(env, "CONSOLE_PORT", "8001", int, 0)),
        console_idle_minutes=float(_number(env, "CONSOLE_IDLE_MINUTES", "30", float, 1)),
        console_max_failures=int(_number(env, "CONSOLE_MAX_FAILURES", "5", int, 1)),
        console_lockout_minutes=float(_number(env, "CONSOLE_LOCKOUT_MINUTES", "15", float, 1)),
        console_secure_cookie=_choice(env, "CONSOLE_SECURE_COOKIE", "false", ("true", "false")) == "true",
    )
