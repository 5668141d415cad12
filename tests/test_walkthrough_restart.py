"""Stopping every server in the middle of Step 3 loses nothing: the champion carries on and finishes."""
from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from bench.stack import MODEL, running_stack

pytestmark = pytest.mark.model

STEP_2_ANSWERS = [
    "Attend the monthly meetings for a year",
    "Fewer people in Copeland having a stroke",
    "Patients and staff plan the service together",
    "Compare hospital admissions before and after",
    "Better stroke prevention in the community",
]
STEP_5_ANSWERS = [
    "Review the aims with the project lead every quarter",
    "Leaflets rewritten after patient feedback",
    "A survey of patients and staff",
    "Share what worked at the patient network meeting",
]


def _post(url: str, body: Dict) -> List[Dict]:
    """Send one chat message to the web chat API and return the companion's replies."""
    request = urllib.request.Request(
        f"{url}/api/messages", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["messages"]


class Champion:
    """One champion typing into the web chat page."""

    def __init__(self, url: str, sender_id: str) -> None:
        """Talk to the web chat at url as sender_id."""
        self.url, self.sender_id = url, sender_id

    def say(self, text: str) -> str:
        """Type a message; return the companion's replies joined."""
        self.last = _post(self.url, {"sender_id": self.sender_id, "text": text})
        return "\n".join(m["text"] for m in self.last)

    def tap(self, title_part: str) -> str:
        """Tap the button whose title contains title_part."""
        buttons = [b for m in self.last for b in m["buttons"] if title_part.lower() in b["title"].lower()]
        assert buttons, f"no button like {title_part!r} in {self.last}"
        button = buttons[0]
        self.last = _post(self.url, {"sender_id": self.sender_id, "payload": button["payload"],
                                     "title": button["title"]})
        return "\n".join(m["text"] for m in self.last)


def test_restart_in_the_middle_of_step_3_keeps_every_answer(tmp_path: Path):
    """Answers given before a full restart are all in the finished plan."""
    if not MODEL.exists():
        pytest.fail("models/coproduction.tar.gz is missing: the test command trains it first")
    sender = uuid.uuid4().hex
    with running_stack(data_dir=tmp_path) as stack:
        me = Champion(stack.web_url, sender)
        assert "name" in me.say("help me with my project").lower()
        me.say("Stroke project")
        me.say("Improving stroke care in Copeland")
        me.tap("Co-design")
        assert "ladder" in me.tap("Done").lower()
        me.tap("Yes")
        me.tap("Yes")
        me.tap("No")
        reply = me.tap("Yes")
        assert "step 2" in reply.lower()
        for answer in STEP_2_ANSWERS:
            reply = me.say(answer)
        assert "step 3" in reply.lower()
        me.tap("Being realistic")
        reply = me.tap("Done")
        assert "be prepared" in reply.lower()  # the stack stops here, mid-Step 3

    with running_stack(data_dir=tmp_path) as stack:
        me = Champion(stack.web_url, sender)
        reply = me.say("hello")
        assert "carry on" in reply.lower() and "be prepared" in reply.lower()  # the same question
        me.tap("Yes, I will")
        me.tap("Engagement team")
        me.tap("Done")
        reply = me.tap(me.last[-1]["buttons"][0]["title"])
        assert "step 5" in reply.lower()
        for answer in STEP_5_ANSWERS:
            reply = me.say(answer)
        plan = me.say("show my plan")
        for answer in STEP_2_ANSWERS + STEP_5_ANSWERS[:1]:
            assert answer[:30] in plan, answer
        download = [b["url"] for m in me.last for b in m["buttons"] if b.get("url")]
        assert download, me.last
        with urllib.request.urlopen(f"{stack.web_url}{download[0]}", timeout=30) as response:
            markdown = response.read().decode()
        for answer in STEP_2_ANSWERS + STEP_5_ANSWERS:
            assert answer in markdown, answer
        assert "Stroke project" in markdown
