"""Talking to one Rasa server or several: turns go round, a stopped server is skipped, nothing is sent twice."""
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


async def test_messages_go_to_the_servers_in_turn(fake_rasa):
    """Two servers take the messages of one conversation alternately (here: the same fake twice)."""
    client = RasaClient(parse_rasa_urls(f"{fake_rasa.url}, {fake_rasa.url}/"))
    async with aiohttp.ClientSession() as http:
        first = await client.replies(http, "web-1", "hello")
        second = await client.replies(http, "web-1", "what is co-production?")
    assert first[0]["text"] == "You said: hello"
    assert second[0]["text"] == "You said: what is co-production?"
    assert [r["message"] for r in fake_rasa.requests] == ["hello", "what is co-production?"]


async def test_a_stopped_server_is_skipped_and_the_message_is_sent_once(fake_rasa):
    """With one server down (connection refused), every message still gets its answer, exactly once."""
    down = f"http://127.0.0.1:{free_port()}"
    client = RasaClient([down, fake_rasa.url])
    async with aiohttp.ClientSession() as http:
        answers = [await client.replies(http, "web-2", f"message {i}") for i in range(4)]
    assert [a[0]["text"] for a in answers] == [f"You said: message {i}" for i in range(4)]
    assert [r["message"] for r in fake_rasa.requests] == [f"message {i}" for i in range(4)]


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
