"""A summary of shared reflections for the engagement team: the figures, and a self-contained HTML page.

`report_data(selection)` counts what `bot.reflection_export.fetch_shared` found (only reflections
champions shared: anonymous and named; private ones appear as a count only); `render_html(data)`
turns it into one page with no outside assets: bar charts drawn as inline SVG (a handful of
rectangles, so no charting library: the page stays small, sharp on a phone or a projector, and
its text can be read by screen readers and searched), each chart followed by a real table of
the same numbers. Every value is HTML-escaped, and the page's Content-Security-Policy forbids
scripts anyway, so a take-away that contains markup is shown as typed.

    data = build_report(session_factory, filters, auth=team_pass)
    html_text = render_html(data)
"""
from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Dict, List, Optional, Sequence, Tuple

from sqlalchemy.orm import Session, sessionmaker

from bot.models import utcnow
from bot.reflection_export import (
    STATUS_LABELS,
    ReflectionFilter,
    Selection,
    fetch_shared,
    format_day,
)
from bot.reflection_models import (
    PLEDGE_DONE,
    PLEDGE_IN_PROGRESS,
    PLEDGE_LET_GO,
    PLEDGE_NEED_HELP,
    PLEDGE_OPEN,
    SHARING_ANONYMOUS,
    SHARING_NAMED,
)

RATINGS = (1, 2, 3, 4, 5)
NO_SESSION = "(no session named)"
# The order statuses are shown in: from finished to not yet looked at.
STATUS_ORDER = (PLEDGE_DONE, PLEDGE_IN_PROGRESS, PLEDGE_NEED_HELP, PLEDGE_OPEN, PLEDGE_LET_GO)
RATING_LABELS = {1: "1 (lowest)", 2: "2", 3: "3", 4: "4", 5: "5 (highest)"}


@dataclass(frozen=True)
class Quote:
    """One take-away (or "what would help"), in full, with who said it only when they shared their name."""

    text: str
    who: str  # "Anonymous" or the champion's name
    named: bool
    day: date
    session_label: Optional[str]
    organisation: Optional[str]
    ref: str


@dataclass(frozen=True)
class ReportData:
    """The figures of a report: counts, rating distribution and average, pledge statuses, quotes."""

    filters: ReflectionFilter
    generated_at: datetime
    reflections: int  # shared ones (anonymous + named)
    anonymous: int
    named: int
    finished: int
    private_left_out: int
    rating_counts: Dict[int, int]  # 1..5, every key present
    unrated: int
    average_rating: Optional[float]  # None when nobody rated
    pledges: int
    pledge_status_counts: Dict[str, int]  # every status in STATUS_ORDER, in that order
    sessions: Tuple[Tuple[str, int], ...]  # session label and how many reflections, most first
    takeaways: Tuple[Quote, ...]
    improvements: Tuple[Quote, ...]

    @property
    def rated(self) -> int:
        """How many reflections have a rating."""
        return sum(self.rating_counts.values())


def _quote(text: str, r) -> Quote:
    """A quote from shared reflection r."""
    return Quote(
        text=text, who=r.who, named=r.named, day=r.day, session_label=r.session_label,
        organisation=r.organisation, ref=r.ref,
    )


def report_data(selection: Selection, now: Optional[datetime] = None) -> ReportData:
    """The report's figures for what selection holds (already limited to shared reflections)."""
    shared = selection.shared
    ratings = Counter(r.rating for r in shared if r.rating in RATINGS)
    rating_counts = {value: ratings.get(value, 0) for value in RATINGS}
    rated = sum(rating_counts.values())
    average = (sum(value * count for value, count in rating_counts.items()) / rated) if rated else None
    statuses = Counter(p.status for r in shared for p in r.pledges)
    sessions: Dict[str, Tuple[str, int]] = {}
    for r in shared:
        label = r.session_label or NO_SESSION
        key = " ".join(label.split()).casefold()
        first, count = sessions.get(key, (label, 0))
        sessions[key] = (first, count + 1)
    return ReportData(
        filters=selection.filters,
        generated_at=now or utcnow(),
        reflections=len(shared),
        anonymous=sum(1 for r in shared if r.sharing == SHARING_ANONYMOUS),
        named=sum(1 for r in shared if r.sharing == SHARING_NAMED),
        finished=sum(1 for r in shared if r.finished),
        private_left_out=selection.private_left_out,
        rating_counts=rating_counts,
        unrated=len(shared) - rated,
        average_rating=average,
        pledges=sum(statuses.values()),
        pledge_status_counts={status: statuses.get(status, 0) for status in STATUS_ORDER},
        sessions=tuple(sorted(sessions.values(), key=lambda item: (-item[1], item[0].casefold()))),
        takeaways=tuple(_quote(r.takeaway, r) for r in shared if r.takeaway),
        improvements=tuple(_quote(r.improvement, r) for r in shared if r.improvement),
    )


