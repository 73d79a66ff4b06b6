"""The rest of the OpenAI (and vLLM) surface a switching user meets: /tokenize and /detokenize,
`system_fingerprint` on every response, prices measured per model, and prompt scoring refused by name."""

from __future__ import annotations

import httpx
import openai
import pytest

from minimill.billing.throughput import PUBLISHED, ThroughputStore
from minimill.models.fingerprint import file_digest
from tests.api.conftest import Server

MODEL = "smollm2-135m"


def post(server: Server, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def test_tokenize_and_detokenize_round_trip(server: Server) -> None:
    text = "Hello, wörld! 12345 ✓"
    done = post(server, "/tokenize", {"model": MODEL, "prompt": text, "return_token_strs": True}).json()
    assert done["count"] == len(done["tokens"]) > 3 and done["max_model_len"] == server.runtime.engines[MODEL].n_ctx
    assert len(done["token_strs"]) == done["count"]
    back = post(server, "/detokenize", {"model": "default", "tokens": done["tokens"]}).json()
    assert back["prompt"] == text
    chat = post(server, "/tokenize", {"model": MODEL, "messages": [{"role": "user", "content": text}]}).json()
    engine = server.runtime.engines[MODEL]
    assert chat["tokens"] == engine.chat_tokens([{"role": "user", "content": text}])
    closed = post(server, "/tokenize", {"model": MODEL, "add_generation_prompt": False,
                                        "messages": [{"role": "user", "content": text}]}).json()
    assert closed["count"] < chat["count"] and chat["tokens"][:closed["count"]] == closed["tokens"]


def test_tokenize_refusals_are_openai_shaped_400s(server: Server) -> None:
    for path, body, param in (("/detokenize", {"model": MODEL, "tokens": [10**7]}, "tokens"),
                              ("/detokenize", {"model": MODEL, "tokens": [-1]}, "tokens"),
                              ("/tokenize", {"model": MODEL}, None),
                              ("/tokenize", {"model": "nope", "prompt": "x"}, "model")):
        reply = post(server, path, body)
        assert reply.status_code in (400, 404), reply.text
        error = reply.json()["error"]
        assert error["message"] and (param is None or error["param"] == param)


def test_every_response_carries_the_system_fingerprint(server: Server, client: openai.OpenAI) -> None:
    engine = server.runtime.engines[MODEL]
    fingerprint = engine.system_fingerprint
    assert fingerprint.startswith("fp_") and len(fingerprint) == 15
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert chat.system_fingerprint == fingerprint
    text = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
    assert text.system_fingerprint == fingerprint
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=3, stream=True))
    assert chunks and all(c.system_fingerprint == fingerprint for c in chunks)


def test_prices_come_from_the_measured_throughput(server: Server) -> None:
    spec = server.runtime.specs[MODEL]
    measured = ThroughputStore(PUBLISHED).get(file_digest(spec.path, server.runtime.config.data_dir / "fingerprints"))
    assert measured is not None and measured.model == MODEL
    prices = httpx.get(f"{server.url}/v1/prices").json()["data"][MODEL]
    hardware, margin = server.runtime.config.billing.hardware_usd_per_hour, server.runtime.config.billing.margin
    expected_output = hardware / (measured.decode_tokens_per_second * 3600) * 1e6 * margin
    assert prices["output"] == pytest.approx(expected_output, rel=1e-4)
    assert prices["input"] == pytest.approx(hardware / (measured.prefill_tokens_per_second * 3600) * 1e6 * margin,
                                            rel=1e-4)


def test_prompt_scoring_for_evaluation_harnesses(server: Server, client: openai.OpenAI) -> None:
    prompt = "The sky is blue and the grass is green."
    ids = post(server, "/tokenize", {"model": MODEL, "prompt": prompt}).json()["tokens"]
    for stream in (False, True):
        if stream:
            chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1,
                                                    stream=True))
            text = "".join(c.choices[0].text for c in chunks if c.choices)
            logprobs = next(c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs.tokens)
        else:
            scored = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1)
            text, logprobs = scored.choices[0].text, scored.choices[0].logprobs
            assert scored.usage.completion_tokens == 0 and scored.usage.prompt_tokens == len(ids)
            assert scored.choices[0].finish_reason == "length"
        assert text == prompt
        assert len(logprobs.tokens) == len(ids) and "".join(logprobs.tokens) == prompt
        assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None  # nothing precedes it
        assert all(v is not None and v <= 0 for v in logprobs.token_logprobs[1:])
        assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)
        assert all(len(top) == 1 for top in logprobs.top_logprobs[1:])
    # a continuation the model finds likely scores higher than one it does not
    likely = client.completions.create(model=MODEL, prompt="One, two, three, four", max_tokens=0, echo=True,
                                       logprobs=0).choices[0].logprobs
    odd = client.completions.create(model=MODEL, prompt="One, two, three, banana", max_tokens=0, echo=True,
                                    logprobs=0).choices[0].logprobs
    assert likely.token_logprobs[-1] > odd.token_logprobs[-1]
