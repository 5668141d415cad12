"""The outbox on SQLite and PostgreSQL: idempotent enqueue, claims never shared, every outcome recorded."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from bot.db import make_session_factory
from bot.models import utcnow
from bot.outbox import OutboxRepository
from bot.repository import ChatRepository


@pytest.fixture
def sessions(engine):
    """Sessions on the migrated test database (SQLite and PostgreSQL)."""
    return make_session_factory(engine)


@pytest.fixture
def outbox(sessions) -> OutboxRepository:
    """The outbox repository."""
    return OutboxRepository(sessions)


@pytest.fixture
def champions(sessions):
    """Five Telegram champions' ids."""
    chats = ChatRepository(sessions)
    return [chats.get_or_create_champion("telegram", str(1000 + n)).id for n in range(5)]


def test_enqueue_twice_stores_once(outbox, champions):
    """The same source_key enqueued twice (a retried broadcast start) is one message."""
    first = outbox.enqueue(champions[0], "Papers are out 📄", kind="broadcast", source_key="broadcast:1:champion:1")
    again = outbox.enqueue(champions[0], "Papers are out 📄", kind="broadcast", source_key="broadcast:1:champion:1")
    assert first == again
    assert outbox.counts()["queued"] == 1
    stored = outbox.get(first)
    assert stored.text == "Papers are out 📄" and stored.status == "queued" and stored.attempts == 0


def test_enqueue_many_counts_only_new_rows(outbox, champions):
    """A bulk enqueue repeated after a crash adds only the missing rows."""
    rows = [
        {"champion_id": cid, "text": f"Hello {n}", "kind": "broadcast", "source_key": f"b:7:c:{cid}",
         "buttons": [{"title": "Read the papers", "payload": "/papers"}]}
        for n, cid in enumerate(champions)
    ]
    assert outbox.enqueue_many(rows[:3]) == 3
    assert outbox.enqueue_many(rows) == 2
    assert outbox.enqueue_many(rows) == 0
    assert outbox.counts()["queued"] == 5
    assert outbox.find(f"b:7:c:{champions[4]}").buttons == [{"title": "Read the papers", "payload": "/papers"}]


def test_enqueue_refuses_rows_without_text_or_key(outbox, champions):
    """A message with no text or no source_key is refused, not stored half-made."""
    with pytest.raises(ValueError):
        outbox.enqueue(champions[0], "", kind="reminder", source_key="r:1")
    with pytest.raises(ValueError):
        outbox.enqueue(champions[0], "Hi", kind="reminder", source_key="")
    assert outbox.counts()["queued"] == 0


def test_claim_takes_only_due_rows_in_order(outbox, champions):
    """Rows scheduled for later are not claimed; due rows come oldest first."""
    now = utcnow()
    later = outbox.enqueue(champions[0], "later", kind="reminder", source_key="r:later", not_before=now + timedelta(hours=1))
    second = outbox.enqueue(champions[1], "second", kind="reminder", source_key="r:2", not_before=now - timedelta(minutes=1))
    first = outbox.enqueue(champions[2], "first", kind="reminder", source_key="r:1", not_before=now - timedelta(minutes=2))
    claimed = outbox.claim_due(10, now=now)
    assert [m.id for m in claimed] == [first, second]
    assert claimed[0].channel == "telegram" and claimed[0].external_id == "1002"
    assert outbox.get(later).status == "queued"
    assert outbox.claim_due(10, now=now) == []
    assert [m.id for m in outbox.claim_due(10, now=now + timedelta(hours=2))] == [later]


def test_claim_filters_by_channel(outbox, sessions, champions):
    """A courier without a Telegram sender leaves Telegram messages queued."""
    web = ChatRepository(sessions).get_or_create_champion("web", "uuid-1").id
    outbox.enqueue(champions[0], "tg", kind="reminder", source_key="tg")
    web_id = outbox.enqueue(web, "web", kind="reminder", source_key="web")
    assert [m.id for m in outbox.claim_due(10, channels=["web"])] == [web_id]
    assert outbox.counts()["queued"] == 1


def test_two_concurrent_claimers_never_share_a_row(outbox, sessions):
    """Two couriers claiming at once (threads, own connections) each get different rows, all rows once."""
    chats = ChatRepository(sessions)
    ids = [chats.get_or_create_champion("telegram", str(5000 + n)).id for n in range(200)]
    outbox.enqueue_many(
        [{"champion_id": cid, "text": "hi", "kind": "broadcast", "source_key": f"b:c:{cid}"} for cid in ids]
    )
    got = {0: [], 1: []}
    barrier = threading.Barrier(2)
    errors = []

    def claimer(index: int) -> None:
        barrier.wait()
        try:
            while True:
                batch = outbox.claim_due(7)
                if not batch:
                    return
                got[index].extend(m.id for m in batch)
        except Exception as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert not set(got[0]) & set(got[1])
    assert len(got[0]) + len(got[1]) == 200
    assert outbox.counts()["sending"] == 200


