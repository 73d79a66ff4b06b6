"""`POST /tokenize` and `POST /detokenize`, in vLLM's shapes: a model's own tokenizer and chat template."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from minimill.api.deps import RuntimeDep, TenantDep
from minimill.runtime import Runtime
from minimill.serving import bounds, convert
from minimill.serving.schemas import DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse

router = APIRouter()


def _tokenize(body: TokenizeRequest, runtime: Runtime) -> TokenizeResponse:
    """Ids of the prompt or the rendered chat, within the request bounds (run off the event loop)."""
    engine = runtime.engine_for(body.model)
    limits = runtime.config.limits
    if body.messages is not None:
        tokens = engine.chat_tokens(convert.bounded_messages(body.messages, engine, limits),
                                    open_turn=body.add_generation_prompt)
    else:
        assert body.prompt is not None  # the schema requires one of the two
        bounds.check_text_fits([body.prompt], engine.longest_piece, engine.n_ctx, "prompt")
        tokens = engine.tokenize(body.prompt, add_special=body.add_special_tokens)
    strs = [engine.detokenize([t]) for t in tokens] if body.return_token_strs else None
    return TokenizeResponse(count=len(tokens), max_model_len=engine.n_ctx, tokens=tokens, token_strs=strs)


def _detokenize(body: DetokenizeRequest, runtime: Runtime) -> DetokenizeResponse:
    """The text of ids of this model's vocabulary (400 for any other id)."""
    engine = runtime.engine_for(body.model)
    bounds.check_token_ids([body.tokens], engine.model.n_vocab, param="tokens")
    return DetokenizeResponse(prompt=engine.detokenize(body.tokens))


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, runtime: RuntimeDep, tenant: TenantDep) -> TokenizeResponse:
    """A prompt's (or a chat's) token ids under the model's tokenizer and template."""
    return await asyncio.to_thread(_tokenize, body.model_copy(update={"model": runtime.resolve(body.model)}), runtime)


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, runtime: RuntimeDep, tenant: TenantDep) -> DetokenizeResponse:
    """The text of token ids."""
    return await asyncio.to_thread(_detokenize, body.model_copy(update={"model": runtime.resolve(body.model)}),
                                   runtime)
