"""The champion's own details: the organisation they volunteer with, their engagement team, team messages off and on.

Actions are run the way Rasa runs them (Tracker + CollectingDispatcher) against a real,
migrated app database (SQLite and PostgreSQL where storage matters).
"""
from __future__ import annotations

import json
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import func, select

from actions import champions as ch
from actions.settings import reset_settings
from actions.db import use_sessions
from bot.db import make_engine, make_session_factory, migrate
from bot.models import Champion
from bot.organisations import (
    OTHER,
    OrganisationError,
    OrganisationRecorder,
    load_organisations,
    parse_organisations,
)
from bot.team_models import Group, GroupMember

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "knowledge" / "organisations.yml"
RESPONSES: Dict[str, List[Dict[str, Any]]] = yaml.safe_load((ROOT / "domain" / "champions.yml").read_text())["responses"]
DOMAIN = {"responses": {**RESPONSES, "utter_deny": [{"text": "No problem."}]}}

FILLED = """
organisations:
  - key: leeds
    name: Leeds
    aliases: [NHS Leeds]
    engagement_contact: "The Leeds engagement team: team@example.org"
    local_resources:
      - title: Join our patient network
        url: https://example.org/join
      - title: Patient champion programme
        url: https://example.org/champions
  - key: south-tyneside
    name: South Tyneside
    engagement_contact: "Ask for the involvement lead at the front desk"
  - key: north-cumbria
    name: North Cumbria
    local_resources:
      - title: Improvement month
        url: https://example.org/clic
choices:
  other: Not listed
  skip: Not now
"""


# --- driving the actions -------------------------------------------------------------------------


