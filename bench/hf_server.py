"""Plain HF transformers behind a minimal OpenAI-compatible chat endpoint: the "no serving engine" peer.

One request at a time (a lock), greedy `generate` with a streamer, the same GGUF file loaded through
transformers' GGUF support (dequantised to float32). Bench-only: needs the `bench` extra
(torch==2.13.0 CPU, transformers, gguf).

    python -m bench.hf_server --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bench.peers import model_path


def build_app(threads: int) -> FastAPI:
    """Load the model once and serve `POST /v1/chat/completions` (stream or not) and `/health`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    torch.set_num_threads(threads)
    path = model_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, torch_dtype=torch.float32)
    model.eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)["input_ids"]
        max_tokens = int(body.get("max_tokens") or 128)
        ignore_eos = bool(body.get("ignore_eos"))
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        counts = {"completion": 0}

        def work() -> None:
            with lock, torch.inference_mode():
                out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, streamer=streamer,
                                     min_new_tokens=max_tokens if ignore_eos else 0)
                counts["completion"] = int(out.shape[1] - ids.shape[1])

        thread = threading.Thread(target=work)
        thread.start()
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = lambda: {"prompt_tokens": int(ids.shape[1]), "completion_tokens": counts["completion"],  # noqa: E731
                         "total_tokens": int(ids.shape[1]) + counts["completion"]}

        def finish() -> str:
            return "length" if counts["completion"] >= max_tokens else "stop"

        async def pieces() -> AsyncIterator[str]:
            for text in streamer:  # blocking iterator: hand each piece to the loop
                yield text
                await asyncio.sleep(0)

        if not body.get("stream"):
            text = "".join([t async for t in pieces()])
            thread.join()
            return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": body["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                              "finish_reason": finish()}], "usage": usage()})

        async def events() -> AsyncIterator[str]:
            head = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": body["model"]}
            async for text in pieces():
                if text:
                    chunk = {**head, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
            thread.join()
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage()})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    uvicorn.run(build_app(args.threads), host="127.0.0.1", port=args.port, log_level="warning")
