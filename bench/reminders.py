"""Reminder benchmark: 10,000 pending reminders due within a few minutes; lateness into the outbox and scheduler memory.

Fills a fresh app database with N champions, each with one meeting and one
reminder (half day-before reminders with the checklist, a fifth of those
recalling a five-steps plan; half hour-before), due at random moments spread
over --spread seconds starting --lead seconds from now. Then starts the
scheduler as its own process (`python -m bot.reminder_scheduler`, as in
production), samples its resident memory from /proc, waits until every reminder
has been handed over, and reports lateness = when the message reached the
outbox (outbound_messages.created_at) minus the reminder's due time: p50, p95,
p99, max. Telegram's rate limit is not included (the delivery layer applies it
after the outbox). Run from the repository root:

    PYTHONPATH=. .venv/bin/python bench/reminders.py [--count 10000] [--spread 180]
        [--database-url postgresql+psycopg2://...]   # default: a temporary SQLite file
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sqlalchemy import func, insert, select  # noqa: E402

from bot.db import make_engine, make_session_factory, migrate  # noqa: E402
from bot.delivery_models import OutboundMessage  # noqa: E402
from bot.models import Champion  # noqa: E402
from bot.plan_models import Project, StepAnswer  # noqa: E402
from bot.reminder_models import Meeting, Reminder  # noqa: E402
from bot.models import as_utc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1000


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from /proc (KiB): VmRSS now, or VmHWM, its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(engine, count: int, first_due: datetime, spread: float, seed: int = 7) -> None:
    """Insert count champions, meetings and pending reminders due between first_due and first_due + spread."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        for start in range(0, count, CHUNK):
            ids = range(start + 1, min(count, start + CHUNK) + 1)
            connection.execute(insert(Champion), [
                {"id": i, "channel": "telegram" if i % 2 else "web", "external_id": f"bench-{i}",
                 "created_at": now, "last_active_at": now} for i in ids])
            projects = [i for i in ids if i % 10 == 0]  # a fifth of the day-before reminders (even ids)
            if projects:
                connection.execute(insert(Project), [
                    {"id": i, "champion_id": i, "name": f"Project {i}", "about": "", "created_at": now,
                     "updated_at": now} for i in projects])
                connection.execute(insert(StepAnswer), [
                    {"project_id": i, "question_key": key, "value": value, "skipped": False, "updated_at": now}
                    for i in projects
                    for key, value in (("expectations", "Attend monthly and read the papers"),
                                       ("aim", "Shorter waits for the stroke clinic"))])
            meetings, reminders = [], []
            for i in ids:
                due = first_due + timedelta(seconds=rng.uniform(0, spread))
                day_before = i % 2 == 0
                starts = due + (timedelta(days=1) if day_before else timedelta(hours=1))
                meetings.append({"id": i, "champion_id": i, "project_id": i if i % 10 == 0 else None,
                                 "description": f"meeting {i}", "starts_at": starts, "time_zone": "Europe/London",
                                 "created_at": now, "updated_at": now})
                reminders.append({"id": i, "meeting_id": i, "kind": "day_before" if day_before else "hour_before",
                                  "offset_minutes": 1440 if day_before else 60, "due_at": due, "status": "pending",
                                  "generation": 0, "late": False, "created_at": now, "updated_at": now})
            connection.execute(insert(Meeting), meetings)
            connection.execute(insert(Reminder), reminders)


def quantile(values, q: float) -> float:
    """The q-quantile (0-1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=180.0, help="seconds over which reminders fall due")
    parser.add_argument("--lead", type=float, default=20.0, help="seconds from now to the first due time")
    parser.add_argument("--database-url", default=None, help="an empty app database (default: a temporary SQLite file)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-reminders-"))
    try:
        return run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> int:
    """The benchmark proper, with its files in workdir."""
    url = args.database_url or f"sqlite:///{workdir / 'app.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        if session.execute(select(func.count()).select_from(Reminder)).scalar():
            print("the database already has reminders: give an empty one", file=sys.stderr)
            return 2
    first_due = datetime.now(timezone.utc) + timedelta(seconds=args.lead)
    started = time.monotonic()
    fill(engine, args.count, first_due, args.spread)
    print(f"filled {args.count} reminders in {time.monotonic() - started:.1f}s; "
          f"due from {first_due:%H:%M:%S} over {args.spread:.0f}s ({args.count / args.spread:.0f}/s on average)")

    env = dict(os.environ, DATABASE_URL=url, DATA_DIR=str(workdir), SQLALCHEMY_SILENCE_UBER_WARNING="1",
               LOG_LEVEL="WARNING")
    log = open(workdir / "scheduler.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "bot.reminder_scheduler"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    peak_rss = idle_rss = 0
    try:
        deadline = time.monotonic() + args.lead + args.spread + 120
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if process.poll() is not None:
                print((workdir / "scheduler.log").read_text(), file=sys.stderr)
                return 1
            rss = rss_kib(process.pid)
            peak_rss = max(peak_rss, rss)
            if datetime.now(timezone.utc) < first_due:
                idle_rss = rss
            with sessions() as session:
                pending = session.execute(
                    select(func.count()).select_from(Reminder).where(Reminder.status == "pending")
                ).scalar()
            if not pending:
                break
        peak_rss = max(peak_rss, rss_kib(process.pid, "VmHWM"))
        cpu = cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    with sessions() as session:
        rows = session.execute(
            select(Reminder.due_at, OutboundMessage.created_at)
            .join(OutboundMessage, OutboundMessage.id == Reminder.outbound_id)
        ).all()
        statuses = dict(session.execute(select(Reminder.status, func.count()).group_by(Reminder.status)).all())
        outbound = session.execute(select(func.count()).select_from(OutboundMessage)).scalar()
    engine.dispose()
    lateness = [(as_utc(created) - as_utc(due)).total_seconds() for due, created in rows]
    if not lateness:
        print("nothing reached the outbox", file=sys.stderr)
        return 1
    print(f"database: {engine.dialect.name}; reminders by status: {statuses}; outbox rows: {outbound}")
    print(f"lateness into the outbox ({len(lateness)} reminders): p50 {quantile(lateness, .50):.2f}s, "
          f"p95 {quantile(lateness, .95):.2f}s, p99 {quantile(lateness, .99):.2f}s, max {max(lateness):.2f}s, "
          f"mean {statistics.fmean(lateness):.2f}s")
    print(f"scheduler process: resident memory {idle_rss / 1024:.0f} MiB idle, {peak_rss / 1024:.0f} MiB peak; "
          f"CPU {cpu:.1f}s over the run")
    met = quantile(lateness, .99) <= 2.0 and statuses.get("pending", 0) == 0 and outbound == args.count
    print("target p99 <= 2 s, every reminder handed over exactly once:", "met" if met else "NOT met")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
