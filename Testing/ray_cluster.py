"""A real multi-node Ray cluster on this machine, for the ``segqc rank --ray`` tests and benchmark.

Every node is one ``ray start --block`` process started in a session of its own, with its own temp dir and its
own ports on 127.0.0.1.  The node's raylet, GCS, agents and workers all stay in that session (workers get
process groups of their own, not sessions), so stopping the cluster signals exactly the processes of these
sessions, by their ids.  ``ray stop`` is not used: it stops every Ray process of the machine, including other
people's clusters.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

NODE_START_TIMEOUT_S = 120.0
NODE_STOP_GRACE_S = 5.0
NODE_START_ATTEMPTS = 2
WORKER_PORTS_PER_NODE = 12
OBJECT_STORE_BYTES = 80 * 1024 * 1024


def node_host(index: int) -> str:
    """Loopback address of node ``index`` (head 0): 127.0.0.2, 127.0.0.3, ...  Not 127.0.0.1, which Ray replaces
    by the machine's network address (as it would for ``localhost``), so that all traffic stays on loopback."""
    return f"127.0.0.{2 + index}"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


PR_SET_PDEATHSIG = 1


def _new_session_ending_with_parent() -> None:
    """In the child before exec: a session of its own, and SIGTERM when the test process dies (even by SIGKILL),
    so that a killed test run does not leave a cluster behind (Linux; elsewhere only the session)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def ray_executable() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen
    temp_dir: Path
    log_path: Path

    def worker_pids(self) -> list[int]:
        """Pids of this node's Ray worker processes (same session, title ``ray::...``)."""
        return [pid for pid, title in session_processes(self.process.pid) if title.startswith("ray::")
                and not title.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))]


def session_processes(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes of session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) != sid or fields[0] == "Z":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        found.append((int(entry.name), title))
    return found


