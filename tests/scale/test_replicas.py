"""Two replicas on a local Ray instance (127.0.0.1) behind one endpoint, with one ledger on a real PostgreSQL:
the official openai client through the ingress, session, prefix and cache affinity, a cache loaded from the
shared disk tier by a replica that did not compute it, a replica killed mid-load, batches, and the ledger
complete afterwards."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from minimill.api.auth import tenant_of
from minimill.config import Config, build_config
from minimill.models.catalogue import SMALLEST
from tests.api.conftest import free_port

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from minimill.scale import deployments  # noqa: E402  (needs Ray)

KEY = "replica-tenant"
SYSTEM = ("You are a careful assistant for a bakery. Answer in one short sentence. Prices: bread 3 euros, "
          "croissant 2 euros, cake 20 euros. Opening hours: 7 to 19, closed on Mondays. ") * 3
GREEDY: dict[str, Any] = {"max_tokens": 8, "temperature": 0}


@dataclass
class Cluster:
    """The ingress's URL, the config the replicas run, and the ledger's database URL."""

    url: str
    config: Config
    ledger_url: str

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def ledger_ids(self, key: str = KEY) -> list[str]:
        engine = create_engine(self.ledger_url)
        with engine.connect() as conn:
            ids = [row[0] for row in conn.execute(text("SELECT id FROM ledger WHERE tenant = :t"),
                                                   {"t": tenant_of(key)})]
        engine.dispose()
        return ids


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Cluster]:
    data: Path = tmp_path_factory.mktemp("data")
    port = free_port()
    # Half a CPU each: a third replica fits this 2-core host while the test adds one.
    config = build_config(models=[SMALLEST], port=port, kv_size=2048, max_seqs=8, data_dir=data, replicas=2,
                          replica_cpus=0.5, max_queue_delay=300,  # a survivor takes a dead replica's load: no 429
                          api_keys=[KEY, "other-tenant"], ledger_url=postgres_url, max_body_bytes=64 * 1024,
                          prefix_disk_bytes=64 << 20)
    deployments.start(config)
    try:
        yield Cluster(f"http://127.0.0.1:{port}", config, postgres_url)
    finally:
        deployments.stop()


def chat(cluster: Cluster, messages: list[dict[str, str]], key: str = KEY,
         **extra: Any) -> tuple[str, Any]:
    """The replica that answered and the completion."""
    raw = cluster.client(key).chat.completions.with_raw_response.create(
        model=SMALLEST, messages=messages, extra_body=extra or None, **GREEDY)  # type: ignore[arg-type]
    return raw.headers["x-minimill-replica"], raw.parse()


def test_the_ingress_speaks_the_servers_api(cluster: Cluster) -> None:
    client = cluster.client()
    assert [m.id for m in client.models.list().data][0] == SMALLEST
    replica, done = chat(cluster, [{"role": "user", "content": "Say hello."}])
    assert replica and done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 8
    stream = client.chat.completions.create(model=SMALLEST, messages=[{"role": "user", "content": "Count."}],
                                            stream=True, stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # streamed, not one piece
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    text_done = client.completions.create(model=SMALLEST, prompt="Once upon a time", **GREEDY)
    assert text_done.usage.completion_tokens == 8

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        cluster.client("wrong").models.list()
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=SMALLEST, messages=[], **GREEDY)
    assert bad.value.status_code == 400
    big = httpx.post(f"{cluster.url}/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                     content=b"{" + b" " * (70 * 1024) + b"}")
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{cluster.url}/health").json()["status"] == "ok"


def test_turns_of_a_session_land_on_its_replica_and_reuse_its_kv(cluster: Cluster) -> None:
    for session in ("s-one", "s-two", "s-three"):
        history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Hello from {session}."}]
        first, done = chat(cluster, history, session_id=session)
        for turn in range(2):
            history += [{"role": "assistant", "content": done.choices[0].message.content},
                        {"role": "user", "content": f"And question {turn}?"}]
            replica, done = chat(cluster, history, session_id=session)
            assert replica == first
            assert done.usage.prompt_tokens_details.cached_tokens > 100


def test_a_plain_clients_conversations_stay_where_their_history_is(cluster: Cluster) -> None:
    # No session id: the router matches the resent history's prefix, as for a plain OpenAI client.
    homes: dict[int, str] = {}
    # 12 conversations: all on one replica by chance is 2 in 4,096.
    histories = {c: [{"role": "system", "content": f"Conversation {c}. {SYSTEM}"}] for c in range(12)}
    for turn in range(2):
        for c, history in histories.items():
            history.append({"role": "user", "content": f"Turn {turn} of conversation {c}: what now?"})
            replica, done = chat(cluster, history)
            history.append({"role": "assistant", "content": done.choices[0].message.content})
            if turn == 0:
                homes[c] = replica
            else:
                assert replica == homes[c]
                assert done.usage.prompt_tokens_details.cached_tokens > 100
    assert len(set(homes.values())) == 2  # new conversations spread over both replicas


def create_cache(cluster: Cluster) -> tuple[str, str, int]:
    raw = httpx.post(f"{cluster.url}/v1/caches", headers={"authorization": f"Bearer {KEY}"}, timeout=60,
                     json={"model": SMALLEST, "messages": [{"role": "system", "content": "Cache. " + SYSTEM}],
                           "ttl_seconds": 600})
    assert raw.status_code == 200, raw.text
    cache = raw.json()
    return raw.headers["x-minimill-replica"], cache["id"], cache["tokens"]


def test_each_replica_keeps_its_disk_prefixes_in_a_directory_of_its_own(cluster: Cluster) -> None:
    # Each empties its directory as it opens: one shared directory would lose the other replica's files.
    wait_for_two_replicas(cluster)
    directories = sorted(p.name for p in cluster.config.data_dir.glob("kv/*/prefixes*"))
    assert directories == ["prefixes-replica-0", "prefixes-replica-1"]


def test_a_cache_is_used_where_it_was_made_and_loaded_from_disk_elsewhere(cluster: Cluster) -> None:
    owner, cache_id, tokens = create_cache(cluster)
    time.sleep(cluster.config.scale.stats_period * 2.5)  # the owner's report reaches the router
    prefix = [{"role": "system", "content": "Cache. " + SYSTEM}]
    for i in range(3):
        replica, done = chat(cluster, [*prefix, {"role": "user", "content": f"Question {i}?"}], cache_id=cache_id)
        assert replica == owner and done.usage.prompt_tokens_details.cached_tokens >= tokens

    kill(owner)  # its KV in memory is gone; the cache's file on the shared disk tier is not
    deadline = time.monotonic() + 90
    while True:
        try:
            replica, done = chat(cluster, [*prefix, {"role": "user", "content": "After?"}], cache_id=cache_id)
            break
        except (openai.APIStatusError, openai.APIConnectionError):
            assert time.monotonic() < deadline
            time.sleep(1)
    assert replica != owner
    assert done.usage.prompt_tokens_details.cached_tokens >= tokens  # loaded, not recomputed
    assert done.usage.model_extra["cost"]["cached_input"] > 0  # type: ignore[index]  # and billed as such


def kill(replica: str) -> None:
    """Kill a replica's actor as a crash would (Ray Serve starts a new one)."""
    actor = ray.get_actor(f"SERVE_REPLICA::{deployments.APP_NAME}#{deployments.REPLICA}#{replica}",
                          namespace="serve")
    ray.kill(actor, no_restart=True)


