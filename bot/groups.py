"""Groups of champions (organisation, cohort, project) kept by the engagement team, and champion look-ups."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bot.models import Champion, as_utc, utcnow
from bot.team_auth import require
from bot.text import clean_text
from bot.team_models import GROUP_KINDS, Group, GroupMember

GROUP_NAME_MAX = 120  # groups.name is String(120)


class TeamInputError(ValueError):
    """Input to the team tools that cannot be used; the message says why in plain English."""


# --- cleaning what the team types ---------------------------------------------------------------


def clean_kind(kind: str) -> str:
    """kind as stored ("organisation", "cohort" or "project"), or TeamInputError."""
    cleaned = clean_text(str(kind or ""), multiline=False).lower()
    if cleaned == "organization":  # the American spelling is a common slip
        cleaned = "organisation"
    if cleaned not in GROUP_KINDS:
        raise TeamInputError(
            f"{clean_text(str(kind or ''), multiline=False)[:40]!r} is not a kind of group: "
            f"use one of {', '.join(GROUP_KINDS)}."
        )
    return cleaned


def clean_group_name(name: str) -> str:
    """name trimmed, with runs of spaces made one and control characters removed, or TeamInputError."""
    cleaned = clean_text(str(name or ""), multiline=False)
    if not cleaned:
        raise TeamInputError("A group needs a name.")
    if len(cleaned) > GROUP_NAME_MAX:
        raise TeamInputError(
            f"That group name is {len(cleaned)} characters long; keep it to {GROUP_NAME_MAX} or fewer."
        )
    return cleaned


# --- what the repository hands back -------------------------------------------------------------


@dataclass(frozen=True)
class GroupSummary:
    """A group and how many champions are in it."""

    id: int
    kind: str
    name: str
    members: int
    created_at: datetime

    @property
    def label(self) -> str:
        """How the tools name it: "cohort: Spring 2026"."""
        return f"{self.kind}: {self.name}"


@dataclass(frozen=True)
class ChampionSummary:
    """What the team may see of a champion: never their messages, never their chat id."""

    id: int
    channel: str
    created_at: datetime
    organisation: Optional[str]
    opted_out: bool
    unreachable: bool
    unreachable_reason: Optional[str] = None
    display_name: Optional[str] = None
    last_active_at: Optional[datetime] = None

    @property
    def name(self) -> str:
        """The name the champion gave, or "Champion <id>" when they gave none."""
        return self.display_name or f"Champion {self.id}"


def _summary(champion: Champion) -> ChampionSummary:
    """The team's view of one champion row."""
    return ChampionSummary(
        id=champion.id,
        channel=champion.channel,
        created_at=as_utc(champion.created_at),
        organisation=champion.organisation,
        opted_out=champion.opted_out_at is not None,
        unreachable=champion.unreachable_at is not None,
        unreachable_reason=champion.unreachable_reason,
        display_name=champion.display_name,
        last_active_at=as_utc(champion.last_active_at),
    )