def parse(text: str, intent: str, entities: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """What NLU would make of text (button payloads parsed like Rasa's /intent{json} syntax)."""
    match = re.fullmatch(r"/(\w+)(\{.*\})?", text)
    if match:
        intent = match.group(1)
        entities = json.loads(match.group(2)) if match.group(2) else {}
    return {
        "text": text,
        "intent": {"name": intent, "confidence": 1.0 if match else 0.9},
        "entities": [{"entity": k, "value": v} for k, v in (entities or {}).items()],
    }


class Chat:
    """One champion's conversation: slots and events kept between turns, as Rasa keeps them."""

    def __init__(self, sender: Optional[str] = None) -> None:
        """A new conversation (a fresh web champion unless sender is given)."""
        self.sender = sender or f"web-{uuid.uuid4()}"
        self.slots: Dict[str, Any] = {ch.ASKED_SLOT: None}
        self.events: List[Dict[str, Any]] = []

    async def run(self, action, text: str, intent: str = "nlu_fallback", **entities: str) -> List[Dict[str, Any]]:
        """The champion sends text, then `action` runs; returns what it said."""
        latest = parse(text, intent, entities)
        self.events.append({"event": "user", "text": text, "parse_data": latest})
        tracker = Tracker(self.sender, dict(self.slots), latest, list(self.events), False, None, {}, "action_listen")
        dispatcher = CollectingDispatcher()
        for event in await action.run(dispatcher, tracker, DOMAIN):
            if event.get("event") == "slot":
                self.slots[event["name"]] = event["value"]
        for message in dispatcher.messages:  # as Rasa logs a reply sent by a custom action
            self.events.append({"event": "bot", "text": render(message), "metadata": {"utter_action": message.get("response")}})
        return dispatcher.messages

    async def greet(self) -> List[Dict[str, Any]]:
        """Hello: the greeting's organisation question (utter_greet and the resume offer are not ours)."""
        return await self.run(ch.ActionAskOrganisation(), "hello", "greet")


def render(message: Dict[str, Any]) -> str:
    """The text Rasa would send: the domain response filled with the values the action gave."""
    name = message.get("response")
    if not name:
        return message.get("text") or ""
    template = DOMAIN["responses"][name][0]["text"]
    return template.format(**{k: v for k, v in message.items() if k not in ("response", "buttons")})


def said(messages: List[Dict[str, Any]]) -> List[str]:
    """The responses sent, by name."""
    return [m.get("response") for m in messages]


def payloads(message: Dict[str, Any]) -> List[str]:
    """The payloads of a message's buttons."""
    return [b["payload"] for b in message.get("buttons") or []]


def write(path: Path, text: str) -> Path:
    """Write an organisations file."""
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def organisations_file(tmp_path, monkeypatch):
    """Point ORGANISATIONS_FILE at a file the test can rewrite (a copy of the default to start with)."""
    path = tmp_path / "organisations.yml"
    path.write_text(DEFAULT_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("ORGANISATIONS_FILE", str(path))
    reset_settings()
    yield path
    reset_settings()


@pytest.fixture
def sessions(engine, organisations_file):
    """The actions use this migrated database (SQLite and PostgreSQL) and the test's organisations file."""
    factory = make_session_factory(engine)
    use_sessions(factory)
    yield factory
    use_sessions(None)


@pytest.fixture
def sqlite_sessions(tmp_path, organisations_file):
    """The actions on a migrated SQLite file (for tests where the database kind doesn't matter)."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    use_sessions(factory)
    yield factory
    use_sessions(None)
    engine.dispose()


def champion(sessions, chat: Chat) -> Champion:
    """The chat's champion row as the database has it now."""
    channel, external_id = ch.split_sender(chat.sender)
    with sessions() as session:
        return session.execute(
            select(Champion).where(Champion.channel == channel, Champion.external_id == external_id)
        ).scalar_one()


def groups_of(sessions, chat: Chat) -> List[str]:
    """Names of the organisation groups the chat's champion is in."""
    champion_id = champion(sessions, chat).id
    with sessions() as session:
        return list(session.execute(
            select(Group.name).join(GroupMember, GroupMember.group_id == Group.id)
            .where(GroupMember.champion_id == champion_id, Group.kind == "organisation").order_by(Group.name)
        ).scalars())


# --- the organisations file ----------------------------------------------------------------------


def test_default_file_names_the_seed_organisations_and_invents_no_contacts():
    """Leeds, South Tyneside and North Cumbria are offered, with no contact details or links made up."""
    directory = load_organisations(DEFAULT_FILE)
    assert [o.name for o in directory.organisations] == ["Leeds", "South Tyneside", "North Cumbria"]
    assert all(o.engagement_contact is None and o.local_resources == () for o in directory.organisations)
    data = yaml.safe_load(DEFAULT_FILE.read_text())
    values = json.dumps(data)
    assert not re.search(r"\S+@\S+\.\w+|https?://|www\.|\d{4,}", values)


def test_matching_is_case_insensitive_uses_aliases_and_whole_words():
    """What people type finds the organisation; a neighbouring place or a part-word does not."""
    directory = load_organisations(DEFAULT_FILE)
    found = {text: (directory.match(text).key if directory.match(text) else None) for text in [
        "I volunteer with LEEDS now", "nhs-leeds!", "Leeds Engagement Hub", "south tyneside ccg", "STCCG",
        "i'm in cumbria", "Copeland", "North Tyneside", "leedsy", "Bristol", "", "😀" * 500,
        "<script>alert('leeds')</script>", "'; DROP TABLE groups; --", "مرحبا",
    ]}
    assert found == {
        "I volunteer with LEEDS now": "leeds", "nhs-leeds!": "leeds", "Leeds Engagement Hub": "leeds",
        "south tyneside ccg": "south-tyneside", "STCCG": "south-tyneside", "i'm in cumbria": "north-cumbria",
        "Copeland": "north-cumbria", "North Tyneside": None, "leedsy": None, "Bristol": None, "": None,
        "😀" * 500: None, "<script>alert('leeds')</script>": "leeds", "'; DROP TABLE groups; --": None, "مرحبا": None,
    }
    assert directory.get("SOUTH-TYNESIDE").name == "South Tyneside"


def test_buttons_offer_each_organisation_then_not_listed_and_not_now():
    """The question's buttons: one per organisation, then "Not listed" and "Not now"."""
    buttons = load_organisations(DEFAULT_FILE).buttons()
    assert [b["title"] for b in buttons] == ["Leeds", "South Tyneside", "North Cumbria", "Not listed", "Not now"]
    assert buttons[0]["payload"] == '/choose_organisation{"organisation":"leeds"}'
    assert buttons[3]["payload"] == '/choose_organisation{"organisation":"other"}'
    assert buttons[4]["payload"] == "/skip_organisation"


@pytest.mark.parametrize("text,complaint", [
    ("organisations: {}", "must be a list"),
    ("organisations:\n  - name: X\n", "key"),
    ("organisations:\n  - key: other\n    name: X\n", "key"),
    ("organisations:\n  - key: Has Space\n    name: X\n", "key"),
    ("organisations:\n  - key: a\n    name: ''\n", "name"),
    ("organisations:\n  - key: a\n    name: A\n  - key: a\n    name: B\n", "used twice"),
    ("organisations:\n  - key: a\n    name: A\n  - key: b\n    name: a\n", "used twice"),
    ("organisations:\n  - key: a\n    name: A\n    phone: '0113'\n", "unknown fields: phone"),
    ("organisations:\n  - key: a\n    name: A\n    local_resources: [{title: T, url: 'javascript:alert(1)'}]\n", "url"),
    ("organisations:\n  - key: a\n    name: A\n    local_resources: [{url: 'https://x.org'}]\n", "title"),
    ("organisations:\n  - key: a\n    name: A\n    aliases: B\n", "aliases"),
    ("organisations: []\nchoices: {other: Not listed}\n", "choices.skip"),
    ("- just a list", "mapping"),
])
def test_malformed_files_are_refused_with_a_clear_message(text, complaint):
    """Whatever is wrong in the file is named, instead of failing somewhere later."""
    data = yaml.safe_load(text)
    if isinstance(data, dict) and "choices" not in data:
        data["choices"] = {"other": "Not listed", "skip": "Not now"}
    with pytest.raises(OrganisationError, match=complaint):
        parse_organisations(data)


def test_unreadable_or_broken_yaml_is_refused(tmp_path):
    """A missing file or broken YAML is an OrganisationError naming the file."""
    with pytest.raises(OrganisationError, match="cannot read"):
        load_organisations(tmp_path / "nope.yml")
    with pytest.raises(OrganisationError, match="not valid YAML"):
        load_organisations(write(tmp_path / "bad.yml", "organisations: [\n"))


# --- asked once, after the greeting --------------------------------------------------------------


async def test_greeting_asks_once_with_buttons(sqlite_sessions):
    """A new champion is asked which organisation they volunteer with, once; nothing is saved until they answer."""
    chat = Chat()
    first = await chat.greet()
    assert said(first) == ["utter_ask_organisation"]
    assert payloads(first[0])[-2:] == ['/choose_organisation{"organisation":"other"}', "/skip_organisation"]
    assert chat.slots[ch.ASKED_SLOT] is True
    assert champion(sqlite_sessions, chat).organisation is None
    assert await chat.greet() == []


async def test_greeting_does_not_ask_a_champion_who_has_answered(sqlite_sessions):
    """Someone who chose before (say, in another conversation) is not asked again."""
    chat = Chat()
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    later = Chat(chat.sender)  # a new conversation: no slots
    assert await later.greet() == []


async def test_no_question_when_no_organisations_are_configured(sqlite_sessions, organisations_file):
    """A deployment without organisations never asks."""
    write(organisations_file, "organisations: []\nchoices: {other: Not listed, skip: Not now}\n")
    assert await Chat().greet() == []


# --- choosing, changing, not listed, skipping ---------------------------------------------------


async def test_button_choice_is_saved_with_group_membership(sessions):
    """Tapping Leeds saves it at once and puts the champion in the "Leeds" organisation group."""
    chat = Chat()
    await chat.greet()
    reply = await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    assert said(reply) == ["utter_organisation_saved"]
    assert render(reply[0]).startswith("Thanks, I've noted that you volunteer with Leeds.")
    assert champion(sessions, chat).organisation == "leeds"
    assert groups_of(sessions, chat) == ["Leeds"]


async def test_typed_organisation_and_changing_it_later(sessions):
    """"I volunteer with Leeds now" works without an entity; changing moves the champion between groups."""
    chat, other = Chat(), Chat()
    await chat.run(ch.ActionChooseOrganisation(), "I volunteer with leeds now", "choose_organisation")
    await other.run(ch.ActionChooseOrganisation(), "my organisation is Leeds", "choose_organisation",
                    organisation="Leeds")
    reply = await chat.run(ch.ActionChooseOrganisation(), "I'm with South Tyneside CCG these days",
                           "choose_organisation", organisation="South Tyneside CCG")
    assert render(reply[0]).startswith("Thanks, I've noted that you volunteer with South Tyneside.")
    assert champion(sessions, chat).organisation == "south-tyneside"
    assert groups_of(sessions, chat) == ["South Tyneside"]
    assert groups_of(sessions, other) == ["Leeds"]
    recorder = OrganisationRecorder(sessions)
    leeds = load_organisations(DEFAULT_FILE).get("leeds")
    assert recorder.members(leeds) == [champion(sessions, other).id]
    with sessions() as session:  # one group per organisation, however many join
        assert session.execute(select(func.count()).select_from(Group).where(Group.name == "Leeds")).scalar() == 1


async def test_choosing_the_same_organisation_twice_keeps_one_membership(sessions):
    """Saying it again changes nothing."""
    chat = Chat()
    for _ in range(2):
        await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"north-cumbria"}')
    assert groups_of(sessions, chat) == ["North Cumbria"]


async def test_not_listed_is_saved_as_other_and_leaves_the_old_group(sessions):
    """"Not listed": saved as "other", out of the previous organisation's group, told who to ask."""
    chat = Chat()
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    reply = await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"other"}')
    assert said(reply) == ["utter_organisation_other"]
    assert "person who invited you" in render(reply[0])
    assert champion(sessions, chat).organisation == OTHER
    assert groups_of(sessions, chat) == []


