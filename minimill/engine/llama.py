"""The only module that imports `llama_cpp`: thin wrappers over its low-level ctypes API.

Everything above this module speaks token ids, sequence ids and numpy arrays. Objects here own
native memory and free it in `close()`; they are not thread-safe (the engine's step thread uses
them, except tokenization and sampler construction, which touch no context state).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as lc
import numpy as np
import regex
from llama_cpp import llama_grammar

from minimill.engine.types import SamplingParams
from minimill.errors import InvalidRequest

KV_TYPES = {"f16": lc.GGML_TYPE_F16, "bf16": 30, "q8_0": lc.GGML_TYPE_Q8_0, "q4_0": lc.GGML_TYPE_Q4_0}
JSON_OBJECT_GRAMMAR: str = llama_grammar.JSON_GBNF

_LOG_ERROR = 4
_log = logging.getLogger("minimill.llama")


@lc.llama_log_callback
def _forward_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    # llama.cpp prints hundreds of lines per model load; keep only its errors, through logging.
    if level == _LOG_ERROR:
        _log.error(text.decode("utf-8", errors="replace").rstrip())


def _init_backend() -> None:
    # Both calls are process-wide and idempotent: they configure the native library, not the app.
    lc.llama_log_set(_forward_log, ctypes.c_void_p(0))
    lc.llama_backend_init()


def json_schema_to_grammar(schema: dict[str, object]) -> str:
    """GBNF for a JSON schema; raises InvalidRequest when the schema cannot be converted."""
    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises many kinds on schemas it cannot express: all are bad input
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to an accelerator."""
    return bool(lc.llama_supports_gpu_offload())


