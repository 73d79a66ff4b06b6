"""minimill on Ray Serve: N replicas, each a whole single-process minimill (its runtime, engine process and
app), behind an ingress that reads each request once, routes it by `affinity.choose` and streams the answer
back. The only module that imports Ray.

    HTTP → Ray Serve's proxy → Ingress (reads the body, routing keys) → AffinityRouter → Replica.handle
          (plays the request through its FastAPI app: auth, limits, errors, billing as in one process)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

import ray
from ray import serve
from ray.exceptions import RayActorError
from ray.serve._private.common import DeploymentID
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
from ray.serve.config import AutoscalingConfig, HTTPOptions, RequestRouterConfig
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from minimill.api.app import MULTIPART_OVERHEAD_BYTES, create_app
from minimill.api.door import DoorLimits
from minimill.config import Config, ScaleConfig
from minimill.runtime import Runtime
from minimill.scale.affinity import IMBALANCE, Holdings, InFlight, ReplicaView, RoutingKeys, choose, keys_for
from minimill.scale.asgi import Forwarded, Head, play
from minimill.serving.errors import error_body

log = logging.getLogger(__name__)

APP_NAME = "minimill"
REPLICA = "minimill-replica"
INGRESS = "minimill-ingress"
ATTEMPTS = 2  # a request whose replica died before answering is tried once more, on another replica
# The engine queues and refuses (429) by itself: Ray Serve's own limit must never be what refuses first.
MAX_ONGOING = 4096
UNCONFIRMED_SECONDS = 60.0  # a request chosen for a replica but never sent there stops counting after this


class Replica:
    """One minimill: its runtime and app, started once; every request is played through the app, so a
    replica answers exactly as the single-process server does. It publishes what it served as routing
    stats (`Holdings.summary`)."""

    async def __init__(self, config: Config) -> None:  # type: ignore[misc]  # Ray Serve awaits it
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        context = serve.get_replica_context()
        self.id = context.replica_id.unique_id
        # Disk prefixes are each process's own (it empties their directory as it opens): one per replica rank, so
        # a replacement takes over its predecessor's files and no two replicas share one.
        config = replace(config, engine=replace(config.engine, prefix_disk_dir=f"prefixes-replica-{context.rank.rank}"))
        self.runtime = await asyncio.to_thread(Runtime.build, config)  # loads the models: minutes, not the loop
        self.app = create_app(self.runtime, runner_id=f"replica:{self.id}")
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()  # the batch runner
        self.holdings = Holdings()

    async def handle(self, request: Forwarded) -> AsyncIterator[Head | bytes]:
        """The app's answer to `request`: a Head, then body chunks as the app sends them."""
        self.holdings.add(request.keys)
        created = bytearray() if request.method == "POST" and request.path.rstrip("/") == "/v1/caches" else None
        status = 0
        async for item in play(self.app, request, self.id):
            if isinstance(item, Head):
                status = item.status
            elif created is not None:
                created += item
            yield item
        if created is not None and status == 200:
            with contextlib.suppress(ValueError, AttributeError):
                self.holdings.add_cache(json.loads(created)["id"])

    def record_routing_stats(self) -> dict[str, Any]:
        """What this replica served lately (Ray Serve calls this every `request_routing_stats_period_s`)."""
        return self.holdings.summary()

    async def __del__(self) -> None:
        # Ray Serve calls this after an __init__ that failed part way too: close what exists.
        if (lifespan := getattr(self, "_lifespan", None)) is not None:
            with contextlib.suppress(Exception):
                await lifespan.__aexit__(None, None, None)
        if (runtime := getattr(self, "runtime", None)) is not None:
            await asyncio.to_thread(runtime.close)