async def test_an_unlisted_name_is_not_saved_or_echoed(sqlite_sessions):
    """A place that isn't on the list: asked to tap theirs or "Not listed"; what they typed isn't repeated."""
    chat = Chat()
    typed = "I volunteer with <b>Bristol</b>"
    reply = await chat.run(ch.ActionChooseOrganisation(), typed, "choose_organisation", organisation="<b>Bristol</b>")
    assert said(reply) == ["utter_organisation_not_found"]
    assert "Bristol" not in render(reply[0]) and len(reply[0]["buttons"]) == 5
    assert champion(sqlite_sessions, chat).organisation is None


async def test_change_my_organisation_names_the_current_one(sqlite_sessions):
    """"Change my organisation" says what is saved now and offers the buttons."""
    chat = Chat()
    reply = await chat.run(ch.ActionChooseOrganisation(), "change my organisation", "choose_organisation")
    assert said(reply) == ["utter_ask_organisation"]
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    reply = await chat.run(ch.ActionChooseOrganisation(), "/choose_organisation")
    assert said(reply) == ["utter_ask_organisation_change"]
    assert "volunteering with Leeds" in render(reply[0]) and len(payloads(reply[0])) == 5


async def test_skipping_the_question(sqlite_sessions):
    """"Not now", or a "no" straight after the question, skips it; a "no" to something else is a plain no."""
    chat = Chat()
    await chat.greet()
    assert said(await chat.run(ch.ActionSkipOrganisation(), "/skip_organisation")) == ["utter_organisation_skipped"]
    assert champion(sqlite_sessions, chat).organisation is None
    assert await chat.greet() == []  # asked once only

    chat = Chat()
    await chat.greet()
    assert said(await chat.run(ch.ActionSkipOrganisation(), "no thanks", "deny")) == ["utter_organisation_skipped"]
    assert said(await chat.run(ch.ActionSkipOrganisation(), "no", "deny")) == ["utter_deny"]