class GroupRepository:
    """Groups of champions and their members, one short transaction per call."""

    def __init__(self, session_factory: "sessionmaker[Session]") -> None:
        """Use session_factory (see bot.db.make_session_factory) for every call."""
        self._sessions = session_factory

    # --- groups ---------------------------------------------------------------------------------

    @staticmethod
    def _find(session: Session, kind: str, name: str) -> Optional[Group]:
        """The group of kind whose name matches name ignoring case (any script), or None."""
        wanted = name.casefold()
        for group in session.execute(select(Group).where(Group.kind == kind)).scalars():
            if group.name.casefold() == wanted:
                return group
        return None

    def find_group(self, kind: str, name: str) -> Optional[Group]:
        """The group of this kind and name (trimmed, any case), or None."""
        kind, name = clean_kind(kind), clean_group_name(name)
        with self._sessions() as session:
            return self._find(session, kind, name)

    def get_group(self, kind: str, name: str) -> Group:
        """The group of this kind and name, or TeamInputError saying it does not exist."""
        group = self.find_group(kind, name)
        if group is None:
            raise TeamInputError(
                f"There is no {clean_kind(kind)} group called {clean_group_name(name)!r}. "
                "See the groups with: group list"
            )
        return group

    def create_group(self, kind: str, name: str, *, auth: object) -> Tuple[Group, bool]:
        """The group of this kind and name, created if new; returns (group, created?). Team only."""
        require(auth)
        kind, name = clean_kind(kind), clean_group_name(name)
        with self._sessions() as session:
            existing = self._find(session, kind, name)
            if existing is not None:
                return existing, False
            group = Group(kind=kind, name=name, created_at=utcnow())
            session.add(group)
            try:
                session.commit()
                return group, True
            except IntegrityError:  # made by someone else a moment ago
                session.rollback()
        return self.get_group(kind, name), False

    def list_groups(self, kind: Optional[str] = None) -> List[GroupSummary]:
        """Every group (or every group of kind) with its member count, by kind then name."""
        counts = (
            select(GroupMember.group_id, func.count().label("members"))
            .group_by(GroupMember.group_id)
            .subquery()
        )
        query = select(Group, func.coalesce(counts.c.members, 0)).outerjoin(
            counts, counts.c.group_id == Group.id
        )
        if kind is not None:
            query = query.where(Group.kind == clean_kind(kind))
        with self._sessions() as session:
            rows = session.execute(query).all()
        summaries = [
            GroupSummary(group.id, group.kind, group.name, int(members), as_utc(group.created_at))
            for group, members in rows
        ]
        return sorted(summaries, key=lambda g: (GROUP_KINDS.index(g.kind), g.name.casefold()))

    # --- members --------------------------------------------------------------------------------

    def _existing_champions(self, session: Session, champion_ids: Sequence[int]) -> List[int]:
        """champion_ids that exist; TeamInputError naming the ones that do not."""
        ids = sorted({int(i) for i in champion_ids})
        if not ids:
            raise TeamInputError("Say which champions: give one or more champion ids (see: champion list).")
        found = set(session.execute(select(Champion.id).where(Champion.id.in_(ids))).scalars())
        missing = [i for i in ids if i not in found]
        if missing:
            raise TeamInputError(
                "No champion with id " + ", ".join(str(i) for i in missing) + ". Nothing was changed."
            )
        return ids

    def add_members(self, kind: str, name: str, champion_ids: Iterable[int], *, auth: object) -> int:
        """Put champions in the group; returns how many were new (adding twice is harmless). Team only."""
        require(auth)
        group = self.get_group(kind, name)
        with self._sessions() as session:
            ids = self._existing_champions(session, list(champion_ids))
            already = set(
                session.execute(
                    select(GroupMember.champion_id).where(
                        GroupMember.group_id == group.id, GroupMember.champion_id.in_(ids)
                    )
                ).scalars()
            )
            new = [i for i in ids if i not in already]
            now = utcnow()
            session.add_all(GroupMember(group_id=group.id, champion_id=i, added_at=now) for i in new)
            try:
                session.commit()
            except IntegrityError:  # someone added the same champions at the same moment: redo
                session.rollback()
                return self.add_members(kind, name, ids, auth=auth)
        return len(new)

    def remove_members(self, kind: str, name: str, champion_ids: Iterable[int], *, auth: object) -> int:
        """Take champions out of the group; returns how many were in it (removing twice is harmless). Team only."""
        require(auth)
        group = self.get_group(kind, name)
        ids = sorted({int(i) for i in champion_ids})
        if not ids:
            raise TeamInputError("Say which champions: give one or more champion ids (see: champion list).")
        with self._sessions() as session:
            result = session.execute(
                delete(GroupMember).where(
                    GroupMember.group_id == group.id, GroupMember.champion_id.in_(ids)
                )
            )
            session.commit()
            return int(result.rowcount or 0)

    def members(self, kind: str, name: str) -> List[ChampionSummary]:
        """The champions in the group, by id."""
        group = self.get_group(kind, name)
        with self._sessions() as session:
            champions = session.execute(
                select(Champion)
                .join(GroupMember, GroupMember.champion_id == Champion.id)
                .where(GroupMember.group_id == group.id)
                .order_by(Champion.id)
            ).scalars()
            return [_summary(c) for c in champions]

    def member_ids(self, group_id: int) -> List[int]:
        """The ids of the champions in the group with this id."""
        with self._sessions() as session:
            return list(
                session.execute(
                    select(GroupMember.champion_id)
                    .where(GroupMember.group_id == group_id)
                    .order_by(GroupMember.champion_id)
                ).scalars()
            )

    def champion_groups(self, champion_id: int) -> List[GroupSummary]:
        """The groups the champion is in (member counts left at 0: not needed here)."""
        with self._sessions() as session:
            groups = session.execute(
                select(Group)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.champion_id == champion_id)
            ).scalars()
            found = [GroupSummary(g.id, g.kind, g.name, 0, as_utc(g.created_at)) for g in groups]
        return sorted(found, key=lambda g: (GROUP_KINDS.index(g.kind), g.name.casefold()))

    # --- champions ------------------------------------------------------------------------------

    def find_champion(self, champion_id: int) -> Optional[ChampionSummary]:
        """The champion with this id, or None."""
        with self._sessions() as session:
            champion = session.get(Champion, int(champion_id))
            return _summary(champion) if champion is not None else None

    def find_champion_on_channel(self, channel: str, external_id: str) -> Optional[ChampionSummary]:
        """The champion known on channel ("web", "telegram") by external_id, or None."""
        with self._sessions() as session:
            champion = session.execute(
                select(Champion).where(
                    Champion.channel == channel.strip().lower(),
                    Champion.external_id == external_id.strip(),
                )
            ).scalar_one_or_none()
            return _summary(champion) if champion is not None else None

    def list_champions(self) -> List[ChampionSummary]:
        """Every champion, by id (no message text, no chat ids)."""
        with self._sessions() as session:
            return [_summary(c) for c in session.execute(select(Champion).order_by(Champion.id)).scalars()]

    def champion_group_labels(self) -> Dict[int, List[str]]:
        """For each champion in any group, the groups' labels ("cohort: Spring 2026")."""
        with self._sessions() as session:
            rows = session.execute(
                select(GroupMember.champion_id, Group.kind, Group.name).join(
                    Group, Group.id == GroupMember.group_id
                )
            ).all()
        labels: Dict[int, List[str]] = {}
        for champion_id, kind, name in sorted(rows, key=lambda r: (GROUP_KINDS.index(r[1]), r[2].casefold())):
            labels.setdefault(champion_id, []).append(f"{kind}: {name}")
        return labels
