"""FastAPI dependencies: the runtime, and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from minimill.api.auth import request_tenant
from minimill.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The runtime `create_app` was given."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
TenantDep = Annotated[str, Depends(request_tenant)]
