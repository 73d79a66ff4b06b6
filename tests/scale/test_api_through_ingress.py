"""The single-process server's API tests, run against two replicas behind the ingress: the same answers, errors
and streams through Ray Serve as from one process. (Tests that read a server's runtime or its metrics directly
stay with the single server: behind the ingress they would read one replica of two.)"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest

from minimill.config import build_config
from minimill.models.catalogue import SMALLEST
from tests.api.conftest import free_port

pytest.importorskip("ray")
from minimill.scale import deployments  # noqa: E402
from tests.api.test_errors import (  # noqa: E402, F401  (collected here, against the ingress)
    test_bad_completion_prompts_are_400,
    test_empty_prompts_in_a_batch_are_400,
    test_malformed_json_is_400,
    test_odd_inputs_never_cause_a_server_error,
    test_prompt_longer_than_context_is_400_naming_the_limit,
    test_unknown_fields_are_ignored,
    test_unknown_model_is_404,
    test_unknown_route_and_method_keep_the_shape,
    test_wrong_values_are_400_naming_the_param,
)
from tests.api.test_generation import (  # noqa: E402, F401
    test_chat_greedy_is_deterministic_and_reports_usage,
    test_chat_logprobs_are_consistent,
    test_chat_stream_matches_whole_response_and_carries_usage,
    test_completions_accepts_token_ids_and_streams,
    test_completions_with_several_prompts_echo_and_logprobs,
    test_n_choices_share_the_prompt,
    test_seed_makes_sampling_reproducible,
    test_stop_strings_are_cut_even_across_tokens,
)
from tests.api.test_surface import (  # noqa: E402, F401
    test_prompt_scoring_for_evaluation_harnesses,
    test_tokenize_refusals_are_openai_shaped_400s,
)


@dataclass
class Ingress:
    """What the API tests use of a server: its URL and a client."""

    url: str

    def client(self, api_key: str = "none") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    """Two replicas sized as the single-process tests' server."""
    port = free_port()
    deployments.start(build_config(models=[SMALLEST], port=port, kv_size=4096, max_seqs=16, replicas=2,
                                   replica_cpus=0.5, data_dir=tmp_path_factory.mktemp("data")))
    try:
        yield Ingress(f"http://127.0.0.1:{port}")
    finally:
        deployments.stop()


@pytest.fixture()
def client(server: Ingress) -> openai.OpenAI:
    return server.client()