def build_report(
    session_factory: "sessionmaker[Session]", filters: ReflectionFilter, *, auth: object,
    now: Optional[datetime] = None,
) -> ReportData:
    """The report's figures straight from the database; only for the team (auth)."""
    return report_data(fetch_shared(session_factory, filters, auth=auth), now=now)


# --- the page -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """value HTML-escaped (quotes too), for text and attributes alike."""
    return html.escape("" if value is None else str(value), quote=True)


def _plural(count: int, word: str, plural: Optional[str] = None) -> str:
    """"1 reflection", "3 reflections"."""
    return f"{count:,} {word if count == 1 else (plural or word + 's')}"


def _percent(count: int, total: int) -> str:
    """count as a whole percentage of total ("40%"), or "-" when total is 0."""
    return f"{round(100 * count / total):d}%" if total else "-"


def format_average(average: Optional[float]) -> str:
    """The average rating to one decimal place ("4.2"), or "none" when nobody rated."""
    return "none" if average is None else f"{average:.1f}"


def _london_time(moment: datetime) -> str:
    """"2 Dec 2026, 10:05 (London time)"."""
    from zoneinfo import ZoneInfo

    local = moment.astimezone(ZoneInfo("Europe/London"))
    return f"{local.day} {local:%b %Y, %H:%M} (London time)"