# llama_token_data as a numpy record: {int32 id, float logit, float p}, 12 bytes, no padding.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class LlamaModel:
    """A loaded GGUF model and its vocabulary: tokenization, metadata, special tokens."""

    def __init__(self, path: Path, *, n_gpu_layers: int | None = None, vocab_only: bool = False) -> None:
        _init_backend()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = (999 if gpu_offload_supported() else 0) if n_gpu_layers is None else n_gpu_layers
        params.vocab_only = vocab_only
        model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise ValueError(f"llama.cpp could not load model {path}")
        self.path = path
        self._model = model
        self._vocab = lc.llama_model_get_vocab(model)
        self.n_vocab: int = lc.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train: int = lc.llama_model_n_ctx_train(model)
        self.n_params: int = lc.llama_model_n_params(model)
        self.add_bos: bool = bool(lc.llama_vocab_get_add_bos(self._vocab))
        self.bos: int = lc.llama_vocab_bos(self._vocab)
        self.eos: int = lc.llama_vocab_eos(self._vocab)
        self._pieces: dict[int, bytes] = {}
        if not self.n_ctx_train:  # a vocabulary-only load reads no hyperparameters: the metadata has it
            arch = self.meta("general.architecture") or ""
            self.n_ctx_train = int(self.meta(f"{arch}.context_length") or 0)

    def kv_bytes_per_token(self, kv_type: str) -> int:
        """Bytes one token's K and V take in every layer, stored as `kv_type` (what keeping KV costs)."""
        head_dim = lc.llama_model_n_embd(self._model) // max(1, lc.llama_model_n_head(self._model))
        per_layer = 2 * lc.llama_model_n_head_kv(self._model) * head_dim  # K and V elements
        element = {"bf16": 2.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}.get(kv_type, 2.0)  # block sizes
        return int(per_layer * lc.llama_model_n_layer(self._model) * element)

    @property
    def native(self) -> lc.llama_model_p:
        """The raw model pointer, for `LlamaContext`."""
        return self._model

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text, or None when the key is absent."""
        buf = ctypes.create_string_buffer(1 << 16)
        n = lc.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            lc.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`; `parse_special` turns special-token text (e.g. <|im_start|>) into ids."""
        data = text.encode("utf-8", errors="replace")
        capacity = len(data) + 16
        buf = (lc.llama_token * capacity)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (lc.llama_token * capacity)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, capacity, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens render as empty); cached per token."""
        cached = self._pieces.get(token)
        if cached is None:
            buf = ctypes.create_string_buffer(64)
            n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
            cached = buf.raw[:n]
            self._pieces[token] = cached
        return cached

    def special_text(self, token: int) -> str:
        """A token's text with special tokens spelled out (e.g. "<bos>"), for chat templates."""
        buf = ctypes.create_string_buffer(128)
        n = lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of a token list, invalid UTF-8 replaced; ValueError for an id outside the vocabulary
        (llama.cpp aborts the process on one)."""
        if any(not 0 <= t < self.n_vocab for t in tokens):
            raise ValueError(f"token ids must be in [0, {self.n_vocab})")
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def longest_piece(self) -> int:
        """Bytes of the longest token: a text of n bytes has at least n / longest_piece() tokens."""
        return max(len(self.piece(t)) for t in range(self.n_vocab))

    def vocabulary_differs(self, other: LlamaModel) -> str | None:
        """How `other`'s vocabulary differs from this one's (None: the same ids stand for the same text and
        specials), so that one model's tokens can be read by the other (a draft model's)."""
        if other.n_vocab != self.n_vocab:
            return f"{other.n_vocab} tokens against {self.n_vocab}"
        if (other.bos, other.eos, other.add_bos) != (self.bos, self.eos, self.add_bos):
            return "different special tokens (BOS/EOS)"
        for token in range(self.n_vocab):
            if other.special_text(token) != self.special_text(token):
                return f"token {token} is {other.special_text(token)!r} against {self.special_text(token)!r}"
        return None

    @property
    def is_recurrent(self) -> bool:
        """Whether the model keeps recurrent state (Mamba, RWKV, hybrids): its memory cannot drop a suffix."""
        return bool(lc.llama_model_is_recurrent(self._model) or lc.llama_model_is_hybrid(self._model))

    def is_eog(self, token: int) -> bool:
        """Whether the token ends generation (EOS, EOT, end-of-turn)."""
        return bool(lc.llama_vocab_is_eog(self._vocab, token))

    def make_sampler(self, params: SamplingParams, seed: int | None) -> SamplerChain:
        """Build the native sampler chain for one choice."""
        return SamplerChain(self, params, seed)

    def close(self) -> None:
        """Free the native model."""
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None


def grammar_walk(model: LlamaModel, gbnf: str, max_steps: int = 64) -> str | None:
    """Compile `gbnf` and follow it from its start, taking the first allowed token each step, until an
    end-of-generation token is allowed or `max_steps` pass: None when usable, else why not.

    llama.cpp may crash the process on a grammar it cannot handle: run this in a disposable worker.
    """
    grammar = lc.llama_sampler_init_grammar(model._vocab, gbnf.encode(), b"root")
    if not grammar:
        return "the grammar could not be parsed"
    ids = np.arange(model.n_vocab, dtype=np.int32)
    end_of_generation = np.array([model.is_eog(int(t)) for t in ids])
    candidates = np.zeros(model.n_vocab, dtype=TOKEN_DATA)
    try:
        for step in range(max_steps):
            candidates["id"], candidates["logit"], candidates["p"] = ids, 0.0, 0.0
            array = lc.llama_token_data_array(data=candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)),
                                              size=len(candidates), selected=-1, sorted=False)
            lc.llama_sampler_apply(grammar, ctypes.byref(array))
            allowed = np.isfinite(candidates["logit"])
            if (allowed & end_of_generation).any():
                return None
            choices = np.flatnonzero(allowed)
            if not len(choices):
                return "no token can start text that matches it" if step == 0 else \
                    "it leads to a point that no token can continue"
            lc.llama_sampler_accept(grammar, int(ids[choices[0]]))
        return None
    finally:
        lc.llama_sampler_free(grammar)


TRIGGER_WINDOW = 512  # characters before the newest token that a trigger match may start in


class SamplerChain:
    """One choice's native sampler chain: bias → penalties → grammar → filters → temperature → draw.

    Stateful (penalty history, grammar position, RNG); `sample` also accepts the drawn token. A grammar
    that allows no token at some point ends the choice there (`sample` returns end-of-sequence).

    With a grammar, a choice that is greedy or samples with temperature alone keeps the grammar out of
    the chain: it draws a token from the whole vocabulary and asks the grammar about that one token,
    filtering the whole vocabulary and drawing again only when it is refused. Same outcome as filtering
    first: greedy, the best allowed token is the best token whenever that one is allowed; sampling, an
    allowed token t comes out with q(t) + (1 - S) q(t) / S = q(t) / S (S: the allowed tokens' mass), the
    filtered distribution. Not with top-k/top-p/min-p, whose cut depends on what is filtered: those filter
    first. Saves checking every vocabulary entry (262k for Gemma) at every step; `grammar_first` turns it off.
    """

    def __init__(self, model: LlamaModel, params: SamplingParams, seed: int | None, *,
                 grammar_first: bool = False) -> None:
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        self._chain = chain
        self._model = model
        self._grammar: lc.llama_sampler_p | None = None
        self._check_first = False
        # A lazy grammar (`grammar_trigger`): output is free until the trigger regex matches it; then the
        # grammar takes over from the token where the match starts. Watched here, not by llama.cpp's own lazy
        # grammars: those throw (and abort the process) when the text they replay does not fit the grammar.
        self._trigger = regex.compile(params.grammar_trigger) if params.grammar_trigger else None
        self._gbnf = params.grammar
        self._text = ""
        self._starts: list[tuple[int, int]] = []  # (token, offset of its text) since the choice began
        add = lambda sampler: lc.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if params.logit_bias:
            biases = (lc.llama_logit_bias * len(params.logit_bias))()
            for slot, (token, bias) in zip(biases, params.logit_bias, strict=True):
                slot.token, slot.bias = token, bias
            add(lc.llama_sampler_init_logit_bias(model.n_vocab, len(params.logit_bias), biases))
        if params.presence_penalty or params.frequency_penalty or params.repetition_penalty != 1.0:
            # Penalties look back over every generated token (the window is a ring buffer).
            window = min(max(params.max_tokens, 64), 8192)
            add(lc.llama_sampler_init_penalties(
                model.n_vocab, window, params.repetition_penalty, params.frequency_penalty, params.presence_penalty))
        if params.grammar is not None:
            grammar = lc.llama_sampler_init_grammar(model._vocab, params.grammar.encode(), b"root")
            if not grammar:
                self.close()
                raise InvalidRequest("the grammar could not be parsed", param="response_format")
            # Kept out of the chain either way: a grammar that refuses every token must end the choice, and
            # llama.cpp's own chain would accept a refused token and abort the process.
            if self._trigger is None:
                self._grammar = grammar
            else:
                lc.llama_sampler_free(grammar)  # parsed: it can be built again when the trigger fires
            unfiltered = params.top_k <= 0 and params.top_p >= 1.0 and params.min_p <= 0.0
            self._check_first = not grammar_first and (params.greedy or unfiltered)
            self._ids = np.arange(model.n_vocab, dtype=np.int32)
            self._candidates = np.zeros(model.n_vocab, dtype=TOKEN_DATA)
            self._dead_end = model.eos
        if params.greedy:
            add(lc.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(lc.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(lc.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(lc.llama_sampler_init_min_p(params.min_p, 1))
        add(lc.llama_sampler_init_temp(params.temperature))
        draw_seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little")
        add(lc.llama_sampler_init_dist(draw_seed & 0xFFFFFFFF))

    def sample(self, ctx: LlamaContext, index: int) -> int:
        """Draw (and accept) a token from the logits of batch row `index`."""
        if self._grammar is None:
            free = int(lc.llama_sampler_sample(self._chain, ctx.native, index))
            if self._trigger is not None:
                self._watch(free)
            return free
        logits = ctx.logits(index)
        token = self._pick(logits, grammar=False) if self._check_first else None
        if token is None or not self._allowed(token):
            token = self._pick(logits, grammar=True)
            if token is None:  # the grammar allows nothing more: end the choice as the model would
                return self._dead_end
        lc.llama_sampler_accept(self._grammar, token)
        lc.llama_sampler_accept(self._chain, token)
        return token

    def _pick(self, logits: np.ndarray, *, grammar: bool) -> int | None:
        """The chain's choice (a draw, when sampling) over every token, or only those the grammar allows with
        `grammar` (None if it allows none); accepts nothing."""
        candidates = self._candidates
        candidates["id"] = self._ids  # samplers sort and rewrite the array in place: refill it each time
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array = lc.llama_token_data_array(data=candidates.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)),
                                          size=len(candidates), selected=-1, sorted=False)
        if grammar:
            lc.llama_sampler_apply(self._grammar, ctypes.byref(array))
            if not np.isfinite(candidates["logit"]).any():
                return None
        lc.llama_sampler_apply(self._chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _allowed(self, token: int, grammar: lc.llama_sampler_p | None = None) -> bool:
        """Whether the grammar allows `token` next (it sets a refused token's logit to -inf)."""
        one = (lc.llama_token_data * 1)(lc.llama_token_data(token, 1.0, 0.0))
        array = lc.llama_token_data_array(data=one, size=1, selected=-1, sorted=False)
        lc.llama_sampler_apply(grammar or self._grammar, ctypes.byref(array))
        return bool(np.isfinite(one[0].logit))

    def _watch(self, token: int) -> None:
        """Record a free token's text; when the trigger matches, start the grammar at the token where the match
        begins and replay the tokens since. Replayed text the grammar refuses leaves the choice free (never a
        crash: the answer is then parsed as it comes)."""
        assert self._trigger is not None and self._gbnf is not None
        piece = self._model.piece(token).decode("utf-8", errors="replace")
        self._starts.append((token, len(self._text)))
        self._text += piece
        found = self._trigger.search(self._text, max(0, len(self._text) - len(piece) - TRIGGER_WINDOW))
        if found is None:
            return
        self._trigger = None
        first = max(i for i, (_, offset) in enumerate(self._starts) if offset <= found.start())
        grammar = lc.llama_sampler_init_grammar(self._model._vocab, self._gbnf.encode(), b"root")
        for replayed, _ in self._starts[first:]:
            if not grammar or not self._allowed(replayed, grammar):
                if grammar:
                    lc.llama_sampler_free(grammar)
                return
            lc.llama_sampler_accept(grammar, replayed)
        self._grammar = grammar

    def close(self) -> None:
        """Free the chain and every sampler in it (and a grammar kept outside it)."""
        if self._chain:
            lc.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar:
            lc.llama_sampler_free(self._grammar)
            self._grammar = None


class TokenBatch:
    """A reusable `llama_batch`: rows of (token, position, sequence, wants-logits)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._batch = lc.llama_batch_init(capacity, 0, 1)
        self.size = 0

    def clear(self) -> None:
        """Forget all rows."""
        self.size = 0

    def add(self, token: int, pos: int, seq_id: int, logits: bool) -> int:
        """Append one row; returns its index (the index to read its logits at)."""
        if self.size >= self.capacity:
            raise ValueError("batch is full")
        b, i = self._batch, self.size
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits
        self.size += 1
        return i

    @property
    def native(self) -> lc.llama_batch:
        """The raw batch with `n_tokens` set to the rows added."""
        self._batch.n_tokens = self.size
        return self._batch

    def close(self) -> None:
        """Free the native batch."""
        if self.capacity:
            lc.llama_batch_free(self._batch)
            self.capacity = 0


@dataclass(frozen=True, slots=True)
class ContextShape:
    """How a context is sized: cells, sequences, batch rows, threads, KV element type."""

    n_ctx: int
    n_seq_max: int
    n_batch: int
    threads: int
    kv_type: str = "f16"


class LlamaContext:
    """One llama.cpp context with a unified KV buffer shared by `n_seq_max` sequences."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        params = lc.llama_context_default_params()
        params.n_ctx = shape.n_ctx
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_batch
        params.n_seq_max = shape.n_seq_max
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        params.kv_unified = True
        params.no_perf = True
        params.type_k = params.type_v = KV_TYPES[shape.kv_type]
        # A quantised V cache needs flash attention; f16/bf16 leave the choice to llama.cpp.
        quantised = shape.kv_type in ("q8_0", "q4_0")
        params.flash_attn_type = 1 if quantised else -1
        ctx = lc.llama_init_from_model(model.native, params)
        if not ctx:
            raise ValueError(f"llama.cpp could not create a context of {shape.n_ctx} cells")
        self.model = model
        self.shape = shape
        self._ctx = ctx
        self._memory = lc.llama_get_memory(ctx)
        self.n_ctx: int = lc.llama_n_ctx(ctx)
        self.n_batch: int = lc.llama_n_batch(ctx)  # llama.cpp caps it at n_ctx: the most rows one decode takes
        # An interruptible decode: ggml asks the abort callback between graph nodes. A Python callback
        # would take the GIL a thousand times a step, so the callback is libc's strlen on a 2-byte flag:
        # nonzero (abort) exactly when the flag's first byte is set, with no Python involved.
        self._stage: ctypes.Array[ctypes.c_uint8] = (ctypes.c_uint8 * 0)()  # reused by `save`
        self._abort_flag = ctypes.create_string_buffer(2)
        strlen = ctypes.cast(ctypes.CDLL(None).strlen, ctypes.c_void_p).value
        assert strlen is not None
        self._abort_callback = lc.ggml_abort_callback(strlen)
        lc.llama_set_abort_callback(ctx, self._abort_callback, ctypes.cast(self._abort_flag, ctypes.c_void_p))

    @property
    def native(self) -> lc.llama_context_p:
        """The raw context pointer, for samplers."""
        return self._ctx

    def decode(self, batch: TokenBatch) -> int:
        """Run one forward pass; 0 = ok, 1 = no KV slot, 2 = aborted (`abort` was called; the batch's
        positions are removed from the KV again), other = error (llama.cpp's codes)."""
        self._abort_flag[0] = b"\x00"
        return int(lc.llama_decode(self._ctx, batch.native))

    def abort(self) -> None:
        """Ask the decode in progress (from any thread) to stop; it returns 2."""
        self._abort_flag[0] = b"\x01"

    def logits(self, index: int) -> np.ndarray:
        """Logits of batch row `index` as a float32 view [n_vocab]; valid until the next decode."""
        ptr = lc.llama_get_logits_ith(self._ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,))

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Share src's KV cells at positions [0, length) with dst (no recompute, no new cells)."""
        lc.llama_memory_seq_cp(self._memory, src, dst, 0, length)

    def remove(self, seq_id: int, start: int = 0) -> None:
        """Drop seq_id's KV at positions >= start."""
        if not lc.llama_memory_seq_rm(self._memory, seq_id, start, -1):
            raise RuntimeError(f"llama.cpp refused to trim sequence {seq_id} at {start}")

    def clear(self) -> None:
        """Drop every sequence's KV."""
        lc.llama_memory_clear(self._memory, True)

    def save(self, seq_id: int) -> bytes:
        """Serialise one sequence's KV (positions, cells, K and V) to bytes."""
        size = int(lc.llama_state_seq_get_size(self._ctx, seq_id))
        if len(self._stage) < size:  # grown, never shrunk: its pages stay mapped, so saves fault only once
            self._stage = (ctypes.c_uint8 * (size + size // 4))()
        written = int(lc.llama_state_seq_get_data(self._ctx, self._stage, size, seq_id))
        return ctypes.string_at(self._stage, written)  # one memcpy (slicing would build a list of ints)

    def restore(self, seq_id: int, data: bytes) -> None:
        """Load bytes from `save` into the empty sequence `seq_id`, bit for bit."""
        buf = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))  # the bytes' own buffer, no copy
        if int(lc.llama_state_seq_set_data(self._ctx, buf, len(data), seq_id)) == 0:
            raise RuntimeError(f"llama.cpp could not restore {len(data)} bytes into sequence {seq_id}")

    def close(self) -> None:
        """Free the native context."""
        if self._ctx:
            lc.llama_free(self._ctx)
            self._ctx = None
