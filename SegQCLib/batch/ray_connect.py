"""Connecting ``segqc rank --ray`` to a Ray cluster and checking that it can run the tasks asked for.

``--ray auto`` joins the cluster that ``ray start`` runs on this machine (or ``$RAY_ADDRESS``), ``--ray local``
starts a private single-node Ray instance for this run, and ``--ray HOST:PORT`` joins the head node at that
address (the port of ``ray start --head --port``).  A head that does not answer, a cluster without a node
that has the CPUs and GPUs a task asks for, or Ray missing are one-line errors before any case runs (Ray itself
would wait for ever for resources that never come).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, SegQCError

logger = logging.getLogger(__name__)

AUTO = "auto"
LOCAL = "local"
CONNECT_TIMEOUT_S = 5.0
CLIENT_SCHEME = "ray://"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise SegQCError("Ray is not installed: `pip install 'ray[default]'` (only needed for --ray)") from exc
    return ray


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver sees once connected: live nodes and their resources."""

    address: str
    node_resources: tuple[tuple[float, float], ...]  # (CPUs, GPUs) of each live node

    @property
    def nodes(self) -> int:
        return len(self.node_resources)

    @property
    def cpus(self) -> float:
        return sum(cpus for cpus, _ in self.node_resources)

    @property
    def gpus(self) -> float:
        return sum(gpus for _, gpus in self.node_resources)

    def describe(self) -> str:
        return f"Ray cluster {self.address}: {self.nodes} node(s), {self.cpus:g} CPU(s), {self.gpus:g} GPU(s)"


def parse_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``ray://HOST:PORT``) -> (host, port); anything else is an :class:`InputError`."""
    text = address[len(CLIENT_SCHEME):] if address.startswith(CLIENT_SCHEME) else address
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray takes 'auto', 'local' or the head node's HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at ``address`` (ray.init would retry for a minute)."""
    host, port = parse_host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise SegQCError(f"No Ray head node answers at {address} ({exc.strerror or exc}); start one with "
                         "`ray start --head --port PORT`, or use --ray local for a Ray instance on this machine "
                         "only") from exc


def connect(address: str) -> ClusterInfo:
    """``ray.init`` for ``address`` (``auto``, ``local`` or ``HOST:PORT``) unless Ray is already initialised."""
    if address == LOCAL and "ray" not in sys.modules:
        # A private instance for this run only: Ray's single-machine mode keeps it on the loopback interface
        # instead of listening on the machine's network address (the default on macOS and Windows already).
        os.environ.setdefault(SINGLE_MACHINE_ENV, "0")
    ray = import_ray()
    if not ray.is_initialized():
        # Workers' logs stay in the cluster's log files: a failed case reaches the driver as its row's error.
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == LOCAL:
            options["include_dashboard"] = False
        elif address != AUTO:
            check_reachable(address)
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise SegQCError(f"Cannot join a Ray cluster (--ray {address}): {str(exc).splitlines()[0]}") from exc
    return cluster_info(ray, address)


def cluster_info(ray: Any, address: str) -> ClusterInfo:
    resources = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    return ClusterInfo(address, tuple((float(r.get("CPU", 0.0)), float(r.get("GPU", 0.0))) for r in resources))


def check_feasible(info: ClusterInfo, num_cpus: float, num_gpus: float) -> None:
    """A task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs on one node: some node must have them."""
    if not any(cpus >= num_cpus and gpus >= num_gpus for cpus, gpus in info.node_resources):
        nodes = ", ".join(f"{cpus:g} CPU/{gpus:g} GPU" for cpus, gpus in info.node_resources) or "none"
        raise SegQCError(f"No node of the {info.describe()} has {num_cpus:g} CPU(s) and {num_gpus:g} GPU(s) for one "
                         f"case (nodes: {nodes}); lower --ray-cpus-per-task / --ray-gpus-per-task")


def disconnect() -> None:
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