def wait_for_two_replicas(cluster: Cluster, count: int = 2) -> set[str]:
    """The ids of `count` replicas that answered (short prompts go to any replica)."""
    deadline = time.monotonic() + 120
    seen: set[str] = set()
    while len(seen) < count:
        assert time.monotonic() < deadline, seen
        try:
            seen.add(chat(cluster, [{"role": "user", "content": f"ping {len(seen)} {time.monotonic()}"}])[0])
        except (openai.APIStatusError, openai.APIConnectionError):
            time.sleep(1)
    return seen


def test_a_replica_killed_mid_load_fails_only_its_requests_and_the_ledger_is_exact(cluster: Cluster) -> None:
    wait_for_two_replicas(cluster)
    before = set(cluster.ledger_ids())
    client = cluster.client()
    streams: dict[int, str] = {}  # request -> the replica streaming it

    def one(i: int) -> tuple[str, str, int] | Exception:
        """Even requests whole (nothing is sent before the end: a dead replica's are retried elsewhere), odd
        ones streamed (a dead replica's are cut)."""
        request: dict[str, Any] = {"model": SMALLEST, "messages": [{"role": "user", "content": f"Story {i}."}],
                                   "max_tokens": 128, "temperature": 0, "extra_body": {"ignore_eos": True}}
        try:
            if i % 2 == 0:
                raw = client.chat.completions.with_raw_response.create(**request)
                done = raw.parse()
                return raw.headers["x-minimill-replica"], done.id, done.usage.completion_tokens
            with client.chat.completions.with_streaming_response.create(
                    **request, stream=True, stream_options={"include_usage": True}) as response:
                streams[i] = response.headers["x-minimill-replica"]
                chunks = list(response.parse())
            usage = chunks[-1].usage
            if usage is None:
                return RuntimeError("the stream ended without its usage")
            return streams[i], chunks[-1].id, usage.completion_tokens
        except Exception as exc:  # what a client sees of its replica's death
            return exc

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one, i) for i in range(12)]
        deadline = time.monotonic() + 60
        while len(streams) < 2:  # streams have started
            assert time.monotonic() < deadline
            time.sleep(0.1)
        started = dict(streams)
        victim = Counter(started.values()).most_common(1)[0][0]
        cut = {i for i, replica in started.items() if replica == victim and not futures[i].done()}
        kill(victim)
        results = [f.result() for f in futures]
    assert cut
    for i, result in enumerate(results):
        if i in cut:
            assert isinstance(result, Exception), (i, result)  # cut: the client sees an error, not a short answer
        elif streams.get(i) != victim:  # never affected, retried elsewhere (nothing was sent yet), or elsewhere
            assert not isinstance(result, Exception), (i, result)
            assert result[2] == 128
    finished = [r for r in results if not isinstance(r, Exception)]

    wait_for_two_replicas(cluster)  # a new replica took the dead one's place; requests succeed again
    ids = [i for i in cluster.ledger_ids() if i not in before]
    assert len(ids) == len(set(ids))  # nothing billed twice
    for _, completion_id, _ in finished:
        assert ids.count(completion_id) == 1  # every answer billed once


