"""Ray Serve's autoscaling on requests in flight (`--max-replicas`): a load above `--max-seqs` per replica adds
a replica that then takes requests; when the load stops, the extra replica is given back."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from minimill.config import build_config
from minimill.models.catalogue import SMALLEST
from tests.api.conftest import free_port

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from minimill.scale import deployments  # noqa: E402  (needs Ray)

KEY = "autoscale-tenant"


def running_replicas() -> int:
    states = serve.status().applications[deployments.APP_NAME].deployments[deployments.REPLICA].replica_states
    return states.get("RUNNING", 0)


def test_load_above_the_target_adds_a_replica_and_it_is_given_back_after(tmp_path: Path,
                                                                         postgres_url: str) -> None:
    port = free_port()
    # Target: 2 requests in flight per replica (max_seqs); 6 clients keep 6 in flight, so Ray Serve wants 2 (its
    # maximum) after a second, and 1 again 3 s after the clients stop.
    config = build_config(models=[SMALLEST], port=port, kv_size=2048, max_seqs=2, data_dir=tmp_path, replicas=1,
                          max_replicas=2, upscale_delay=1, downscale_delay=3, replica_cpus=0.5,
                          max_queue_delay=300, api_keys=[KEY], ledger_url=postgres_url)
    deployments.start(config)
    try:
        assert running_replicas() == 1
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=120)
        answered: Counter[str] = Counter()
        failures: list[BaseException] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            turn = 0
            while not stop.is_set():
                turn += 1
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model=SMALLEST, max_tokens=24, temperature=0,
                        messages=[{"role": "user", "content": f"Worker {worker}, request {turn}: tell a story."}])
                    assert raw.parse().usage.completion_tokens > 0
                    answered[raw.headers["x-minimill-replica"]] += 1
                except BaseException as exc:  # noqa: BLE001  (reported below)
                    failures.append(exc)
                    return

        workers = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(6)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 150
        # Scaled up: two replicas running, and the new one answering some of the load.
        while len(answered) < 2 and not failures:
            assert time.monotonic() < deadline, f"never scaled up: {running_replicas()} running, {answered}"
            time.sleep(0.5)
        assert running_replicas() == 2
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
        assert not failures, failures  # scaling up loses nothing
        assert all(count > 0 for count in answered.values()) and len(answered) == 2

        deadline = time.monotonic() + 120
        while running_replicas() != 1:  # idle: given back after the downscale delay
            assert time.monotonic() < deadline, "never scaled down"
            time.sleep(1)
        again = client.chat.completions.create(model=SMALLEST, max_tokens=4,
                                               messages=[{"role": "user", "content": "Still there?"}])
        assert again.usage.completion_tokens == 4
    finally:
        deployments.stop()
