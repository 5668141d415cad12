"""Companion messages as Telegram sees them: HTML parse mode, parts below 4,096 characters, inline keyboards."""
from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urljoin, urlsplit

import yaml
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode

from bot.delivery_models import TelegramCallback
from bot.settings import ROOT

TELEGRAM_FILE = ROOT / "knowledge" / "telegram.yml"
PARSE_MODE = ParseMode.HTML
# Telegram refuses messages over 4,096 characters; we keep each part's HTML source, counted
# in UTF-16 code units as Telegram counts (an emoji is two), a little below that.
PART_LIMIT = 4000
MAX_CALLBACK_BYTES = 64
CALLBACK_PREFIX = "cb:"
REQUIRED_REPLIES = (
    "help", "stopped", "already_stopped", "started_again", "not_text", "empty_message", "too_long",
    "trouble", "no_reply", "unknown_command", "button_expired", "chosen", "buttons_only",
)

# Our light formatting: **bold**, [label](https://link), "- " or "* " bullet lines.
TOKEN = re.compile(
    r"(?P<bold>\*\*(?=\S)(?P<bold_text>[^\n]*?\S)\*\*)"
    r"|(?P<link>\[(?P<label>[^\]\n]+)\]\((?P<url>https?://[^\s()<>\"]+)\))"
    r"|(?P<para>\n[ \t]*\n\s*)"
    r"|(?P<line>\n)"
    r"|(?P<space>[ \t]+)"
    r"|(?P<word>[^\s*\[]+)"
    r"|(?P<char>.)",
    re.DOTALL,
)
BULLET = re.compile(r"^[ \t]*[-*][ \t]+", re.MULTILINE)
SEPARATORS = ("para", "line", "space")

Part = Tuple[str, Optional[InlineKeyboardMarkup]]


def load_wording(path: Path = TELEGRAM_FILE) -> Dict[str, Any]:
    """Read knowledge/telegram.yml, checking that every reply and the command menu are there."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    replies = data.get("replies") or {}
    missing = [key for key in REQUIRED_REPLIES if not isinstance(replies.get(key), str)]
    if missing:
        raise ValueError(f"{path} lacks replies: {', '.join(missing)}")
    commands = data.get("commands") or []
    if not commands or not all(isinstance(c, dict) and c.get("command") and c.get("description") for c in commands):
        raise ValueError(f"{path} needs a list of commands with command and description")
    return data


@lru_cache(maxsize=1)
def _default_wording() -> Dict[str, Any]:
    """knowledge/telegram.yml, read once."""
    return load_wording()


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the way Telegram counts message length."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    """Text made safe for Telegram's HTML parse mode (<, > and & become entities)."""
    return html.escape(text, quote=False)


@dataclass
class _Atom:
    """A piece of the message that is never split: a word, a space, a line break, a formatted span."""

    kind: str
    raw: str
    html: str
    size: int


def _atom(kind: str, raw: str, rendered: str) -> _Atom:
    """An atom with its rendered size."""
    return _Atom(kind, raw, rendered, utf16_len(rendered))


def _atoms(text: str) -> List[_Atom]:
    """text cut into atoms, each already rendered to Telegram HTML."""
    atoms = []
    for match in TOKEN.finditer(text):
        kind = match.lastgroup
        raw = match.group(0)
        if match.group("bold"):
            atoms.append(_atom("bold", match.group("bold_text"), f"<b>{escape(match.group('bold_text'))}</b>"))
        elif match.group("link"):
            url = html.escape(match.group("url"), quote=True)
            atoms.append(_atom("link", match.group("label"), f'<a href="{url}">{escape(match.group("label"))}</a>'))
        elif kind == "para":
            atoms.append(_atom("para", raw, "\n\n"))
        elif kind in ("char", "word"):
            atoms.append(_atom("word", raw, escape(raw)))
        else:
            atoms.append(_atom(kind, raw, escape(raw)))
    return atoms


def _hard_split(atom: _Atom, limit: int) -> List[_Atom]:
    """An atom too big for one part, cut between characters (never inside an entity or a tag)."""
    opening, closing = ("<b>", "</b>") if atom.kind == "bold" else ("", "")
    room = limit - utf16_len(opening + closing)
    pieces: List[_Atom] = []
    current: List[str] = []
    size = 0
    for char in atom.raw:
        rendered = escape(char)
        width = utf16_len(rendered)
        if current and size + width > room:
            pieces.append(_atom("word", "".join(current), opening + escape("".join(current)) + closing))
            current, size = [], 0
        current.append(char)
        size += width
    if current:
        pieces.append(_atom("word", "".join(current), opening + escape("".join(current)) + closing))
    return pieces


