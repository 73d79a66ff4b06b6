"""A small HTTP client for a minimill (or any OpenAI-compatible) Files and Batch API: what
`minimill batch submit|status|cancel` use. httpx only; nothing of the server is imported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchClientError(Exception):
    """The server refused a call; the message is its error message."""


class BatchClient:
    """Upload, create, poll, download and cancel batches on one server."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise BatchClientError(f"{method} {path}: HTTP {response.status_code}: {message}")
        return response

    def submit(self, path: Path, endpoint: str | None = None, window: str = "24h",
               metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload a JSONL file and start a batch on it; the endpoint defaults to the first line's `url`."""
        data = path.read_bytes()
        if endpoint is None:
            first = next((line for line in data.decode("utf-8", "replace").splitlines() if line.strip()), "{}")
            try:
                endpoint = json.loads(first).get("url") or "/v1/chat/completions"
            except (ValueError, AttributeError):
                endpoint = "/v1/chat/completions"
        uploaded = self._call("POST", "/files", files={"file": (path.name, data, "application/jsonl")},
                              data={"purpose": "batch"}).json()
        body = {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": window}
        if metadata:
            body["metadata"] = metadata
        return self._call("POST", "/batches", json=body).json()

    def get(self, batch_id: str) -> dict[str, Any]:
        """The batch object."""
        return self._call("GET", f"/batches/{batch_id}").json()

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Ask the server to cancel."""
        return self._call("POST", f"/batches/{batch_id}/cancel").json()

    def wait(self, batch_id: str, on_progress: Callable[[dict[str, Any]], None], poll: float = 1.0) -> dict[str, Any]:
        """Poll until the batch ends, calling `on_progress` with each state."""
        while True:
            batch = self.get(batch_id)
            on_progress(batch)
            if batch["status"] in TERMINAL:
                return batch
            time.sleep(poll)

    def download(self, file_id: str, path: Path) -> Path:
        """Write a file's content to `path`."""
        path.write_bytes(self._call("GET", f"/files/{file_id}/content").content)
        return path
