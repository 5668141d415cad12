"""Rasa sender ids and the app database's (channel, external id) pairs: one mapping for every process."""
from __future__ import annotations

from typing import Optional, Tuple

# Prefix in the Rasa sender id -> channel name in the app database. Only these can be delivered to.
PREFIX_TO_CHANNEL = {"web": "web", "tg": "telegram"}
CHANNEL_TO_PREFIX = {channel: prefix for prefix, channel in PREFIX_TO_CHANNEL.items()}
DELIVERABLE_CHANNELS = tuple(PREFIX_TO_CHANNEL.values())
# Senders without a known prefix (rasa shell's "default", test stories, probes).
OTHER_CHANNEL = "rasa"
EXTERNAL_ID_MAX = 128


def split_sender(sender_id: Optional[str]) -> Tuple[str, str]:
    """(channel, external id) from a Rasa sender id: "web-1a2b" → ("web", "1a2b"), "tg-42" → ("telegram", "42")."""
    prefix, sep, external = (sender_id or "").partition("-")
    if sep and external and prefix.lower() in PREFIX_TO_CHANNEL:
        return PREFIX_TO_CHANNEL[prefix.lower()], external[:EXTERNAL_ID_MAX]
    return OTHER_CHANNEL, (sender_id or "unknown")[:EXTERNAL_ID_MAX]


def sender_id(channel: str, external_id: str) -> str:
    """The Rasa sender id for a champion: ("telegram", "42") → "tg-42"."""
    return f"{CHANNEL_TO_PREFIX.get(channel, channel)}-{external_id}"