def bar_chart_svg(chart_id: str, title: str, items: Sequence[Tuple[str, int]], total: int) -> str:
    """A bar chart as inline SVG (each label above its bar, so it reads on a phone), titled, every value described."""
    width, row, bar_width, top = 400, 56, 290, 4
    height = top * 2 + row * len(items)
    biggest = max([count for _, count in items] + [1])
    description = "; ".join(f"{label}: {count:,}" for label, count in items)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-labelledby="{_e(chart_id)}-title {_e(chart_id)}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{_e(chart_id)}-title">{_e(title)}</title>',
        f'<desc id="{_e(chart_id)}-desc">{_e(description)}</desc>',
    ]
    for index, (label, count) in enumerate(items):
        y = top + index * row
        filled = round(bar_width * count / biggest) if count else 0
        parts.append(f'<text x="0" y="{y + 18}" class="label">{_e(label)}</text>')
        parts.append(f'<rect x="0" y="{y + 26}" width="{bar_width}" height="22" rx="3" class="track"/>')
        if filled:
            parts.append(f'<rect x="0" y="{y + 26}" width="{filled}" height="22" rx="3" class="bar"/>')
        share = f" ({_percent(count, total)})" if total else ""
        parts.append(f'<text x="{bar_width + 10}" y="{y + 43}" class="value">{count:,}{_e(share)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(caption: str, headings: Sequence[str], rows: Sequence[Sequence[object]], total_row=None) -> str:
    """A real table of numbers (first column a row heading), with a caption."""
    out = [f'<div class="table-wrap"><table><caption>{_e(caption)}</caption><thead><tr>']
    out += [f'<th scope="col">{_e(h)}</th>' for h in headings]
    out.append("</tr></thead><tbody>")
    for first, *rest in rows:
        out.append(f'<tr><th scope="row">{_e(first)}</th>' + "".join(f"<td>{_e(v)}</td>" for v in rest) + "</tr>")
    out.append("</tbody>")
    if total_row is not None:
        first, *rest = total_row
        out.append(f'<tfoot><tr><th scope="row">{_e(first)}</th>' + "".join(f"<td>{_e(v)}</td>" for v in rest) + "</tr></tfoot>")
    out.append("</table></div>")
    return "".join(out)


def _quotes(quotes: Sequence[Quote]) -> str:
    """Quotes in full, each with who (name or anonymous), session and day."""
    out = ['<ol class="quotes">']
    for q in quotes:
        about = [q.who]
        if q.session_label:
            about.append(q.session_label)
        about.append(format_day(q.day))
        out.append(
            f'<li><blockquote><p>{_e(q.text)}</p></blockquote>'
            f'<p class="who{"" if q.named else " anon"}">{_e(" · ".join(about))}</p></li>'
        )
    out.append("</ol>")
    return "".join(out)


STYLE = """
:root{--ink:#212b32;--muted:#4c6272;--blue:#005eb8;--track:#e8edee;--card:#f0f4f5;--line:#d8dde0}
*{box-sizing:border-box}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;font-size:1.0625rem;
line-height:1.5;color:var(--ink);background:#fff}
main{max-width:60rem;margin:0 auto;padding:1rem 1rem 3rem}
h1{font-size:1.75rem;line-height:1.2;margin:.5rem 0}
h2{font-size:1.35rem;margin:2rem 0 .75rem;padding-top:1rem;border-top:2px solid var(--line)}
.scope{font-size:1.15rem;font-weight:600;margin:.25rem 0}
.note{color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.75rem;margin:1rem 0;padding:0}
.cards div{background:var(--card);border-radius:.5rem;padding:.75rem 1rem}
.cards dt{font-size:.95rem;color:var(--muted)}
.cards dd{margin:0;font-size:2rem;font-weight:700;line-height:1.2}
.cards dd small{font-size:1rem;font-weight:400;color:var(--muted)}
figure{margin:0 0 1rem}
figcaption{color:var(--muted);font-size:.95rem}
.chart{display:block;width:100%;max-width:30rem;height:auto}
.chart .label,.chart .value{font:16px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--ink)}
.chart .track{fill:var(--track)}
.chart .bar{fill:var(--blue)}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;margin:.5rem 0 1rem;min-width:16rem}
caption{text-align:left;font-weight:600;padding-bottom:.25rem}
th,td{border-bottom:1px solid var(--line);padding:.35rem .75rem;text-align:left}
td{text-align:right;font-variant-numeric:tabular-nums}
tfoot th,tfoot td{font-weight:700;border-bottom:0}
.quotes{padding-left:1.5rem}
.quotes li{margin:0 0 1rem}
blockquote{margin:0;padding:.5rem .75rem;border-left:4px solid var(--blue);background:var(--card)}
blockquote p{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}
.who{margin:.25rem 0 0;font-size:.95rem;font-weight:600}
.who.anon{font-weight:400;font-style:italic;color:var(--muted)}
footer{margin-top:2rem;color:var(--muted);font-size:.9rem}
@media print{h2{break-after:avoid}.quotes li,figure,table{break-inside:avoid}}
"""


def render_html(report: ReportData) -> str:
    """The report as one self-contained HTML page (no scripts, no outside assets), every value escaped."""
    scope = report.filters.describe()
    return "".join([
        "<!DOCTYPE html>",
        '<html lang="en-GB"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="robots" content="noindex, nofollow">',
        f"<title>Reflections: {_e(scope)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        render_sections(report, heading_level=1),
        "</main></body></html>\n",
    ])


def render_sections(report: ReportData, heading_level: int = 1) -> str:
    """The report's content (header, sections, footer) as HTML to place inside a page, every value escaped.

    heading_level 1 gives an <h1> title and <h2> sections; 2 gives <h2> and <h3>, for a page that has its own <h1>."""
    r = report
    scope = r.filters.describe()
    out: List[str] = [
        "<header><h1>Reflections after sessions</h1>",
        f'<p class="scope">{_e(scope)}</p>',
        f'<p class="note">Made {_e(_london_time(r.generated_at))}. Only reflections champions chose to share '
        f"are in this report: {_e(f'{r.anonymous:,}')} anonymous, {_e(f'{r.named:,}')} with their name. "
        f"{_e(_plural(r.private_left_out, 'private reflection'))} "
        f"{'was' if r.private_left_out == 1 else 'were'} left out and not counted.</p></header>",
    ]
    out.append('<section aria-labelledby="glance"><h2 id="glance">At a glance</h2><dl class="cards">')
    done = r.pledge_status_counts.get(PLEDGE_DONE, 0)
    average = format_average(r.average_rating)
    for label, value, small in (
        ("Reflections shared", f"{r.reflections:,}", f"{r.finished:,} finished"),
        ("Average rating", average, "out of 5" if r.average_rating is not None else ""),
        ("Pledges made", f"{r.pledges:,}", ""),
        ("Pledges done", f"{done:,}", f"of {r.pledges:,}" if r.pledges else ""),
    ):
        extra = f" <small>{_e(small)}</small>" if small else ""
        out.append(f"<div><dt>{_e(label)}</dt><dd>{_e(value)}{extra}</dd></div>")
    out.append("</dl></section>")

    if r.reflections == 0:
        out.append(
            '<section aria-labelledby="none"><h2 id="none">Nothing to show</h2>'
            "<p>No shared reflections match this choice of dates, session and organisation.</p></section>"
        )
    else:
        rating_items = [(RATING_LABELS[value], r.rating_counts[value]) for value in RATINGS]
        out.append('<section aria-labelledby="ratings"><h2 id="ratings">How champions rated their sessions</h2>')
        if r.rated:
            out.append(
                "<figure>" + bar_chart_svg("rating-chart", "Ratings, 1 (lowest) to 5 (highest)", rating_items, r.rated)
                + f"<figcaption>{_e(_plural(r.rated, 'rating'))}, from 1 (lowest) to 5 (highest); average "
                f"{_e(average)}. {_e(_plural(r.unrated, 'reflection'))} had no rating.</figcaption></figure>"
            )
            out.append(_table(
                "Ratings", ("Rating", "Reflections", "Share"),
                [(label, f"{count:,}", _percent(count, r.rated)) for label, count in rating_items],
                total_row=("All ratings", f"{r.rated:,}", "100%"),
            ))
        else:
            out.append("<p>Nobody gave a rating.</p>")
        out.append("</section>")

        out.append('<section aria-labelledby="pledges"><h2 id="pledges">Where the pledges stand</h2>')
        if r.pledges:
            status_items = [(STATUS_LABELS[s], count) for s, count in r.pledge_status_counts.items()]
            out.append(
                "<figure>" + bar_chart_svg("pledge-chart", "Pledges by status", status_items, r.pledges)
                + f"<figcaption>{_e(_plural(r.pledges, 'pledge'))} made in these reflections, by the "
                "champion's latest answer.</figcaption></figure>"
            )
            out.append(_table(
                "Pledges by status", ("Status", "Pledges", "Share"),
                [(label, f"{count:,}", _percent(count, r.pledges)) for label, count in status_items],
                total_row=("All pledges", f"{r.pledges:,}", "100%"),
            ))
        else:
            out.append("<p>No pledges were made in these reflections.</p>")
        out.append("</section>")

        out.append('<section aria-labelledby="takeaways"><h2 id="takeaways">Take-aways, in full</h2>')
        out.append(_quotes(r.takeaways) if r.takeaways else "<p>No take-aways were written.</p>")
        out.append("</section>")
        if r.improvements:
            out.append('<section aria-labelledby="help"><h2 id="help">What would help next time</h2>')
            out.append(_quotes(r.improvements) + "</section>")

        out.append('<section aria-labelledby="sessions"><h2 id="sessions">Sessions in this report</h2>')
        out.append(_table("Sessions", ("Session", "Reflections"), [(label, f"{count:,}") for label, count in r.sessions]))
        out.append("</section>")

    out.append(
        "<footer><p>Confidential to the engagement team: it holds what champions chose to share. "
        "Anonymous answers carry no name. Please do not forward it outside the team.</p></footer>"
    )
    body = "".join(out)
    if heading_level != 1:
        shift = heading_level - 1
        for level in (3, 2, 1):
            body = body.replace(f"<h{level}", f"<h{level + shift}").replace(f"</h{level}>", f"</h{level + shift}>")
    return body
