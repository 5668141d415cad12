"""Known reflections, pledges and champions for the export and report tests (and a sample report to look at).

`seed(session_factory)` writes them and returns the champions' ids by name. November 2026
(Greenwich time, so London days are UTC days) holds, by date:

    R1  3 Nov  Ana, named       Board meeting   leeds           rating 5  2 pledges (done, in progress)
    --  6 Nov  Cat, private     Board meeting   leeds           rating 1  1 pledge   (never exported)
    R2  5 Nov  Ben, anonymous   board meeting   south-tyneside  rating 2  1 pledge  (need help)
    --  7 Nov  Cat, unanswered  Stroke pathway  leeds           rating 2  (NULL sharing: private)
    R3 12 Nov  Ana, anonymous   Board meeting   leeds           rating 5  2 pledges (done, done)
    R4 20 Nov  Cat, anonymous   Stroke pathway  leeds           rating 3  unfinished, no pledges
    R5 30 Nov  Ben, named       Stroke pathway  south-tyneside  no rating 2 pledges (open, let go)

and outside it: Ana named on 1 Dec (00:30 UTC), Ana anonymous at 23:30 UTC on 1 Oct (which is
00:30 on 2 Oct in London, summer time), and Dev, who asked for his data to be deleted, named
on 10 Nov (never exported). Several texts start with = + - @ (spreadsheet formulas) and one
take-away is a <script> tag.

Run `python -m bench.reflection_sample OUT.html` to write the report page for these.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Dict

from sqlalchemy.orm import Session, sessionmaker

from bot.models import Champion
from bot.reflection_models import Pledge, Reflection

UTC = timezone.utc

CHAMPIONS = {
    # name: (channel, chat id, display name, organisation, erasure requested)
    "ana": ("telegram", "111111", "Ana Patel", "leeds", False),
    "ben": ("web", "uuid-ben", "Ben O'Neil", "south-tyneside", False),
    "cat": ("telegram", "333333", "Cat Jones", "leeds", False),
    "dev": ("telegram", "444444", "Dev Shah", "leeds", True),
}

SCRIPT_TAKEAWAY = "<script>alert('x')</script> & the chair listened"

REFLECTIONS = [
    # champion, created (UTC), sharing, session, organisation, rating, take-away, what would help,
    # finished, [(pledge, status, done at)]
    ("ana", datetime(2026, 11, 3, 10, 0, tzinfo=UTC), "named", "Board meeting", "leeds", 5,
     "Patients' stories changed the plan.", "Papers a week earlier", True,
     [("Read the papers early", "done", datetime(2026, 11, 10, 9, 0, tzinfo=UTC)),
      ('=HYPERLINK("http://evil.example","click")', "in_progress", None)]),
    ("ben", datetime(2026, 11, 5, 14, 0, tzinfo=UTC), "anonymous", "board meeting ", "south-tyneside", 2,
     SCRIPT_TAKEAWAY, "Less jargon,\nplease", True,
     [("-2 call the chair", "need_help", None)]),
    ("cat", datetime(2026, 11, 6, 9, 0, tzinfo=UTC), "private", "Board meeting", "leeds", 1,
     "SECRET private thought", "SECRET help", True,
     [("SECRET private pledge", "open", None)]),
    ("cat", datetime(2026, 11, 7, 9, 0, tzinfo=UTC), None, "Stroke pathway", "leeds", 2,
     "UNANSWERED sharing question", None, False, []),
    ("dev", datetime(2026, 11, 10, 9, 0, tzinfo=UTC), "named", "Board meeting", "leeds", 5,
     "ERASED champion's words", None, True, [("ERASED pledge", "open", None)]),
    ("ana", datetime(2026, 11, 12, 16, 0, tzinfo=UTC), "anonymous", "Board meeting", "leeds", 5,
     "Listening works", None, True,
     [("Share the summary", "done", datetime(2026, 11, 13, 12, 0, tzinfo=UTC)),
      ("Speak at the next meeting", "done", datetime(2026, 11, 14, 12, 0, tzinfo=UTC))]),
    ("cat", datetime(2026, 11, 20, 11, 0, tzinfo=UTC), "anonymous", "Stroke pathway", "leeds", 3,
     "+ more time for questions", None, False, []),
    ("ben", datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "named", "Stroke pathway", "south-tyneside", None,
     "@mention the carers", None, True,
     [("Ask about transport", "open", None), ("Join the PPG", "let_go", None)]),
    ("ana", datetime(2026, 12, 1, 0, 30, tzinfo=UTC), "named", "Board meeting", "leeds", 4,
     "December thoughts", None, True, []),
    ("ana", datetime(2026, 10, 1, 23, 30, tzinfo=UTC), "anonymous", "Autumn forum", "leeds", 4,
     "October thoughts", None, True, []),
]


def seed(session_factory: "sessionmaker[Session]") -> Dict[str, int]:
    """Write the known champions, reflections and pledges; the champions' ids by name."""
    ids: Dict[str, int] = {}
    with session_factory() as session, session.begin():
        for name, (channel, external, display, organisation, erased) in CHAMPIONS.items():
            champion = Champion(
                channel=channel, external_id=external, display_name=display, organisation=organisation,
                erasure_requested_at=datetime(2026, 11, 25, tzinfo=UTC) if erased else None,
            )
            session.add(champion)
            session.flush()
            ids[name] = champion.id
        for (who, created, sharing, label, organisation, rating, takeaway, improvement, finished,
             pledges) in REFLECTIONS:
            reflection = Reflection(
                champion_id=ids[who], session_label=label, organisation=organisation, rating=rating,
                takeaway=takeaway, improvement=improvement, sharing=sharing, created_at=created,
                updated_at=created, completed_at=created if finished else None,
            )
            session.add(reflection)
            session.flush()
            for text, status, done_at in pledges:
                session.add(Pledge(
                    reflection_id=reflection.id, champion_id=ids[who], text=text, status=status,
                    created_at=created, updated_at=done_at or created, done_at=done_at,
                ))
    return ids


def main(argv=None) -> int:
    """Write the sample report page for the known data (a throwaway SQLite database)."""
    import tempfile

    from bot.db import make_engine, make_session_factory, migrate
    from bot.reflection_export import ReflectionFilter
    from bot.reflection_report import build_report, render_html
    from bot.team_auth import authorise

    args = sys.argv[1:] if argv is None else argv
    out = args[0] if args else "reflection-report-sample.html"
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/sample.db"
        migrate(url)
        engine = make_engine(url)
        try:
            sessions = make_session_factory(engine)
            seed(sessions)
            filters = ReflectionFilter.parse("2026-11-01", "2026-11-30")
            report = build_report(sessions, filters, auth=authorise("sample", "sample"))
        finally:
            engine.dispose()
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(render_html(report))
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
