"""The organisations champions volunteer with (knowledge/organisations.yml) and recording a champion's choice.

`load_organisations(path)` reads and checks the file; `Directory.match(text)` finds the
organisation someone typed ("I volunteer with leeds now"); `OrganisationRecorder.record`
saves the choice: Champion.organisation = key, and membership of the Group of kind
"organisation" named after it (created when missing). Plain SQLAlchemy, one short
transaction per step, so it works from the action server, the web process and the team's tools.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.models import Champion
from bot.team_models import Group, GroupMember

# Champion.organisation for "my organisation isn't listed".
OTHER = "other"
GROUP_KIND = "organisation"
KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NAME_MAX = 120  # groups.name
CONTACT_MAX = 500
RESOURCE_TITLE_MAX = 200
URL = re.compile(r"https?://[^\s<>\"']{1,500}")
CHOICE_KEYS = ("other", "skip")
# The intent and entity a button carries, e.g. /choose_organisation{"organisation":"leeds"}.
CHOOSE_INTENT = "choose_organisation"
SKIP_INTENT = "skip_organisation"
ENTITY = "organisation"


class OrganisationError(ValueError):
    """knowledge/organisations.yml is missing something or holds something it shouldn't."""


@dataclass(frozen=True)
class Resource:
    """A local resource an engagement team points its champions to."""

    title: str
    url: str


@dataclass(frozen=True)
class Organisation:
    """One organisation champions volunteer with."""

    key: str
    name: str
    aliases: Tuple[str, ...] = ()
    engagement_contact: Optional[str] = None
    local_resources: Tuple[Resource, ...] = ()

    @property
    def group_name(self) -> str:
        """The name of the organisation's group of champions."""
        return self.name


