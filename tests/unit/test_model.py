"""job.model.ask, the one call to a model from the host that the AI summary and the race's judge share, against
the fake Messages API: the reply, its cost, and every failure as one line that never holds the key."""

from __future__ import annotations

import socket

import pytest

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import Script
from toren_action.core.errors import TorenError
from toren_action.job import model, summary


def env(fake: FakeAnthropic, key: str | None = None) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": key or fake.script.api_key, "ANTHROPIC_BASE_URL": fake.url}


def test_one_text_reply_with_its_cost():
    with FakeAnthropic(Script(extra={"summary_text": "attempt: 1\nreason: fine"})) as fake:
        reply = model.ask("the system", "the question", "claude-haiku-4-5", max_tokens=50, purpose="a test",
                          environ=env(fake))
        (req,) = fake.requests
    assert reply.text == "attempt: 1\nreason: fine" and reply.model == "claude-haiku-4-5"
    assert (reply.input_tokens, reply.output_tokens) == (1200, 80) and reply.cost_usd == pytest.approx(0.0016)
    body = req.json()
    assert body["system"] == "the system" and body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "the question"}]


def test_the_summary_asks_through_it():
    with FakeAnthropic(Script(extra={"summary_text": "It renamed a function."})) as fake:
        made = summary.ai_summary({"task": "t"}, [], "+x\n", environ=env(fake))
        (req,) = fake.requests
    assert made.text == "It renamed a function." and made.model == summary.DEFAULT_MODEL
    assert req.json()["system"] == summary.SYSTEM and made.cost_usd == pytest.approx(0.0016)


def test_no_key_names_the_variables():
    with pytest.raises(TorenError, match=r"^no Anthropic key \(ANTHROPIC_API_KEY or ANTHROPIC_API_KEY_FILE\) "
                                         "for the race's judge$"):
        model.ask("s", "q", "m", max_tokens=5, purpose="the race's judge", environ={})


def test_a_refused_key_is_one_line_without_the_key():
    bad = "sk-ant-" + "WrongKeyNeverPrinted0123456789"
    with FakeAnthropic(Script()) as fake:
        with pytest.raises(TorenError) as exc:
            model.ask("s", "q", "claude-haiku-4-5", max_tokens=5, purpose="the race's judge", environ=env(fake, bad))
    assert str(exc.value) == "the Anthropic API refused the key for the race's judge (401)"
    assert bad not in repr(exc.value) and exc.value.__cause__ is None


def test_an_api_error_and_an_unreachable_api():
    with FakeAnthropic(Script(extra={"fail_statuses": [400]})) as fake:
        with pytest.raises(TorenError, match="^the Anthropic API answered 400 to the AI summary$"):
            model.ask("s", "q", "claude-haiku-4-5", max_tokens=5, purpose="the AI summary", environ=env(fake))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TorenError, match="^cannot reach the Anthropic API for the race's judge"):
        model.ask("s", "q", "m", max_tokens=5, purpose="the race's judge", timeout=5.0,
                  environ={"ANTHROPIC_API_KEY": "sk-ant-x-0123456789", "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"})
