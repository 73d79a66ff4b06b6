"""The Batch API's line executor: a line is validated, run and answered exactly as the online endpoint
would (same schemas, same `Call`), at batch priority, reusing its group's prefix."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from typing import Any

from pydantic import ValidationError

from minimill.batch.runner import BatchRunner, LineResult, PreparedLine
from minimill.engine.types import NamedKV
from minimill.errors import InvalidRequest, MinimillError
from minimill.runtime import Runtime
from minimill.serving.calls import Call, ChatCall, CompletionCall
from minimill.serving.charging import billed_cached
from minimill.serving.convert import usage_out
from minimill.serving.errors import describe, invalid_body
from minimill.serving.generation import gather, start
from minimill.serving.schemas import ChatCompletionRequest, CompletionRequest


class BatchLines:
    """Implements `batch.runner.LineExecutor` over this server's endpoints."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def prepare(self, tenant: str, endpoint: str, body: dict[str, Any]) -> PreparedLine[Call]:
        """The body checked by the endpoint's schema and preparation; MinimillError if it would be refused."""
        schema = ChatCompletionRequest if endpoint == "/v1/chat/completions" else CompletionRequest
        try:
            request = schema.model_validate(body)
        except ValidationError as exc:
            raise invalid_body(exc.errors(), ("body",)) from None
        if request.stream:
            raise InvalidRequest("stream is not supported in a batch: each answer is written whole", param="stream")
        call: Call = (ChatCall.prepare(request, self.runtime, tenant, sessions=False)
                      if isinstance(request, ChatCompletionRequest)
                      else CompletionCall.prepare(request, self.runtime, tenant, sessions=False))
        return PreparedLine(call.engine.name, tuple(tuple(p) for p in call.prompts), call)

    async def execute(self, tenant: str, line: PreparedLine[Call], request_id: str,
                      reuse: NamedKV | None) -> LineResult:
        """Run at batch priority; the answer's usage is filled in, its cost is left to the runner."""
        call = line.call
        rid = f"{'chatcmpl' if call.kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
        try:
            stream = await start(call.engine, call.requests(rid, tenant, reuse=reuse, priority="batch"))
            choices, usage = await gather(stream, call.n_choices)
        except MinimillError as exc:
            status, body = describe(exc)
            return LineResult(status, body, rid)
        answer = call.response(rid, int(time.time()), choices, usage_out(usage)).model_dump(mode="json")
        return LineResult(200, answer, rid, usage, billed_cached(call.use, usage, len(call.prompts)))

    def error(self, exc: MinimillError) -> tuple[int, dict[str, Any]]:
        """OpenAI's status and error body for a refused line."""
        return describe(exc)


def batch_runner(runtime: Runtime, runner_id: str | None = None) -> BatchRunner[Call]:
    """The Batch API's runner over `runtime`'s stores, meter and engines, its lines run by `BatchLines`. Its id
    names it on batch leases: by default this host and data dir, so a restarted server resumes its own batches
    at once (a replica passes its own)."""
    if runner_id is None:
        place = hashlib.sha256(str(runtime.config.data_dir.resolve()).encode()).hexdigest()[:12]
        runner_id = f"{socket.gethostname()[:40]}:{place}"
    return BatchRunner(runtime.batches, runtime.files, BatchLines(runtime), runtime.meter, runtime.engines,
                       runtime.config.batch, runner_id)