def normalise(text: Any) -> str:
    """Lower case, accents and punctuation folded to spaces, single-spaced: "NHS-Leeds!" → "nhs leeds"."""
    text = unicodedata.normalize("NFKC", str(text or "")).casefold().replace("’", "'").replace("'", "")
    text = "".join(ch if ch.isalnum() else " " for ch in text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Directory:
    """Every organisation in the file, with the titles of the extra choices."""

    organisations: Tuple[Organisation, ...]
    choices: Dict[str, str] = field(default_factory=dict)

    def get(self, key: Any) -> Optional[Organisation]:
        """The organisation with this key (any case), or None."""
        wanted = str(key or "").strip().casefold()
        return next((o for o in self.organisations if o.key == wanted), None)

    def match(self, text: Any) -> Optional[Organisation]:
        """The organisation whose key, name or alias appears in text as whole words (longest wins), or None."""
        haystack = f" {normalise(text)} "
        if not haystack.strip():
            return None
        best: Optional[Tuple[int, Organisation]] = None
        for organisation in self.organisations:
            for name in (organisation.name, organisation.key, *organisation.aliases):
                needle = normalise(name)
                if needle and f" {needle} " in haystack and (best is None or len(needle) > best[0]):
                    best = (len(needle), organisation)
        return best[1] if best else None

    def find(self, value: Any) -> Optional[Organisation]:
        """The organisation a button key or typed text names, or None."""
        return self.get(value) or self.match(value)

    def buttons(self) -> List[Dict[str, str]]:
        """Buttons for the question: one per organisation, then "not listed" and "not now"."""
        buttons = [_choose_button(o.name, o.key) for o in self.organisations]
        buttons.append(_choose_button(self.choices["other"], OTHER))
        buttons.append({"title": self.choices["skip"], "payload": f"/{SKIP_INTENT}"})
        return buttons


def _choose_button(title: str, key: str) -> Dict[str, str]:
    """A button that chooses the organisation with this key (sent as is: Rasa fills no placeholders in it)."""
    return {"title": title, "payload": f'/{CHOOSE_INTENT}{{"{ENTITY}":"{key}"}}'}


# --- reading and checking the file --------------------------------------------------------------


def _text(value: Any, where: str, maximum: int, required: bool = True) -> Optional[str]:
    """A non-empty, single-line string of at most `maximum` characters (or None when optional and absent)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise OrganisationError(f"{where} must be a non-empty string")
    value = " ".join(value.split())
    if len(value) > maximum:
        raise OrganisationError(f"{where} is longer than {maximum} characters")
    return value


def _organisation(raw: Any, index: int) -> Organisation:
    """One checked entry of the file."""
    where = f"organisations[{index}]"
    if not isinstance(raw, dict):
        raise OrganisationError(f"{where} must be a mapping with key and name")
    unknown = set(raw) - {"key", "name", "aliases", "engagement_contact", "local_resources"}
    if unknown:
        raise OrganisationError(f"{where} has unknown fields: {', '.join(sorted(map(str, unknown)))}")
    key = raw.get("key")
    if not isinstance(key, str) or not KEY.fullmatch(key) or key == OTHER:
        raise OrganisationError(f"{where}.key must be lower case letters, digits, '_' or '-' (not {OTHER!r})")
    name = _text(raw.get("name"), f"{where}.name", NAME_MAX)
    aliases = raw.get("aliases")
    aliases = [] if aliases is None else aliases
    if not isinstance(aliases, list):
        raise OrganisationError(f"{where}.aliases must be a list")
    checked_aliases = tuple(_text(a, f"{where}.aliases", NAME_MAX) for a in aliases)
    contact = _text(raw.get("engagement_contact"), f"{where}.engagement_contact", CONTACT_MAX, required=False)
    resources = raw.get("local_resources")
    resources = [] if resources is None else resources
    if not isinstance(resources, list):
        raise OrganisationError(f"{where}.local_resources must be a list")
    checked_resources = []
    for number, item in enumerate(resources):
        spot = f"{where}.local_resources[{number}]"
        if not isinstance(item, dict):
            raise OrganisationError(f"{spot} must have a title and a url")
        title = _text(item.get("title"), f"{spot}.title", RESOURCE_TITLE_MAX)
        url = item.get("url")
        if not isinstance(url, str) or not URL.fullmatch(url.strip()):
            raise OrganisationError(f"{spot}.url must be a web address starting with https:// or http://")
        checked_resources.append(Resource(title=title, url=url.strip()))
    return Organisation(key, name, checked_aliases, contact, tuple(checked_resources))


def parse_organisations(data: Any, source: str = "organisations") -> Directory:
    """A Directory from the file's parsed YAML, refusing anything malformed with a clear message."""
    if not isinstance(data, dict):
        raise OrganisationError(f"{source}: expected a mapping with `organisations`")
    raw = data.get("organisations")
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        raise OrganisationError(f"{source}: `organisations` must be a list")
    organisations = tuple(_organisation(item, i) for i, item in enumerate(raw))
    for label, values in (("key", [o.key for o in organisations]),
                          ("name", [normalise(o.name) for o in organisations])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise OrganisationError(f"{source}: the {label} {', '.join(repeated)} is used twice")
    choices = data.get("choices")
    choices = {} if choices is None else choices
    if not isinstance(choices, dict):
        raise OrganisationError(f"{source}: `choices` must be a mapping")
    checked = {k: _text(choices.get(k), f"{source}: choices.{k}", 60) for k in CHOICE_KEYS}
    return Directory(organisations, checked)


def load_organisations(path: Path) -> Directory:
    """Read and check the organisations file at path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise OrganisationError(f"cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OrganisationError(f"{path} is not valid YAML: {exc}") from exc
    return parse_organisations(data, str(path))


class DirectoryCache:
    """The organisations file, read again whenever it changes on disk (no restart needed)."""

    def __init__(self) -> None:
        """An empty cache."""
        self._lock = threading.Lock()
        self._entry: Optional[Tuple[Path, float, int, Directory]] = None

    def get(self, path: Path) -> Directory:
        """The directory at path, re-read when its modification time or size changed."""
        path = Path(path)
        stat = path.stat()
        with self._lock:
            entry = self._entry
            if entry is not None and entry[:3] == (path, stat.st_mtime, stat.st_size):
                return entry[3]
        directory = load_organisations(path)
        with self._lock:
            self._entry = (path, stat.st_mtime, stat.st_size, directory)
        return directory


# --- recording a champion's choice --------------------------------------------------------------


class OrganisationRecorder:
    """Saves which organisation a champion volunteers with, and their organisation group."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    def current(self, champion_id: int) -> Optional[str]:
        """The organisation key the champion chose ("other" when not listed), or None."""
        with self._sessions() as session:
            return session.execute(
                select(Champion.organisation).where(Champion.id == champion_id)
            ).scalar_one_or_none()

    def _group_id(self, name: str, create: bool) -> Optional[int]:
        """The id of the organisation group called name (created first if asked and missing)."""
        query = select(Group.id).where(Group.kind == GROUP_KIND, Group.name == name)
        with self._sessions() as session:
            found = session.execute(query).scalar_one_or_none()
            if found is not None or not create:
                return found
            session.add(Group(kind=GROUP_KIND, name=name))
            try:
                session.commit()
            except IntegrityError:  # made by someone else a moment ago
                session.rollback()
        with self._sessions() as session:
            return session.execute(query).scalar_one()

    def record(self, champion_id: int, organisation: Optional[Organisation], directory: Optional[Directory] = None) -> None:
        """Save the choice (None: "not listed"): the key, joining its group and leaving the previous one's."""
        previous_key = self.current(champion_id)
        previous = directory.get(previous_key) if directory is not None and previous_key else None
        new_group = self._group_id(organisation.group_name, create=True) if organisation else None
        old_group = (
            self._group_id(previous.group_name, create=False)
            if previous is not None and (organisation is None or previous.group_name != organisation.group_name)
            else None
        )
        key = organisation.key if organisation else OTHER
        with self._sessions() as session:
            champion = session.get(Champion, champion_id)
            if champion is None:
                raise LookupError(f"no champion {champion_id}")
            champion.organisation = key
            if old_group is not None:
                session.execute(
                    delete(GroupMember).where(GroupMember.group_id == old_group, GroupMember.champion_id == champion_id)
                )
            if new_group is not None and session.get(GroupMember, (new_group, champion_id)) is None:
                session.add(GroupMember(group_id=new_group, champion_id=champion_id))
            try:
                session.commit()
            except IntegrityError:  # the same membership was added at the same moment: already a member
                session.rollback()
                self._set_key(champion_id, key)

    def _set_key(self, champion_id: int, key: str) -> None:
        """Save only the organisation key (used after a harmless membership race)."""
        with self._sessions() as session:
            champion = session.get(Champion, champion_id)
            if champion is not None:
                champion.organisation = key
                session.commit()

    def members(self, organisation: Organisation) -> List[int]:
        """Ids of the champions in the organisation's group."""
        with self._sessions() as session:
            return list(
                session.execute(
                    select(GroupMember.champion_id)
                    .join(Group, Group.id == GroupMember.group_id)
                    .where(Group.kind == GROUP_KIND, Group.name == organisation.group_name)
                    .order_by(GroupMember.champion_id)
                ).scalars()
            )