class AffinityRouter(RequestRouter):
    """Ray Serve's request router for the replicas: `affinity.choose` over the replicas' published holdings,
    plus what this router sent each replica since and its requests in flight."""

    def initialize_state(self, **kwargs: Any) -> None:
        """Called by Ray Serve with `request_router_kwargs` (`imbalance`, see `affinity.choose`)."""
        self._imbalance = int(kwargs.get("imbalance", IMBALANCE))
        self._views: dict[str, ReplicaView] = {}
        self._reports: dict[str, int] = {}  # replica -> id() of the last routing stats merged
        self._in_flight = InFlight(UNCONFIRMED_SECONDS)

    def _view(self, replica_id: str) -> ReplicaView:
        return self._views.setdefault(replica_id, ReplicaView(replica_id))

    def _merged(self, replica: RunningReplica) -> ReplicaView:
        view = self._view(replica.replica_id.unique_id)
        stats = replica.routing_stats
        if stats and self._reports.get(view.id) != id(stats):
            view.holdings.merge(stats)
            self._reports[view.id] = id(stats)
        view.in_flight = self._in_flight.on(view.id)
        return view

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """The best replica alone first, then the others by load (if the best one refuses). The choice counts at
        once (in flight, and its prompt as held there), so requests routed together spread and meet as they
        should before Ray confirms where each went."""
        self._in_flight.expire(time.monotonic())
        keys = _keys(pending_request)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        choice = choose(keys, [self._merged(r) for r in candidate_replicas], self._imbalance)
        if not choice.ranked:
            return []
        if pending_request is not None:
            self._in_flight.chosen(pending_request.metadata.internal_request_id, choice.ranked[0], time.monotonic())
            self._view(choice.ranked[0]).holdings.add(keys)
        return [[by_id[choice.ranked[0]]], [by_id[i] for i in choice.ranked[1:]]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID,
                          result: ReplicaResult) -> None:
        """Count the request where it went and remember its keys as held there (done at the choice already,
        unless Ray sent it elsewhere)."""
        request_id, replica = pending_request.metadata.internal_request_id, replica_id.unique_id
        if self._in_flight.where(request_id) not in (replica, None):
            self._view(replica).holdings.add(_keys(pending_request))
        self._in_flight.sent(request_id, replica, time.monotonic())

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """The request left its replica (Ray may say so before it says where the request went)."""
        self._in_flight.finished(internal_request_id)

    def on_new_queue_len_info(self, replica_id: ReplicaID, num_ongoing_requests: int) -> None:
        """A replica's own count of its requests: also corrects this router's count if it is higher."""
        super().on_new_queue_len_info(replica_id, num_ongoing_requests)
        self._in_flight.reported(replica_id.unique_id, num_ongoing_requests, time.monotonic())

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        """Forget a dead replica's view (a replacement starts empty)."""
        self._views.pop(replica_id.unique_id, None)
        self._in_flight.forget(replica_id.unique_id)
        super().on_replica_actor_died(replica_id)


class RoundRobinRouter(RequestRouter):
    """Each request to the next replica in turn, whatever it holds (the baseline the benchmarks compare with)."""

    def initialize_state(self, **kwargs: Any) -> None:
        """Called by Ray Serve."""
        self._turn = 0

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """The next replica, then the others."""
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        self._turn += 1
        first = ordered[self._turn % len(ordered)]
        return [[first], [r for r in ordered if r is not first]]


def _router_class(name: str) -> type[RequestRouter]:
    if name == "round_robin":
        return RoundRobinRouter
    if name == "ray_prefix":
        from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
            PrefixCacheAffinityRouter,
        )
        return PrefixCacheAffinityRouter
    return AffinityRouter


def _keys(pending_request: PendingRequest | None) -> RoutingKeys:
    if pending_request is not None:
        for arg in pending_request.args:
            if isinstance(arg, Forwarded):
                return arg.keys
    return RoutingKeys()


def _error(status: int, message: str, code: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, kind, code=code), status)


class Ingress:
    """The endpoint: reads a request's body (bounded as the single server bounds it), computes its routing keys
    and streams the chosen replica's answer. A replica that dies before answering costs a retry elsewhere;
    one that dies mid-answer cuts that answer only."""

    def __init__(self, replicas: DeploymentHandle, limits: DoorLimits) -> None:
        self.replicas = replicas.options(stream=True)
        self.limits = limits

    async def __call__(self, request: Request) -> Response:
        limit = self.limits.for_path(request.url.path)
        try:
            body = await _read(request, limit)
        except ClientDisconnect:
            return Response(status_code=499)
        if body is None:
            return _error(413, f"The request body is larger than this endpoint's limit of {limit} bytes.",
                          "request_too_large")
        headers = tuple((name.lower(), value) for name, value in request.headers.items())
        client = (request.client.host, request.client.port) if request.client else None
        path = request.url.path
        forwarded = Forwarded(request.method, path, request.url.query.encode(), headers, body, client,
                              keys_for(path, dict(headers), body))
        for attempt in range(ATTEMPTS):
            stream = cast(DeploymentResponseGenerator, self.replicas.handle.remote(forwarded))
            try:
                head = await stream.__anext__()
            except (RayActorError, StopAsyncIteration) as exc:
                log.warning("ingress: replica failed before answering (attempt %d): %s", attempt + 1, exc)
                continue
            response = StreamingResponse(_rest(stream), status_code=head.status)
            response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.headers]
            return response
        return _error(503, "No replica could answer: the one chosen stopped before answering. Retry.",
                      "replica_unavailable")