# --- the engagement team -------------------------------------------------------------------------


async def test_engagement_team_without_details_says_so_plainly(sqlite_sessions):
    """With the default file, the bot says the team hasn't added details and to ask who invited them."""
    chat = Chat()
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    reply = await chat.run(ch.ActionEngagementTeam(), "who is my engagement team?", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_no_details"]
    text = render(reply[0])
    assert text.startswith("Your team at Leeds hasn't added its contact details or local resources here yet.")
    assert "person who invited you" in text
    assert not re.search(r"\d|@|https?://", text)


async def test_engagement_team_details_come_from_configuration(sqlite_sessions, organisations_file):
    """Contact and resources as the team filled them in; missing parts said plainly; file edits apply at once."""
    leeds, tyneside, cumbria = Chat(), Chat(), Chat()
    for chat, key in ((leeds, "leeds"), (tyneside, "south-tyneside"), (cumbria, "north-cumbria")):
        await chat.run(ch.ActionChooseOrganisation(), f'/choose_organisation{{"organisation":"{key}"}}')
    write(organisations_file, FILLED)  # edited while running: read again, no restart

    reply = await leeds.run(ch.ActionEngagementTeam(), "local resources", "ask_engagement_team")
    assert [render(m) for m in reply] == [
        "Your engagement team at Leeds: The Leeds engagement team: team@example.org",
        "Local resources from Leeds:\nJoin our patient network: https://example.org/join\n"
        "Patient champion programme: https://example.org/champions",
    ]
    reply = await tyneside.run(ch.ActionEngagementTeam(), "who is my engagement team", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_contact"]
    reply = await cumbria.run(ch.ActionEngagementTeam(), "who is my engagement team", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_no_contact", "utter_local_resources"]
    assert render(reply[1]).endswith("Improvement month: https://example.org/clic")


async def test_engagement_team_before_choosing_or_when_not_listed(sqlite_sessions):
    """Not chosen yet: asked which organisation (with buttons). Not listed: told who to ask instead."""
    chat = Chat()
    reply = await chat.run(ch.ActionEngagementTeam(), "who is my engagement team", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_need_organisation"] and len(payloads(reply[0])) == 5
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"other"}')
    reply = await chat.run(ch.ActionEngagementTeam(), "who is my engagement team", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_other"]


async def test_an_organisation_removed_from_the_file_is_asked_again(sqlite_sessions, organisations_file):
    """If the team removes an organisation, its champions are asked to choose again rather than told nothing."""
    chat = Chat()
    await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"north-cumbria"}')
    write(organisations_file, "organisations:\n  - {key: leeds, name: Leeds}\nchoices: {other: Not listed, skip: Not now}\n")
    reply = await chat.run(ch.ActionEngagementTeam(), "who is my engagement team", "ask_engagement_team")
    assert said(reply) == ["utter_engagement_need_organisation"]
    assert [b["title"] for b in reply[0]["buttons"]] == ["Leeds", "Not listed", "Not now"]


# --- team messages off and on --------------------------------------------------------------------


async def test_opting_out_and_back_in_is_saved_at_once(sessions):
    """"Stop messages from the team" sets opted_out_at and says what it means; "start" clears it."""
    chat = Chat()
    reply = await chat.run(ch.ActionOptOutMessages(), "stop messages from the team", "opt_out_messages")
    assert said(reply) == ["utter_opted_out"]
    text = render(reply[0])
    assert "won't get messages from the engagement team" in text and "Reminders you set" in text
    assert "start team messages" in text and payloads(RESPONSES["utter_opted_out"][0]) == ["/opt_in_messages"]
    assert champion(sessions, chat).opted_out_at is not None
    reply = await chat.run(ch.ActionOptInMessages(), "/opt_in_messages")
    assert said(reply) == ["utter_opted_in"]
    assert champion(sessions, chat).opted_out_at is None


async def test_telegram_conversations_use_the_telegram_champion(sqlite_sessions):
    """Sender "tg-<chat id>" is the champion with channel "telegram" and that chat id."""
    assert ch.split_sender("tg-123456789") == ("telegram", "123456789")
    assert ch.split_sender("web-3f2a-9c1e") == ("web", "3f2a-9c1e")
    chat = Chat("tg-987654321")
    await chat.run(ch.ActionOptOutMessages(), "unsubscribe", "opt_out_messages")
    row = champion(sqlite_sessions, chat)
    assert (row.channel, row.external_id) == ("telegram", "987654321") and row.opted_out_at is not None


# --- trouble -------------------------------------------------------------------------------------


async def test_database_down_gets_a_kind_reply(tmp_path, organisations_file):
    """No database: "couldn't save that", never a crash; the greeting just doesn't ask."""
    engine = make_engine(f"sqlite:///{tmp_path}")  # a folder, not a database file
    use_sessions(make_session_factory(engine))
    try:
        chat = Chat()
        assert await chat.greet() == []
        for action, text in ((ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}'),
                             (ch.ActionOptOutMessages(), "/opt_out_messages"),
                             (ch.ActionEngagementTeam(), "/ask_engagement_team")):
            assert said(await chat.run(action, text)) == ["utter_champion_trouble"]
    finally:
        use_sessions(None)
        engine.dispose()


async def test_broken_organisations_file_gets_a_kind_reply(sqlite_sessions, organisations_file):
    """A malformed file is logged; champions hear "couldn't save that", not an error."""
    write(organisations_file, "organisations: [\n")
    chat = Chat()
    assert await chat.greet() == []
    reply = await chat.run(ch.ActionChooseOrganisation(), '/choose_organisation{"organisation":"leeds"}')
    assert said(reply) == ["utter_champion_trouble"]


def test_every_reply_the_actions_send_is_in_the_domain():
    """All wording is in domain/champions.yml: each response the actions name exists there."""
    source = (ROOT / "actions" / "champions.py").read_text()
    named = set(re.findall(r'"(utter_\w+)"', source)) - {"utter_deny"}
    assert named and named <= set(RESPONSES), named - set(RESPONSES)
    assert set(RESPONSES) <= named, set(RESPONSES) - named
