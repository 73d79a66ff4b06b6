"""The Files and Batch API through the official `openai` client on a real server: lifecycle, outputs
equal to online answers, prefix computed once per group, exact discounted bills, validation, cancel."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import update

from minimill.api.auth import tenant_of
from minimill.batch.store import batches
from minimill.billing.prices import MILLION, money
from minimill.kv.radix import common_length
from tests.api.conftest import Server, serve

MODEL = "smollm2-135m"
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("batch"), kv_size=4096, max_seqs=8, api_keys=["alice", "bob"],
                     max_file_bytes=100_000)


def instructions(topic: str) -> str:
    return (f"You clean rows about {topic}. Rewrite each row as 'name; city; year' with the name capitalised, "
            "the city spelled in full and the year in four digits. Reply with the cleaned row only. ") * 3


def chat_line(custom_id: str, system: str, row: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": CHAT,
            "body": {"model": MODEL, "messages": [{"role": "system", "content": system},
                                                  {"role": "user", "content": row}],
                     "max_tokens": 10, "temperature": 0, **extra}}


def jsonl(lines: list[Any]) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def submit(client: openai.OpenAI, data: bytes, endpoint: str = CHAT, **extra: Any) -> Any:
    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h",  # type: ignore[arg-type]
                                 **extra)


def wait(client: openai.OpenAI, batch_id: str, until: tuple[str, ...] = ("completed", "failed", "cancelled",
                                                                         "expired"), timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).content.decode().splitlines()]


def test_batch_lifecycle_same_answers_as_online_prefix_once_exact_discounted_bills(batch_server: Server) -> None:
    alice = batch_server.client("alice")
    system = instructions("lifecycle")
    rows = ["john smith, nyc, 99", "mary jones, la, 2001", "li wei, sf, 87", "ana lima, rio, 05",
            "tom o'brien, dc, 1999", "sara khan, chi, 12"]
    lines = [chat_line(f"row-{n}", system, row) for n, row in enumerate(rows)]
    computed_before = batch_server.metric("minimill_prompt_tokens_total") - batch_server.metric(
        "minimill_prefix_cached_tokens_total")
    created = submit(alice, jsonl(lines), metadata={"job": "clean"})
    assert created.status == "validating" and created.metadata == {"job": "clean"}
    assert created.request_counts.total == 0 and created.endpoint == CHAT
    done = wait(alice, created.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 6, 0)
    assert done.error_file_id is None and done.completed_at >= done.in_progress_at >= done.created_at
    out = lines_of(alice, done.output_file_id)
    assert [o["custom_id"] for o in out] == [line["custom_id"] for line in lines]
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)

    # The group's prefix was computed once: every line copied it, only its own rest was prefilled.
    engine = batch_server.runtime.engines[MODEL]
    tokens = [engine.chat_tokens(line["body"]["messages"]) for line in lines]
    shared = min(common_length(tokens[0], t) for t in tokens[1:])
    cached = [o["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] for o in out]
    assert cached == [shared] * len(lines)
    computed = batch_server.metric("minimill_prompt_tokens_total") - batch_server.metric(
        "minimill_prefix_cached_tokens_total") - computed_before
    assert computed == shared + sum(len(t) - shared for t in tokens)

    # Bills: every token class at the batch discount, exactly; the batch's cost is their sum.
    prices = batch_server.runtime.meter.prices.for_model(MODEL)
    half = prices.batch_discount
    total = Decimal(0)
    for o in out:
        usage = o["response"]["body"]["usage"]
        hit = usage["prompt_tokens_details"]["cached_tokens"]
        expected = (money((usage["prompt_tokens"] - hit) * prices.input * half / MILLION)
                    + money(hit * prices.cached_input * half / MILLION)
                    + money(usage["completion_tokens"] * prices.output * half / MILLION))
        assert usage["cost"]["total"] == float(expected)
        total += expected
    prefix_bill = money(shared * prices.input * half / MILLION)
    assert done.model_extra["cost"]["total"] == pytest.approx(float(total + prefix_bill), rel=1e-12)
    entries = batch_server.runtime.meter.ledger.entries(tenant_of("alice"), id_prefix=f"{done.id}:")
    assert sorted(e.kind for e in entries) == ["batch.chat.completion"] * 6 + ["batch.prefix"]
    assert done.usage.input_tokens == sum(len(t) for t in tokens) + shared
    assert done.usage.input_tokens_details.cached_tokens == shared * len(lines)

    # The same requests online give the same greedy answers.
    for line, o in zip(lines, out, strict=True):
        online = alice.chat.completions.create(**line["body"])
        assert o["response"]["body"]["choices"][0]["message"]["content"] == online.choices[0].message.content

    # Listing, and isolation between tenants.
    assert done.id in [b.id for b in alice.batches.list()]
    assert {f.purpose for f in alice.files.list()} >= {"batch", "batch_output"}
    bob = batch_server.client("bob")
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(done.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    assert done.id not in [b.id for b in bob.batches.list()]
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'completed'"):
        alice.batches.cancel(done.id)


def test_per_line_problems_go_to_the_error_file_and_the_rest_runs(batch_server: Server) -> None:
    alice = batch_server.client("alice")
    system = instructions("validation")
    lines: list[Any] = [
        chat_line("good-1", system, "ana, rio, 05"),
        "{not json at all",
        {**chat_line("wrong-url", system, "x"), "url": "/v1/completions"},
        chat_line("good-1", system, "a duplicate id"),
        chat_line("hot", system, "x", temperature=5),
        {**chat_line("no-model", system, "x"), "body": {"model": "no-such-model", "messages": [
            {"role": "user", "content": "x"}]}},
        chat_line("streamed", system, "x", stream=True),
        chat_line("too-long", system, "x", max_tokens=10 ** 6),
        chat_line("good-2", system, "li wei, sf, 87"),
    ]
    done = wait(alice, submit(alice, jsonl(lines)).id)
    assert done.status == "completed"
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (9, 2, 7)
    assert [o["custom_id"] for o in lines_of(alice, done.output_file_id)] == ["good-1", "good-2"]
    errors = {e["error"]["line"]: e for e in lines_of(alice, done.error_file_id)}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7, 8]
    assert {n: errors[n]["error"]["code"] for n in (2, 3, 4)} == {2: "invalid_json_line", 3: "invalid_url",
                                                                  4: "duplicate_custom_id"}
    assert errors[5]["response"]["status_code"] == 400 and errors[5]["error"]["param"] == "temperature"
    assert errors[6]["response"]["status_code"] == 404 and errors[6]["error"]["code"] == "model_not_found"
    assert "stream" in errors[7]["error"]["message"] and errors[8]["error"]["code"] == "context_length_exceeded"
    assert all(f"line {n}" in e["error"]["message"] for n, e in errors.items())
    assert errors[5]["custom_id"] == "hot" and errors[2]["custom_id"] is None


def test_whole_file_problems_fail_the_batch_and_bad_requests_are_refused(batch_server: Server) -> None:
    alice = batch_server.client("alice")
    failed = wait(alice, submit(alice, b"name,city\njohn,nyc\n").id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.output_file_id is None
    assert failed.errors.data[0].code == "invalid_file_format" and "JSONL" in failed.errors.data[0].message
    uploaded = alice.files.create(file=("in.jsonl", jsonl([chat_line("a", "s", "r")])), purpose="batch")
    assert alice.files.retrieve(uploaded.id).bytes == len(jsonl([chat_line("a", "s", "r")]))
    with pytest.raises(openai.NotFoundError):
        alice.batches.create(input_file_id="file-nope", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):  # another tenant's file
        batch_server.client("bob").batches.create(input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h")
    for bad in ({"endpoint": "/v1/embeddings"}, {"completion_window": "2d"}, {"completion_window": "999h"},
                {"metadata": {f"k{i}": "v" for i in range(17)}}):
        body = {"input_file_id": uploaded.id, "endpoint": CHAT, "completion_window": "24h", **bad}
        with pytest.raises(openai.BadRequestError) as caught:
            alice.post("/batches", cast_to=object, body=body)
        assert caught.value.body["param"] == next(iter(bad))  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="purpose"):
        alice.files.create(file=("in.jsonl", b"{}"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as too_big:
        alice.files.create(file=("big.jsonl", b"x" * 100_001), purpose="batch")
    assert too_big.value.code == "file_too_large"
    with pytest.raises(openai.NotFoundError):
        alice.batches.retrieve("batch_nope")
    assert alice.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(uploaded.id)


def test_cancel_stops_new_lines_promptly_and_keeps_finished_ones(batch_server: Server) -> None:
    alice = batch_server.client("alice")
    system = instructions("cancelling")
    lines = [chat_line(f"c-{n}", system, f"row {n}", max_tokens=64, ignore_eos=True) for n in range(40)]
    created = submit(alice, jsonl(lines))
    running = created
    deadline = time.monotonic() + 120
    while running.request_counts.completed < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
        running = alice.batches.retrieve(created.id)
    with pytest.raises(openai.BadRequestError, match="has not finished"):
        alice.files.delete(created.input_file_id)
    asked = time.monotonic()
    cancelling = alice.batches.cancel(created.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait(alice, created.id, until=("cancelled",), timeout=30)
    assert time.monotonic() - asked < 10
    counts = done.request_counts
    assert counts.total == 40 and counts.completed + counts.failed == 40 and 2 <= counts.completed < 40
    out, errors = lines_of(alice, done.output_file_id), lines_of(alice, done.error_file_id)
    assert len(out) == counts.completed and len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert sorted(x["custom_id"] for x in out + errors) == sorted(line["custom_id"] for line in lines)
    assert all(len(o["response"]["body"]["choices"][0]["message"]["content"]) > 0 for o in out)
    entries = batch_server.runtime.meter.ledger.entries(tenant_of("alice"), id_prefix=f"{done.id}:")
    assert sum(e.kind == "batch.chat.completion" for e in entries) == counts.completed  # only finished lines billed


def test_cli_submit_writes_the_answers_and_status_reads_them(batch_server: Server, tmp_path: Any) -> None:
    source = tmp_path / "rows.jsonl"
    source.write_bytes(jsonl([chat_line(f"cli-{n}", instructions("cli"), f"row {n}") for n in range(3)]
                             + ["{broken"]))
    env = ["--base-url", f"{batch_server.url}/v1", "--api-key", "alice"]
    done = subprocess.run([sys.executable, "-m", "minimill.cli", "batch", "submit", str(source), *env],
                          capture_output=True, text=True, timeout=240, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [json.loads(line) for line in (tmp_path / "rows.output.jsonl").read_text().splitlines()]
    assert [a["custom_id"] for a in answers] == ["cli-0", "cli-1", "cli-2"]
    assert json.loads((tmp_path / "rows.errors.jsonl").read_text())["error"]["line"] == 4
    batch_id = next(b.id for b in batch_server.client("alice").batches.list() if b.request_counts.total == 4)
    status = subprocess.run([sys.executable, "-m", "minimill.cli", "batch", "status", batch_id, *env],
                            capture_output=True, text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert status.returncode == 0 and "completed" in status.stdout and batch_id in status.stdout


def test_a_batch_past_its_window_expires_and_its_unrun_lines_say_so(batch_server: Server) -> None:
    alice = batch_server.client("alice")
    system = instructions("expiry")
    # Batches run one at a time: while this one runs, the next one waits in the queue.
    blocker = submit(alice, jsonl([chat_line(f"b-{n}", system, f"row {n}", max_tokens=64, ignore_eos=True)
                                   for n in range(40)]))
    created = submit(alice, jsonl([chat_line(f"e-{n}", system, f"row {n}") for n in range(12)]))
    with batch_server.runtime.batches.ledger.transaction() as conn:  # as if its 24 hours had passed
        conn.execute(update(batches).where(batches.c.id == created.id).values(expires_at=time.time() - 1))
    alice.batches.cancel(blocker.id)
    done = wait(alice, created.id, until=("expired",), timeout=60)
    counts = done.request_counts
    assert done.expired_at is not None and (counts.total, counts.completed, counts.failed) == (12, 0, 12)
    errors = lines_of(alice, done.error_file_id)
    assert [e["custom_id"] for e in errors] == [f"e-{n}" for n in range(12)]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"} and done.output_file_id is None
    assert wait(alice, blocker.id).status == "cancelled"


def test_batches_of_two_tenants_make_progress_side_by_side(batch_server: Server) -> None:
    alice, bob = batch_server.client("alice"), batch_server.client("bob")
    long = submit(alice, jsonl([chat_line(f"a-{n}", instructions("a long job"), f"row {n}", max_tokens=48,
                                          ignore_eos=True) for n in range(40)]))
    deadline = time.monotonic() + 120
    while alice.batches.retrieve(long.id).request_counts.completed < 1:  # alice's batch is under way
        assert time.monotonic() < deadline
        time.sleep(0.1)
    short = submit(bob, jsonl([chat_line(f"b-{n}", instructions("a short job"), f"row {n}") for n in range(3)]))
    done = wait(bob, short.id, timeout=180)
    behind = alice.batches.retrieve(long.id)
    try:
        assert done.status == "completed" and done.request_counts.completed == 3
        # bob did not queue behind alice's 40 lines: his finished while hers was still running
        assert behind.status == "in_progress" and behind.request_counts.completed < 40, behind.request_counts
    finally:
        with contextlib.suppress(openai.BadRequestError):  # already finished: nothing to cancel
            alice.batches.cancel(long.id)
        wait(alice, long.id, until=("cancelled", "completed"), timeout=60)
