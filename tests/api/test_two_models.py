"""Both bundled models served by one process, each by its name, with its own chat template."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import Server, serve


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("data"), models=["smollm2-135m", "gemma3-270m"], kv_size=2048,
                     max_seqs=4)


def test_each_model_answers_by_name(both: Server) -> None:
    client = both.client()
    listed = client.models.list().data
    assert [m.id for m in listed] == ["smollm2-135m", "gemma3-270m", "default", "auto"]
    for model in ("smollm2-135m", "gemma3-270m"):
        reply = client.chat.completions.create(model=model, max_tokens=12, temperature=0,
                                               messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert reply.model == model and reply.choices[0].message.content
    gemma = both.runtime.engines["gemma3-270m"]
    prompt = gemma.render_chat([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<bos><start_of_turn>user\n") and prompt.endswith("<start_of_turn>model\n")
