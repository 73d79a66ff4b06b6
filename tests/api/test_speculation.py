"""Predicted Outputs and prompt lookup through the official `openai` client: the same answer, OpenAI's usage
fields, rejected prediction tokens billed as output, the per-request switch, and the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import openai
import pytest

from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Describe a cat in two sentences."}]


def test_a_prediction_changes_nothing_but_is_counted_and_billed_as_openai_does(server: Server) -> None:
    client = server.client()
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0)  # type: ignore[arg-type]
    text = plain.choices[0].message.content or ""
    assert plain.usage is not None and plain.usage.completion_tokens_details is not None
    assert plain.usage.completion_tokens_details.accepted_prediction_tokens == 0
    predicted_tokens = len(httpx.post(f"{server.url}/tokenize", json={"model": MODEL, "prompt": text,
                                                                     "add_special_tokens": False}).json()["tokens"])

    exact = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0,  # type: ignore[arg-type]
                                           prediction={"type": "content", "content": text})
    assert exact.choices[0].message.content == text
    usage = exact.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens == plain.usage.completion_tokens
    # Every predicted token was the answer's (a right prediction is never refused).
    assert usage.completion_tokens_details.accepted_prediction_tokens == predicted_tokens
    assert usage.completion_tokens_details.rejected_prediction_tokens == 0

    words = text.split()
    wrong = " ".join([*words[: len(words) // 2], "zebra", "umbrella", *words[len(words) // 2 + 2:]])
    off = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0,  # type: ignore[arg-type]
                                         prediction={"type": "content", "content": [{"type": "text", "text": wrong}]})
    assert off.choices[0].message.content == text
    usage = off.usage
    assert usage is not None and usage.completion_tokens_details is not None
    rejected = usage.completion_tokens_details.rejected_prediction_tokens
    assert usage.completion_tokens == plain.usage.completion_tokens + rejected  # refused tokens count as output
    assert 0 < usage.completion_tokens_details.accepted_prediction_tokens < predicted_tokens
    price = Decimal(str(httpx.get(f"{server.url}/v1/prices").json()["data"][MODEL]["output"]))
    cost = (usage.model_extra or {})["cost"]  # minimill's usage.cost, by token class
    assert Decimal(str(cost["output"])) == pytest.approx(price * usage.completion_tokens / 1_000_000, rel=1e-9)


def test_prompt_lookup_per_request_and_its_metrics(server: Server) -> None:
    client = server.client()
    line = "id=4471; name=Ana Lima; city=Rio de Janeiro; plan=gold; since=2019-04-02"
    ask = [{"role": "user", "content": f"Copy this line exactly: {line}\nAgain: {line}\nAgain:"}]
    plain = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=32, temperature=0)  # type: ignore[arg-type]
    looked = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=32, temperature=0,  # type: ignore[arg-type]
                                            extra_body={"speculation": "ngram", "speculation_max_draft": 4})
    assert looked.choices[0].message.content == plain.choices[0].message.content
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'minimill_spec_drafted_tokens_total{method="prediction"' in metrics
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL, messages=ask, max_tokens=4,  # type: ignore[arg-type]
                                       extra_body={"speculation": "sometimes"})
    assert "speculation" in str(refused.value)
    for wrong in ({"type": "image", "content": "x"}, {"type": "content", "content": [{"type": "image_url"}]}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=ask, max_tokens=4,  # type: ignore[arg-type]
                                           prediction=wrong)  # type: ignore[arg-type]
        assert "prediction" in str(refused.value)


def test_speculation_draft_without_a_draft_model_is_a_clear_400(server: Server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        server.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=4,  # type: ignore[arg-type]
                                                extra_body={"speculation": "draft"})
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "speculation" and "--draft-model" in error["message"]


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Qwen2.5-Coder 1.5B served with its 0.5B sibling as the draft model (the server's default method then)."""
    yield from serve(tmp_path_factory.mktemp("drafted"), models=["qwen2.5-coder-1.5b"],
                     draft_model="qwen2.5-coder-0.5b", kv_size=2048, max_seqs=2)


def test_a_draft_model_serves_the_same_answer_and_shows_in_the_metrics(drafted: Server) -> None:
    client = drafted.client()
    ask = [{"role": "user", "content": "Rewrite in lowercase: THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG."}]
    plain = client.chat.completions.create(model="qwen2.5-coder-1.5b", messages=ask, max_tokens=20,  # type: ignore[arg-type]
                                           temperature=0, extra_body={"speculation": "off"})
    sped = client.chat.completions.create(model="qwen2.5-coder-1.5b", messages=ask, max_tokens=20,  # type: ignore[arg-type]
                                          temperature=0)
    assert sped.choices[0].message.content == plain.choices[0].message.content
    assert sped.usage is not None and plain.usage is not None
    assert sped.usage.completion_tokens == plain.usage.completion_tokens  # drafts are never billed as output
    metrics = httpx.get(f"{drafted.url}/metrics").text
    drafted_line = next(line for line in metrics.splitlines()
                        if line.startswith('minimill_spec_drafted_tokens_total{method="draft"'))
    accepted_line = next(line for line in metrics.splitlines()
                         if line.startswith('minimill_spec_accepted_tokens_total{method="draft"'))
    assert float(drafted_line.split()[-1]) > 0 and float(accepted_line.split()[-1]) > 0