@dataclass
class LocalRayCluster:
    """A head node and ``worker_nodes`` more, each with ``cpus_per_node`` CPUs; use as a context manager."""

    root: Path
    worker_nodes: int = 1
    cpus_per_node: int = 1
    nodes: list[RayNode] = field(default_factory=list)
    address: Optional[str] = None

    def __enter__(self) -> LocalRayCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _node_options(self, name: str, host: str) -> list[str]:
        ports = free_ports(6 + WORKER_PORTS_PER_NODE)
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        return ["--block", "--disable-usage-stats", f"--node-ip-address={host}", f"--temp-dir={temp_dir}",
                f"--num-cpus={self.cpus_per_node}", "--num-gpus=0", f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
                f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
                f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
                "--worker-port-list=" + ",".join(str(p) for p in ports[6:]), "--log-style=record"]

    def _start_node(self, name: str, host: str, extra: list[str]) -> RayNode:
        """Start one node; once more if it fails (Ray gives a raylet 30 s to register, which a machine loaded by
        other jobs can exceed)."""
        for attempt in range(1, NODE_START_ATTEMPTS + 1):
            try:
                return self._start_node_once(f"{name}" if attempt == 1 else f"{name}-{attempt}", host, extra)
            except RuntimeError as exc:
                failed = self.nodes.pop()
                self._signal_node(failed, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    failed.process.wait(timeout=NODE_STOP_GRACE_S)
                if attempt == NODE_START_ATTEMPTS:
                    raise
                logger.warning("Ray node %s failed to start, trying again: %s", name, str(exc)[:300])
        raise AssertionError("unreachable")

    def _start_node_once(self, name: str, host: str, extra: list[str]) -> RayNode:
        log_path = self.root / f"{name}.log"
        command = [ray_executable(), "start", *extra, *self._node_options(name, host)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       preexec_fn=_new_session_ending_with_parent)
        node = RayNode(name.split("-")[0], process, self.root / name, log_path)
        self.nodes.append(node)
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Ray node {name} exited with code {process.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            if b"will now block forever" in log_path.read_bytes():
                return node
            time.sleep(0.2)
        raise RuntimeError(f"Ray node {name} did not start within {NODE_START_TIMEOUT_S:.0f} s: "
                           f"{log_path.read_text(errors='replace')[-3000:]}")

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        gcs_port, client_port, dashboard_port = free_ports(3)
        self._start_node("head", node_host(0), ["--head", f"--port={gcs_port}",
                                                f"--ray-client-server-port={client_port}", "--include-dashboard=false",
                                                f"--dashboard-port={dashboard_port}"])
        self.address = f"{node_host(0)}:{gcs_port}"
        for index in range(1, self.worker_nodes + 1):
            self._start_node(f"node{index}", node_host(index), [f"--address={self.address}"])
        self.wait_for_nodes(1 + self.worker_nodes)

    def wait_for_nodes(self, count: int) -> None:
        """Wait until the GCS lists ``count`` live nodes (a joining node registers a moment after it starts)."""
        script = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
                  "print(sum(n['Alive'] for n in ray.nodes()))")
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            result = subprocess.run([sys.executable, "-c", script, str(self.address)], capture_output=True,
                                    text=True, timeout=NODE_START_TIMEOUT_S)
            if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1.0)
        raise RuntimeError(f"The Ray cluster at {self.address} did not list {count} live nodes")

    def stop(self) -> None:
        """Stop every node: SIGTERM to the processes of each node's session, SIGKILL to what is left after a
        short grace time (a test cluster has nothing worth draining)."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + NODE_STOP_GRACE_S
        while time.monotonic() < deadline and any(session_processes(n.process.pid) for n in self.nodes):
            time.sleep(0.2)
        self._signal_all(signal.SIGKILL)
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(timeout=NODE_STOP_GRACE_S)
        self.nodes.clear()

    def _signal_all(self, signum: int) -> None:
        for node in reversed(self.nodes):
            self._signal_node(node, signum)

    @staticmethod
    def _signal_node(node: RayNode, signum: int) -> None:
        for pid, _title in session_processes(node.process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)


@dataclass
class TaskSighting:
    node: str
    pid: int
    title: str


class TaskWatcher:
    """Watches the cluster's worker processes while a run goes on (a background thread, polling /proc).

    Records every (node, pid) seen running a task whose process title starts with ``ray::<prefix>`` and kills
    (SIGKILL, by pid) the first ``kills[case_id]`` processes seen running that case's task: a worker dying
    mid-task as it would when a node runs out of memory."""

    POLL_S = 0.01

    def __init__(self, cluster: LocalRayCluster, prefix: str, kills: Optional[dict[str, int]] = None) -> None:
        self.cluster = cluster
        self.prefix = f"ray::{prefix}"
        self.kills = dict(kills or {})
        self.sightings: list[TaskSighting] = []
        self.killed: list[TaskSighting] = []
        self._stop = False
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> TaskWatcher:
        self._thread = threading.Thread(target=self._run, name="ray-task-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def attempts(self, case_id: str) -> int:
        """Distinct worker processes seen running ``case_id``'s task."""
        return len({s.pid for s in self.sightings if s.title == f"{self.prefix}{case_id}"})

    def nodes_used(self) -> set[str]:
        return {s.node for s in self.sightings}

    def _run(self) -> None:
        seen: set[tuple[int, str]] = set()
        while not self._stop:
            for node in list(self.cluster.nodes):
                for pid, title in session_processes(node.process.pid):
                    title = title.split(" ")[0]
                    if not title.startswith(self.prefix) or (pid, title) in seen:
                        continue
                    seen.add((pid, title))
                    sighting = TaskSighting(node.name, pid, title)
                    self.sightings.append(sighting)
                    case_id = title[len(self.prefix):]
                    if self.kills.get(case_id, 0) > 0:
                        self.kills[case_id] -= 1
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        self.killed.append(sighting)
            time.sleep(self.POLL_S)