def test_outcomes_are_recorded_with_reasons(outbox, champions):
    """Sent, retried, failed and skipped each leave the row and an attempt record saying why."""
    ids = [outbox.enqueue(cid, "hi", kind="broadcast", source_key=f"k{cid}") for cid in champions[:4]]
    assert len(outbox.claim_due(10)) == 4
    assert outbox.mark_sent(ids[0], "42")
    assert outbox.mark_retry(ids[1], "NetworkError: connection reset", utcnow() + timedelta(seconds=30))
    assert outbox.mark_failed(ids[2], "blocked: Forbidden: bot was blocked by the user")
    assert outbox.mark_skipped(ids[3], "opted out")
    assert not outbox.mark_sent(ids[0], "43"), "a row already sent cannot be sent again"

    sent = outbox.get(ids[0])
    assert (sent.status, sent.channel_message_id, sent.attempts) == ("sent", "42", 1)
    assert sent.sent_at is not None
    retry = outbox.get(ids[1])
    assert (retry.status, retry.attempts, retry.last_error) == ("queued", 1, "NetworkError: connection reset")
    assert outbox.claim_due(10) == [], "a retry waits for its not_before"
    assert outbox.get(ids[2]).last_error.startswith("blocked")
    assert outbox.get(ids[3]).status == "skipped"
    assert [a.outcome for a in outbox.attempts(ids[1])] == ["retry"]
    assert outbox.attempts(ids[2])[0].detail.startswith("blocked")
    assert outbox.counts() == {"queued": 1, "sending": 0, "sent": 1, "failed": 1, "skipped": 1}
    assert outbox.reasons() == {"blocked: Forbidden: bot was blocked by the user": 1}
    assert outbox.pending() == 1


def test_rate_limited_retry_does_not_use_up_attempts(outbox, champions):
    """A 429 requeues the message without counting it as a failed attempt."""
    outbound = outbox.enqueue(champions[0], "hi", kind="broadcast", source_key="k")
    outbox.claim_due(1)
    outbox.mark_retry(outbound, "429 Too Many Requests: retry after 1 s", utcnow(), count_attempt=False)
    assert outbox.get(outbound).attempts == 0
    assert [a.outcome for a in outbox.attempts(outbound)] == ["retry"]


def test_recover_interrupted_requeues_half_sent_rows(outbox, champions):
    """Rows a killed courier left "sending" go back to the queue, recorded as interrupted."""
    ids = [outbox.enqueue(cid, "hi", kind="broadcast", source_key=f"k{cid}") for cid in champions[:3]]
    outbox.claim_due(2)
    assert outbox.recover_interrupted() == 2
    counts = outbox.counts()
    assert counts["queued"] == 3 and counts["sending"] == 0
    interrupted = [i for i in ids if [a.outcome for a in outbox.attempts(i)] == ["interrupted"]]
    assert len(interrupted) == 2
    assert outbox.recover_interrupted() == 0
    assert len(outbox.claim_due(10)) == 3


def test_web_delivery_writes_transcript_and_status_together(outbox, sessions):
    """Delivering to the web chat adds the message (with buttons) to the transcript exactly once."""
    chats = ChatRepository(sessions)
    champion = chats.get_or_create_champion("web", "uuid-7")
    outbound = outbox.enqueue(
        champion.id, "Meeting moved to Friday", kind="broadcast", source_key="b:9",
        buttons=[{"title": "OK", "payload": "/affirm"}],
    )
    outbox.claim_due(5)
    message_id = outbox.deliver_to_transcript(outbound)
    assert message_id is not None
    assert outbox.deliver_to_transcript(outbound) is None, "a second delivery adds nothing"
    history = chats.history(champion)
    assert [(m.direction, m.text, m.buttons) for m in history] == [
        ("out", "Meeting moved to Friday", [{"title": "OK", "payload": "/affirm"}])
    ]
    row = outbox.get(outbound)
    assert (row.status, row.channel_message_id) == ("sent", str(message_id))


def test_counts_by_broadcast(outbox, champions, sessions):
    """The delivery report counts one broadcast's messages only."""
    from bot.team_models import Broadcast

    with sessions() as session:
        broadcast = Broadcast(text="hi", target_kind="all", created_by="test", status="sending")
        session.add(broadcast)
        session.commit()
        broadcast_id = broadcast.id
    outbox.enqueue(champions[0], "hi", kind="broadcast", source_key="a", broadcast_id=broadcast_id)
    outbox.enqueue(champions[1], "hi", kind="broadcast", source_key="b", broadcast_id=broadcast_id)
    outbox.enqueue(champions[2], "other", kind="reminder", source_key="c")
    assert outbox.counts(broadcast_id)["queued"] == 2
    assert outbox.counts()["queued"] == 3
