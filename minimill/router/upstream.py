"""A remote OpenAI-compatible endpoint (another minimill, or a commercial API) served as one of our models.

Every failure becomes a domain error with an OpenAI-shaped message: a refused connection or a peer that
dies mid-answer is `UpstreamFailed` (502), a timeout `UpstreamTimeout` (504), the peer's own 400/422 is the
caller's `InvalidRequest`, its 429 our `CapacityExceeded`. The API key is only ever put in a header: it is
not part of any message, repr or log line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from minimill.config import UpstreamSpec
from minimill.errors import CapacityExceeded, InvalidRequest, UpstreamFailed, UpstreamTimeout


class Upstream:
    """One remote endpoint; its HTTP client is created on first use (inside the serving event loop)."""

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"Upstream({self.spec.name!r}, {self.spec.base_url!r})"

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
        """POST `body` (with the remote model id) to `path`; the JSON answer, or a domain error."""
        try:
            response = await self._http().post(path, json=self._remote(body))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        self._check(response.status_code, response.content)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamFailed(f"upstream {self.name} answered with something that is not a completion",
                                 code="upstream_error")
        return answer

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming request; yields each server-sent event's JSON until `[DONE]`. Errors before the
        first event raise; a peer that breaks off later raises UpstreamFailed from the iterator."""
        try:
            async with self._http().stream("POST", path, json=self._remote(body)) as response:
                if response.status_code >= 400:
                    self._check(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if isinstance(event, dict) and "error" in event:
                        raise UpstreamFailed(f"upstream {self.name} failed mid-stream: "
                                             f"{_message(event)}", code="upstream_error")
                    yield event
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        except ValueError:
            raise UpstreamFailed(f"upstream {self.name} sent an unreadable event", code="upstream_error") from None
        raise UpstreamFailed(f"upstream {self.name} ended the stream without [DONE]", code="upstream_error")

    def _transport_error(self, exc: httpx.HTTPError) -> UpstreamFailed:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"upstream {self.name} did not answer within {self.spec.timeout:g} s",
                                   code="upstream_timeout")
        return UpstreamFailed(f"upstream {self.name} is unreachable or broke off the answer "
                              f"({type(exc).__name__})", code="upstream_error")

    def _check(self, status: int, content: bytes) -> None:
        if status < 400:
            return
        try:
            message = _message(json.loads(content))
        except ValueError:
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


def _message(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))[:500]
    return str(body)[:200]
