"""Talking to one Rasa server or several: a conversation keeps to one, a stopped server is skipped, nothing is sent twice."""
from __future__ import annotations

import aiohttp
import pytest

from bot.rasa_client import RasaClient, parse_rasa_urls
from bench.stack import free_port


def test_rasa_url_may_list_several_servers():
    """RASA_URL with commas names several servers; spaces and trailing slashes don't matter."""
    assert parse_rasa_urls("http://a:5005/ , http://b:5006") == ("http://a:5005", "http://b:5006")
    assert parse_rasa_urls("") == ("http://127.0.0.1:5005",)
    assert parse_rasa_urls(None, default="http://x:1") == ("http://x:1",)


async def test_each_conversation_keeps_to_one_server_and_conversations_spread_over_both(fake_rasa):
    """Every message of a conversation goes to the same server (which keeps it in memory between turns);
    different conversations are shared between the servers (here: the same fake under two addresses)."""
    port = fake_rasa.url.rsplit(":", 1)[1]
    servers = (f"http://127.0.0.1:{port}", f"http://localhost:{port}")
    web, telegram = RasaClient(parse_rasa_urls(", ".join(servers))), RasaClient(servers)  # two processes
    async with aiohttp.ClientSession() as http:
        for number in range(20):
            for client in (web, telegram, web):
                answer = await client.replies(http, f"web-{number}", f"message {number}")
                assert answer[0]["text"] == f"You said: message {number}"
    hosts_by_conversation = {}
    for request, host in zip(fake_rasa.requests, fake_rasa.hosts):
        hosts_by_conversation.setdefault(request["sender"], set()).add(host)
    assert all(len(hosts) == 1 for hosts in hosts_by_conversation.values())
    per_server = [sum(hosts == {f"{name}:{port}"} for hosts in hosts_by_conversation.values())
                  for name in ("127.0.0.1", "localhost")]
    assert min(per_server) >= 5, per_server


async def test_a_stopped_server_is_skipped_and_the_message_is_sent_once(fake_rasa):
    """With one server down (connection refused), every message still gets its answer, exactly once."""
    down = f"http://127.0.0.1:{free_port()}"
    client = RasaClient([down, fake_rasa.url])
    senders = [f"web-{number}" for number in range(8)]
    assert {client.server_for(sender) for sender in senders} == {down, fake_rasa.url}  # some start with the stopped one
    async with aiohttp.ClientSession() as http:
        answers = [await client.replies(http, sender, f"message {i}") for i in range(4) for sender in senders]
    assert [a[0]["text"] for a in answers] == [f"You said: message {i}" for i in range(4) for _ in senders]
    assert [r["message"] for r in fake_rasa.requests] == [f"message {i}" for i in range(4) for _ in senders]


@pytest.mark.parametrize("mode", ["error", "garbage", "slow"])
async def test_a_server_that_took_the_message_is_not_asked_again(fake_rasa, mode):
    """An error, junk or a timeout after the message arrived gives None (the caller's "trouble"), not a resend."""
    fake_rasa.mode, fake_rasa.delay = mode, 2.0
    client = RasaClient([fake_rasa.url, fake_rasa.url])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http:
        assert await client.replies(http, "web-3", "hello") is None
    assert len(fake_rasa.requests) == 1


async def test_no_server_up_gives_none():
    """Every server down: None, so the champion gets the "trouble" wording instead of silence."""
    client = RasaClient([f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"])
    async with aiohttp.ClientSession() as http:
        assert await client.replies(http, "web-4", "hello") is None