def _best_cut(atoms: List[_Atom], start: int, end: int, limit: int) -> int:
    """Where to end a part that holds atoms[start:end]: the last paragraph break, else line
    break, past half the part; else the last space; else between atoms."""
    sizes = []
    total = 0
    for atom in atoms[start:end]:
        sizes.append(total)
        total += atom.size
    for kind, minimum in (("para", limit // 2), ("line", limit // 2), ("space", 0)):
        for index in range(end - 1, start, -1):
            if atoms[index].kind == kind and sizes[index - start] >= minimum:
                return index
    return end


def split_html(text: str, limit: int = PART_LIMIT) -> List[str]:
    """text rendered to Telegram HTML and cut into parts of at most limit UTF-16 units each,
    at paragraph, line or word boundaries where possible."""
    atoms = _atoms(BULLET.sub("• ", text))
    parts: List[str] = []
    index = 0
    while index < len(atoms):
        while index < len(atoms) and atoms[index].kind in SEPARATORS:
            index += 1
        if index >= len(atoms):
            break
        end, total = index, 0
        while end < len(atoms) and total + atoms[end].size <= limit:
            total += atoms[end].size
            end += 1
        if end == len(atoms):
            cut = end
        elif end == index:  # a single atom larger than a part
            atoms[index:index + 1] = _hard_split(atoms[index], limit)
            continue
        else:
            cut = _best_cut(atoms, index, end, limit)
        part = "".join(atom.html for atom in atoms[index:cut]).strip()
        if part:
            parts.append(part)
        index = cut
    return parts


def _normalise(text: str) -> str:
    """Unify line breaks and trim."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def public_url(url: str, public_base_url: Optional[str]) -> Optional[str]:
    """url made absolute against the configured public address, or None where there is none."""
    if not public_base_url or not isinstance(url, str) or not url.strip():
        return None
    absolute = urljoin(public_base_url.rstrip("/") + "/", url.strip())
    parts = urlsplit(absolute)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return absolute


def keyboard(
    buttons: Optional[Sequence[Dict[str, Any]]],
    store_callback: Callable[[str], str],
    public_base_url: Optional[str] = None,
) -> Optional[InlineKeyboardMarkup]:
    """An inline keyboard with one button per row: payload buttons send their payload back
    (via store_callback when it is over 64 bytes); link buttons only with a public address."""
    rows = []
    for button in buttons or []:
        if not isinstance(button, dict):
            continue
        title = button.get("title")
        if not isinstance(title, str) or not title.strip():
            continue
        payload, url = button.get("payload"), button.get("url")
        if isinstance(payload, str) and payload.strip():
            data = payload if len(payload.encode("utf-8")) <= MAX_CALLBACK_BYTES else store_callback(payload)
            rows.append([InlineKeyboardButton(title.strip(), callback_data=data)])
        elif isinstance(url, str):
            absolute = public_url(url, public_base_url)
            if absolute:
                rows.append([InlineKeyboardButton(title.strip(), url=absolute)])
    return InlineKeyboardMarkup(rows) if rows else None


def render(
    text: str,
    buttons: Optional[Sequence[Dict[str, Any]]],
    store_callback: Callable[[str], str],
    *,
    public_base_url: Optional[str] = None,
    limit: int = PART_LIMIT,
) -> List[Part]:
    """One companion message as Telegram messages: (HTML text, keyboard) parts, each below
    Telegram's limit, everything escaped and our light formatting rendered; the keyboard is
    on the last part. Empty text with buttons gets a short "please choose" line."""
    markup = keyboard(buttons, store_callback, public_base_url)
    parts = split_html(_normalise(text or ""), limit)
    if not parts:
        if markup is None:
            return []
        parts = [escape(_default_wording()["replies"]["buttons_only"])]
    return [(part, markup if number == len(parts) - 1 else None) for number, part in enumerate(parts)]


def callback_key(payload: str) -> str:
    """The short, stable key a long payload is stored under (the same payload, the same key)."""
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return CALLBACK_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii")[:24]


class CallbackRepository:
    """Button payloads too long for Telegram's callback_data, kept in telegram_callbacks under short keys."""

    def __init__(self, session_factory: "sessionmaker[Session]", cache_size: int = 2048) -> None:
        """Use session_factory for every call; remember up to cache_size stored keys."""
        self._sessions = session_factory
        self._known: Dict[str, str] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _remember(self, key: str, payload: str) -> None:
        """Keep key -> payload in the small in-memory cache."""
        with self._lock:
            if len(self._known) >= self._cache_size:
                self._known.pop(next(iter(self._known)))
            self._known[key] = payload

    def store(self, payload: str) -> str:
        """Store payload (once) and return its key, to use as callback_data."""
        key = callback_key(payload)
        if key in self._known:
            return key
        with self._sessions() as session:
            if session.get(TelegramCallback, key) is None:
                session.add(TelegramCallback(key=key, payload=payload))
                try:
                    session.commit()
                except IntegrityError:  # stored by someone else a moment ago
                    session.rollback()
        self._remember(key, payload)
        return key

    def lookup(self, key: str) -> Optional[str]:
        """The payload stored under key, or None."""
        if key in self._known:
            return self._known[key]
        with self._sessions() as session:
            row = session.get(TelegramCallback, key)
            payload = row.payload if row is not None else None
        if payload is not None:
            self._remember(key, payload)
        return payload

    def resolve(self, data: str) -> Optional[str]:
        """The payload a button's callback_data stands for (itself, or looked up); None if unknown."""
        if data.startswith(CALLBACK_PREFIX):
            return self.lookup(data)
        return data
