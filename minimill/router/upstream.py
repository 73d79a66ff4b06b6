"""A remote OpenAI-compatible endpoint (another minimill, or a commercial API) served as one of our models.

Every failure becomes a domain error with an OpenAI-shaped message: a refused connection, a peer that
dies mid-answer or answers something that is not a completion is `UpstreamFailed` (502), a peer slower
than the spec's timeout `UpstreamTimeout` (504), the peer's own 400/422 the caller's `InvalidRequest`,
its 429 our `CapacityExceeded`. The API key is only ever put in a header: it is not part of any message,
repr or log line, and the peer's answer to a refused key is not passed on (it may quote the key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from minimill.config import UpstreamSpec
from minimill.errors import CapacityExceeded, InvalidRequest, UpstreamFailed, UpstreamTimeout


def display_url(url: str) -> str:
    """`url` without credentials, query or fragment (what may be printed or logged)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


class Upstream:
    """One remote endpoint; its HTTP client is created on first use (inside the serving event loop).

    The spec's timeout bounds a whole answer, and for a stream the first event and every gap between
    events (httpx's own timeout only bounds each read, which a trickling peer can keep alive forever).
    """

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"Upstream({self.spec.name!r}, {display_url(self.spec.base_url)!r})"

    @property
    def name(self) -> str:
        """The id clients use for this model."""
        return self.spec.name

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.spec.api_key}"} if self.spec.api_key else {}
            self._client = httpx.AsyncClient(base_url=self.spec.base_url, headers=headers,
                                             timeout=httpx.Timeout(self.spec.timeout, connect=5.0))
        return self._client

    def _remote(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.spec.model}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` (with the remote model id) to `path`; the JSON completion, or a domain error."""
        try:
            async with asyncio.timeout(self.spec.timeout):
                response = await self._http().post(path, json=self._remote(body))
        except TimeoutError:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        self._check(response.status_code, response.content)
        try:
            answer = response.json()
        except (ValueError, RecursionError):
            answer = None
        if not _completion(answer):
            raise UpstreamFailed(f"upstream {self.name} answered with something that is not a completion",
                                 code="upstream_error")
        return answer

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request; yields each server-sent event's JSON until `[DONE]`. Errors before the
        first event raise; a peer that breaks off, stalls or sends garbage later raises UpstreamFailed
        (or UpstreamTimeout) from the iterator."""
        try:
            async with self._http().stream("POST", path, json=self._remote(body)) as response:
                if response.status_code >= 400:
                    async with asyncio.timeout(self.spec.timeout):
                        self._check(response.status_code, await response.aread())
                lines = aiter(response.aiter_lines())
                while True:
                    async with asyncio.timeout(self.spec.timeout):
                        data = await _next_data(lines)
                    if data is None or data == "[DONE]":
                        break
                    event = json.loads(data)
                    if not isinstance(event, dict):
                        raise ValueError("not an object")
                    if "error" in event:
                        raise UpstreamFailed(f"upstream {self.name} failed mid-stream: "
                                             f"{_message(event)}", code="upstream_error")
                    yield event
                if data is None:
                    raise UpstreamFailed(f"upstream {self.name} ended the stream without [DONE]",
                                         code="upstream_error")
        except TimeoutError:
            raise self._timeout() from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        except (ValueError, RecursionError):
            raise UpstreamFailed(f"upstream {self.name} sent an unreadable event", code="upstream_error") from None

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"upstream {self.name} did not answer within {self.spec.timeout:g} s",
                               code="upstream_timeout")

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamFailed:
        if isinstance(exc, httpx.TimeoutException):
            return self._timeout()
        return UpstreamFailed(f"upstream {self.name} is unreachable or broke off the answer "
                              f"({type(exc).__name__})", code="upstream_error")

    def _check(self, status: int, content: bytes) -> None:
        if status < 400:
            return
        if status in (401, 403):  # our key, not the caller's doing; the peer's message may quote the key
            raise UpstreamFailed(f"upstream {self.name} refused minimill's credentials (HTTP {status})",
                                 code="upstream_error")
        try:
            message = _message(json.loads(content))
        except (ValueError, RecursionError):
            message = content[:200].decode("utf-8", errors="replace")
        if status in (400, 422):
            raise InvalidRequest(f"upstream {self.name}: {message}", code="upstream_invalid_request")
        if status == 429:
            raise CapacityExceeded(f"upstream {self.name} is rate limited: {message}")
        raise UpstreamFailed(f"upstream {self.name} answered HTTP {status}: {message}", code="upstream_error")

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _next_data(lines: AsyncIterator[str]) -> str | None:
    """The next `data:` payload (comments and other fields skipped); None at the end of the body."""
    async for line in lines:
        if line.startswith("data:"):
            return line[5:].strip()
    return None


def _completion(answer: object) -> bool:
    """Whether `answer` has the shape of a (chat) completion: choices, each an object."""
    return (isinstance(answer, dict) and isinstance(answer.get("choices"), list)
            and all(isinstance(c, dict) for c in answer["choices"]))


def _message(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:500]
    return str(body)[:200]
