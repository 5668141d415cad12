"""Groups of champions and the team's credentials, on SQLite and on the local PostgreSQL server."""
from __future__ import annotations

import pytest

from bot.db import make_session_factory
from bot.groups import GROUP_NAME_MAX, GroupRepository, TeamInputError
from bot.text import clean_text
from bot.repository import ChatRepository
from bot.team_auth import NotAuthorised, TeamPass, authorise

TOKEN = "correct horse battery staple"


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated database."""
    return make_session_factory(engine)


@pytest.fixture
def groups(sessions):
    """A GroupRepository on the migrated database."""
    return GroupRepository(sessions)


@pytest.fixture
def chats(sessions):
    """The chat repository, to make champions."""
    return ChatRepository(sessions)


@pytest.fixture
def auth():
    """A pass for the engagement team."""
    return authorise(TOKEN, TOKEN)


# --- credentials --------------------------------------------------------------------------------


def test_tools_are_switched_off_without_a_configured_token():
    """With no TEAM_TOKEN configured, no token (not even an empty one) opens the tools."""
    for presented in (None, "", TOKEN):
        with pytest.raises(NotAuthorised, match="TEAM_TOKEN is not set"):
            authorise(None, presented)
    with pytest.raises(NotAuthorised, match="TEAM_TOKEN is not set"):
        authorise("   ", "   ")


def test_wrong_or_missing_token_is_refused_and_the_right_one_accepted():
    """Only the configured token, exactly, gives a pass."""
    with pytest.raises(NotAuthorised, match="not right"):
        authorise(TOKEN, TOKEN + "x")
    with pytest.raises(NotAuthorised, match="not right"):
        authorise(TOKEN, TOKEN.upper())
    with pytest.raises(NotAuthorised, match="not right"):
        authorise(TOKEN, "pässwörd 🙂")  # not ASCII: compared safely, still refused
    with pytest.raises(NotAuthorised, match="needed"):
        authorise(TOKEN, None)
    assert isinstance(authorise(TOKEN, f"  {TOKEN}\n"), TeamPass)  # as read from a file
    with pytest.raises(NotAuthorised):
        TeamPass(object())  # cannot be made by hand


def test_changing_groups_needs_a_team_pass(groups, chats, auth):
    """Creating a group and adding or removing members are refused without a pass; nothing changes."""
    champion = chats.get_or_create_champion("telegram", "1")
    for fake in (None, "correct horse battery staple", object()):
        with pytest.raises(NotAuthorised):
            groups.create_group("cohort", "Spring 2026", auth=fake)
    assert groups.list_groups() == []
    groups.create_group("cohort", "Spring 2026", auth=auth)
    with pytest.raises(NotAuthorised):
        groups.add_members("cohort", "Spring 2026", [champion.id], auth=TOKEN)
    with pytest.raises(NotAuthorised):
        groups.remove_members("cohort", "Spring 2026", [champion.id], auth=None)
    assert groups.members("cohort", "Spring 2026") == []


# --- groups -------------------------------------------------------------------------------------


def test_group_names_are_trimmed_and_matched_ignoring_case(groups, auth):
    """'  Spring   2026 ' and 'SPRING 2026' are the same cohort; the same name may be a project too."""
    group, created = groups.create_group("cohort", "  Spring   2026 ", auth=auth)
    assert created and group.name == "Spring 2026" and group.kind == "cohort"
    again, created = groups.create_group("Cohort", "SPRING 2026", auth=auth)
    assert not created and again.id == group.id
    assert groups.find_group("cohort", "spring 2026").id == group.id
    project, created = groups.create_group("project", "Spring 2026", auth=auth)
    assert created and project.id != group.id
    # Any script matches ignoring case, not just ASCII.
    welsh, _ = groups.create_group("organisation", "Ysbyty Gwynedd – ÉQUIPE 🏥", auth=auth)
    assert groups.find_group("organisation", "ysbyty gwynedd – équipe 🏥").id == welsh.id
    assert groups.find_group("organisation", "Ysbyty") is None
    assert [g.label for g in groups.list_groups()] == [
        "organisation: Ysbyty Gwynedd – ÉQUIPE 🏥",
        "cohort: Spring 2026",
        "project: Spring 2026",
    ]


def test_bad_kinds_and_names_get_clear_errors(groups, auth):
    """Unknown kinds, empty, blank and over-long names are refused with a reason; nothing is stored."""
    with pytest.raises(TeamInputError, match="organisation, cohort, project"):
        groups.create_group("team", "Blue", auth=auth)
    with pytest.raises(TeamInputError, match="not a kind of group"):
        groups.create_group("", "Blue", auth=auth)
    with pytest.raises(TeamInputError, match="needs a name"):
        groups.create_group("cohort", "   \t\n", auth=auth)
    with pytest.raises(TeamInputError, match="needs a name"):
        groups.create_group("cohort", "\x00\x07\x1b", auth=auth)
    with pytest.raises(TeamInputError, match=f"{GROUP_NAME_MAX} or fewer"):
        groups.create_group("cohort", "x" * (GROUP_NAME_MAX + 1), auth=auth)
    assert groups.list_groups() == []
    longest, _ = groups.create_group("cohort", "y" * GROUP_NAME_MAX, auth=auth)
    assert len(longest.name) == GROUP_NAME_MAX
    organization, _ = groups.create_group("Organization", "NHS Leeds", auth=auth)
    assert organization.kind == "organisation"


def test_markup_and_injection_names_are_stored_as_typed(groups, auth):
    """Names with markup, quotes and SQL are kept verbatim (control characters only are dropped)."""
    names = ["<b>Bold</b> & co", "'; DROP TABLE groups; --", 'Group "A" {{x}}', "مجموعة الأبطال"]
    for name in names:
        groups.create_group("project", name, auth=auth)
    groups.create_group("project", "Tab\there\x1b[31m", auth=auth)
    assert sorted(g.name for g in groups.list_groups()) == sorted(names + ["Tab here[31m"])


def test_members_added_and_removed_idempotently_with_counts(groups, chats, auth):
    """Adding twice keeps one membership; removing someone not in the group does nothing; counts follow."""
    a, b, c = (chats.get_or_create_champion("telegram", str(n)) for n in (1, 2, 3))
    groups.create_group("cohort", "Spring 2026", auth=auth)
    groups.create_group("project", "Stroke pathway", auth=auth)
    assert groups.add_members("cohort", "spring 2026", [a.id, b.id], auth=auth) == 2
    assert groups.add_members("cohort", "Spring 2026", [a.id, b.id, c.id, c.id], auth=auth) == 1
    assert groups.add_members("project", "stroke PATHWAY", [a.id], auth=auth) == 1
    counts = {g.label: g.members for g in groups.list_groups()}
    assert counts == {"cohort: Spring 2026": 3, "project: Stroke pathway": 1}
    assert [m.id for m in groups.members("cohort", "Spring 2026")] == [a.id, b.id, c.id]
    assert [g.label for g in groups.champion_groups(a.id)] == ["cohort: Spring 2026", "project: Stroke pathway"]
    assert groups.remove_members("cohort", "Spring 2026", [b.id], auth=auth) == 1
    assert groups.remove_members("cohort", "Spring 2026", [b.id], auth=auth) == 0
    assert [m.id for m in groups.members("cohort", "Spring 2026")] == [a.id, c.id]
    assert groups.champion_group_labels() == {
        a.id: ["cohort: Spring 2026", "project: Stroke pathway"],
        c.id: ["cohort: Spring 2026"],
    }


def test_unknown_group_or_champion_changes_nothing(groups, chats, auth):
    """Adding to a group that does not exist, or adding an unknown champion id, is refused whole."""
    a = chats.get_or_create_champion("web", "a")
    with pytest.raises(TeamInputError, match="no cohort group called 'Nobody'"):
        groups.add_members("cohort", "Nobody", [a.id], auth=auth)
    with pytest.raises(TeamInputError, match="no cohort group"):
        groups.members("cohort", "Nobody")
    groups.create_group("cohort", "Real", auth=auth)
    with pytest.raises(TeamInputError, match="No champion with id 999"):
        groups.add_members("cohort", "Real", [a.id, 999], auth=auth)
    with pytest.raises(TeamInputError, match="which champions"):
        groups.add_members("cohort", "Real", [], auth=auth)
    assert groups.members("cohort", "Real") == []


def test_champions_listed_with_flags_and_found_by_channel(groups, chats):
    """The team's list shows channel, organisation, stop and unreachable; look-up by id or chat id."""
    a = chats.get_or_create_champion("web", "uuid-a")
    b = chats.get_or_create_champion("telegram", "123456")
    c = chats.get_or_create_champion("telegram", "654321")
    chats.add_message(a, "in", "something private")
    chats.set_opted_out(b, True)
    chats.set_reachable(c, False, "Forbidden: bot was blocked by the user")
    listed = groups.list_champions()
    assert [(x.id, x.channel, x.opted_out, x.unreachable) for x in listed] == [
        (a.id, "web", False, False),
        (b.id, "telegram", True, False),
        (c.id, "telegram", False, True),
    ]
    assert listed[2].unreachable_reason == "Forbidden: bot was blocked by the user"
    assert not any("private" in repr(x) or "uuid-a" in repr(x) for x in listed)  # no text, no chat ids
    assert groups.find_champion(b.id).channel == "telegram"
    assert groups.find_champion(999) is None
    assert groups.find_champion_on_channel("Telegram", " 654321 ").id == c.id
    assert groups.find_champion_on_channel("web", "123456") is None


def test_clean_text_keeps_every_script_and_drops_control_characters():
    """Emoji (with joiners), other scripts and markup survive; control characters do not."""
    family = "👨\u200d👩\u200d👧 שלום 你好 <i>x</i>"
    assert clean_text(family, multiline=False) == family
    assert clean_text("a\r\nb\x00c\x1b[0m\u2028d\ud800", multiline=True) == "a\nbc[0m\nd"
    assert clean_text("a\r\nb\tc", multiline=False) == "a b c"
