"""Sending a champion's message to Rasa's REST channel, on one Rasa server or several.

`RASA_URL` may list more than one Rasa server, separated by commas (the
production set-up runs two, sharing the PostgreSQL tracker store and the Redis
lock store, so any of them can take any turn of any conversation). Each
conversation has its own server, chosen from its sender id (the same in every
process), and all its messages go there: that server keeps the conversation in
memory between turns (components/tracker_store.py) instead of reading it back
from the database, and never waits for the other server's turn on the lock.
Conversations spread evenly over the servers. A server that refuses the
connection (stopped, restarting) is skipped and the same message goes to the
next one: a refused
connection means the message never arrived, so it can't be answered twice. A
server that took the message but answered badly or too slowly is not retried
elsewhere, for the same reason; the caller shows its "trouble" wording.
"""
from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Dict, List, Optional, Sequence

import aiohttp

from bot.rasa_replies import rasa_messages

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/rest/webhook"


def parse_rasa_urls(raw: Optional[str], default: str = "http://127.0.0.1:5005") -> tuple:
    """The Rasa servers in RASA_URL ("http://a:5005, http://b:5006"), without trailing slashes."""
    urls = tuple(part.strip().rstrip("/") for part in (raw or "").split(",") if part.strip())
    return urls or (default,)


class RasaClient:
    """Posts messages to Rasa's REST channel, each conversation to its own server, skipping refused ones."""

    def __init__(self, urls: Sequence[str]) -> None:
        """Use the given server base addresses (at least one)."""
        if not urls:
            raise ValueError("at least one Rasa server address is needed")
        self.urls = tuple(urls)

    def server_for(self, sender: str) -> str:
        """The server that answers the conversation of sender while it is up."""
        return self._order(sender)[0]

    def _order(self, sender: str) -> List[str]:
        """Every server once, starting with the conversation's own (a stable hash of its sender id)."""
        start = zlib.crc32(sender.encode("utf-8", "surrogatepass")) % len(self.urls)
        return [self.urls[(start + i) % len(self.urls)] for i in range(len(self.urls))]

    async def replies(self, http: aiohttp.ClientSession, sender: str, message: str) -> Optional[List[Dict[str, Any]]]:
        """Rasa's replies ({"text", "buttons"} each), or None when no server could answer properly."""
        for url in self._order(sender):
            try:
                async with http.post(f"{url}{WEBHOOK_PATH}", json={"sender": sender, "message": message}) as response:
                    if response.status != 200:
                        log.warning("Rasa at %s answered with HTTP %s", url, response.status)
                        return None
                    return rasa_messages(await response.json(content_type=None))
            except aiohttp.ClientConnectorError as exc:
                log.warning("Rasa at %s refused the connection (%s); trying the next server", url, exc)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                log.warning("Rasa at %s did not answer (%s)", url, type(exc).__name__)
                return None
        return None
