"""`minimill serve` in its own process, so that a crash is seen as a dead process and not a dead test run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.api.conftest import CliServer, cli_server


@dataclass
class Target:
    """A served process and an HTTP client for it."""

    server: CliServer
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def alive(self) -> bool:
        """The process runs and answers /health."""
        if self.server.process.poll() is not None:
            return False
        try:
            return self.http.get("/health", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """An open server on loopback (SmolLM2, small KV)."""
    with cli_server(tmp_path_factory.mktemp("data"), "--kv-size", "2048", "--max-seqs", "4", "--threads", "2") as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as http:
        yield Target(srv, http)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A server whose only keys are admin keys, given in the environment: they must still be required."""
    with cli_server(tmp_path_factory.mktemp("data"), "--kv-size", "1024", "--max-seqs", "2", "--threads", "2",
                    env={"MINIMILL_ADMIN_KEYS": "admin-key"}) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as http:
        yield Target(srv, http)