async def _read(request: Request, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _rest(stream: DeploymentResponseGenerator) -> AsyncIterator[bytes]:
    async for chunk in stream:
        yield chunk


def application(config: Config) -> Any:
    """The Ray Serve application: the ingress bound to `config.scale.replicas` replicas (autoscaled on
    requests in flight up to `max_replicas` when that is set)."""
    scale = config.scale
    if config.engine.threads is None:  # replicas sharing a host must not each take every core
        config = replace(config, engine=replace(config.engine, threads=max(1, int(scale.replica_cpus))))
    sizing: dict[str, Any] = {"num_replicas": scale.replicas}
    if scale.max_replicas is not None:
        sizing = {"num_replicas": "auto", "autoscaling_config": AutoscalingConfig(
            min_replicas=scale.replicas, max_replicas=scale.max_replicas,
            target_ongoing_requests=config.engine.max_seqs, upscale_delay_s=scale.upscale_delay,
            downscale_delay_s=scale.downscale_delay)}
    router = RequestRouterConfig(request_router_class=_router_class(scale.replica_router),  # type: ignore[arg-type]
                                 request_routing_stats_period_s=scale.stats_period)  # type: ignore[arg-type]
    replica = serve.deployment(
        name=REPLICA, max_ongoing_requests=MAX_ONGOING, request_router_config=router,
        ray_actor_options={"num_cpus": scale.replica_cpus, "num_gpus": scale.replica_gpus},
        health_check_period_s=5, graceful_shutdown_timeout_s=10, **sizing)(Replica)
    ingress = serve.deployment(name=INGRESS, max_ongoing_requests=MAX_ONGOING,
                               ray_actor_options={"num_cpus": 0})(Ingress)
    limits = DoorLimits(max_body_bytes=config.server.max_body_bytes,
                        max_upload_bytes=config.batch.max_file_bytes + MULTIPART_OVERHEAD_BYTES)
    return ingress.bind(replica.bind(config), limits)


def start(config: Config) -> None:
    """Join the cluster at `config.scale.ray_address`, or start a local Ray instance on 127.0.0.1, and deploy
    the application listening on `config.server` (returns once every replica is up)."""
    _join(config.scale)
    _deploy(config)


def _join(scale: ScaleConfig) -> None:
    if scale.ray_address:
        ray.init(address=scale.ray_address, log_to_driver=False)
    else:
        cpus = max(os.cpu_count() or 1, int(scale.replica_cpus * (scale.max_replicas or scale.replicas) + 0.999))
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=cpus,
                 object_store_memory=scale.object_store_bytes, log_to_driver=False)


def _deploy(config: Config) -> None:
    serve.start(http_options=HTTPOptions(host=config.server.host, port=config.server.port))
    # A fixed count may be changed while it runs (`minimill replicas N`); an autoscaled one is Ray's to change.
    serve.run(application(config), name=APP_NAME, route_prefix="/",
              external_scaler_enabled=config.scale.max_replicas is None)


def scale_to(replicas: int, ray_address: str | None) -> None:
    """Set the running application's replica count (it must have been started with a fixed count). Joins the
    cluster at `ray_address`, or the local instance a `minimill serve --replicas` on this host started."""
    ray.init(address=ray_address or "auto", log_to_driver=False)
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        ray.get(controller.update_deployment_replicas.remote(DeploymentID(name=REPLICA, app_name=APP_NAME),
                                                             replicas))
    finally:
        ray.shutdown()


def stop() -> None:
    """Remove the application and leave Ray (a local instance stops)."""
    with contextlib.suppress(Exception):
        serve.shutdown()
    ray.shutdown()


def run_until_stopped(config: Config) -> None:
    """`start`, then wait for SIGINT or SIGTERM, then `stop`."""
    done = threading.Event()
    _join(config.scale)
    for sig in (signal.SIGINT, signal.SIGTERM):  # over Ray's own handlers (set as it starts), which abort
        signal.signal(sig, lambda *_: done.set())
    try:
        _deploy(config)
        done.wait()
    finally:
        stop()
