"""'What do you know about me?' and 'delete my data' on the live stack: real Rasa, action server, web chat, delivery.

The champion chats, downloads their file, asks for deletion and taps yes. A moment later
the erasure pass has removed them from the app database and every one of their events
from Rasa's own tracker store (both queried directly); what they send next starts afresh.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from bench.stack import MODEL, running_stack

pytestmark = pytest.mark.model
# How long the stack may take to start (Rasa loading its model on a busy machine).
LIVE_STACK_TIMEOUT = float(os.environ.get("LIVE_STACK_TIMEOUT", "180"))


def _post(url: str, body: Dict) -> List[Dict]:
    """Send one chat message to the web chat API and return the companion's replies."""
    request = urllib.request.Request(
        f"{url}/api/messages", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["messages"]


def _get(url: str) -> bytes:
    """GET url; the body."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _count(db: Path, sql: str, *params) -> int:
    """One number from a SQLite database, queried directly."""
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql, params).fetchone()[0]
    finally:
        connection.close()


def test_download_then_delete_leaves_nothing_and_a_new_message_starts_afresh(tmp_path: Path):
    """The file has the conversation; after 'yes', the app row and every Rasa event go; chatting again is new."""
    if not MODEL.exists():
        pytest.fail("models/coproduction.tar.gz is missing: the test command trains it first")
    sender = uuid.uuid4().hex
    other = uuid.uuid4().hex
    with running_stack(data_dir=tmp_path, timeout=LIVE_STACK_TIMEOUT, extra_env={"ERASURE_DELAY_SECONDS": "1"}) as stack:
        app_db, tracker_db = tmp_path / "app.db", tmp_path / "rasa_tracker.db"
        _post(stack.web_url, {"sender_id": other, "text": "what is co-production?"})
        _post(stack.web_url, {"sender_id": sender, "text": "what is co-production?"})
        replies = _post(stack.web_url, {"sender_id": sender, "text": "what do you know about me?"})
        assert "Here's what I keep about you" in replies[0]["text"]
        links = [b["url"] for m in replies for b in m["buttons"] if "url" in b]
        assert links == [f"/api/my-data.json?sender_id={sender}"]
        data = json.loads(_get(stack.web_url + links[0]))
        said = [e["data"]["text"] for e in data["conversation"]["events"] if e["event"] == "user"]
        assert said == ["what is co-production?", "what do you know about me?"]

        question = _post(stack.web_url, {"sender_id": sender, "text": "delete my data"})
        yes = [b for m in question for b in m["buttons"] if b.get("title") == "Yes, delete everything"]
        assert yes, question
        done = _post(stack.web_url, {"sender_id": sender, "payload": yes[0]["payload"], "title": yes[0]["title"]})
        assert done[0]["text"].startswith("Done.")

        deadline = time.monotonic() + 60
        while _count(app_db, "SELECT count(*) FROM champions WHERE channel = 'web' AND external_id = ?", sender):
            assert time.monotonic() < deadline, (tmp_path / "delivery.log").read_text()[-3000:]
            time.sleep(0.5)
        assert _count(tracker_db, "SELECT count(*) FROM events WHERE sender_id = ?", f"web-{sender}") == 0
        assert _count(app_db, "SELECT count(*) FROM chat_messages WHERE text LIKE 'Done.%'") == 0
        # Someone else's conversation is untouched.
        assert _count(tracker_db, "SELECT count(*) FROM events WHERE sender_id = ?", f"web-{other}") > 0
        assert _count(app_db, "SELECT count(*) FROM champions WHERE external_id = ?", other) == 1

        # Coming back: a fresh, empty record.
        history = json.loads(_get(f"{stack.web_url}/api/history?sender_id={sender}"))["messages"]
        assert history == []
        replies = _post(stack.web_url, {"sender_id": sender, "text": "what do you know about me?"})
        assert "Messages in our chat: 1" in replies[0]["text"] and "Projects: none" in replies[0]["text"]
        data = json.loads(_get(f"{stack.web_url}/api/my-data.json?sender_id={sender}"))
        said = [e["data"]["text"] for e in data["conversation"]["events"] if e["event"] == "user"]
        assert said == ["what do you know about me?"]
