"""How `serve --replicas` sizes the Ray Serve application, without starting Ray: replicas, autoscaling, the
router class, resources, and the engine threads of replicas sharing a host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from minimill.config import build_config

pytest.importorskip("ray")
from minimill.scale import deployments  # noqa: E402


def replica_of(config: Any) -> Any:
    ingress = deployments.application(config)._bound_deployment
    assert ingress.name == deployments.INGRESS and ingress.max_ongoing_requests == deployments.MAX_ONGOING
    (bound,) = [arg for arg in ingress.init_args if hasattr(arg, "_bound_deployment")]
    return bound._bound_deployment, bound._bound_deployment.init_args[0]


def test_a_fixed_count_with_the_affinity_router_and_one_thread_a_replica(tmp_path: Path) -> None:
    replica, config = replica_of(build_config(models=["smollm2-135m"], replicas=3, data_dir=tmp_path))
    assert replica.name == deployments.REPLICA and replica.num_replicas == 3
    assert replica.ray_actor_options == {"num_cpus": 1.0, "num_gpus": 0.0}
    router = replica._deployment_config.request_router_config
    assert router.get_request_router_class() is deployments.AffinityRouter
    assert config.engine.threads == 1  # not every core for each of three replicas


def test_autoscaling_gpus_threads_and_other_routers(tmp_path: Path) -> None:
    replica, config = replica_of(build_config(models=["smollm2-135m"], replicas=2, max_replicas=5, threads=4,
                                              replica_cpus=4, replica_gpus=1, replica_router="round_robin",
                                              data_dir=tmp_path))
    scaling = replica._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (2, 5)
    assert scaling.target_ongoing_requests == config.engine.max_seqs
    assert replica.ray_actor_options == {"num_cpus": 4.0, "num_gpus": 1.0} and config.engine.threads == 4
    router = replica._deployment_config.request_router_config
    assert router.get_request_router_class() is deployments.RoundRobinRouter


def test_bad_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_replicas"):
        build_config(replicas=3, max_replicas=2, data_dir=tmp_path)
    with pytest.raises(ValueError, match="replicas"):
        build_config(replicas=0, data_dir=tmp_path)
    assert not build_config(data_dir=tmp_path).scale.on_ray
    assert build_config(ray_address="auto", data_dir=tmp_path).scale.on_ray