def test_a_batch_runs_once_across_replicas(cluster: Cluster) -> None:
    client = cluster.client()
    lines = [{"custom_id": f"row-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": SMALLEST, "messages": [{"role": "system", "content": SYSTEM},
                                                       {"role": "user", "content": f"Row {i}?"}], **GREEDY}}
             for i in range(6)]
    upload = client.files.create(file=("in.jsonl", "\n".join(json.dumps(x) for x in lines).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 180
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired"):
        assert time.monotonic() < deadline, batch.status
        time.sleep(1)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == 6
    assert batch.output_file_id is not None
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == [f"row-{i}" for i in range(6)]
    billed = [i for i in cluster.ledger_ids() if i.startswith(f"{batch.id}:")]
    assert sorted(i for i in billed if ":prefix:" not in i) == sorted(f"{batch.id}:{n}" for n in range(1, 7))


def test_replicas_are_added_and_removed_while_it_runs(cluster: Cluster) -> None:
    def replicas(count: int) -> None:
        done = subprocess.run([sys.executable, "-m", "minimill.cli", "replicas", str(count)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

    two = wait_for_two_replicas(cluster)
    replicas(3)
    three = wait_for_two_replicas(cluster, 3)
    assert two < three
    replicas(2)
    deadline = time.monotonic() + 60
    while serve.status().applications[deployments.APP_NAME].deployments[deployments.REPLICA].replica_states != {
            "RUNNING": 2}:
        assert time.monotonic() < deadline
        time.sleep(1)
