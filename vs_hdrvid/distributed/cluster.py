"""Ray for a distributed run: installed, reachable, connected, and what every node must see."""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..cli import UserError

__all__ = ["RAY_MISSING", "preflight", "import_ray", "check_address", "connect", "check_reachable", "first_line"]

log = logging.getLogger("vs_hdrvid")
RAY_MISSING = "--workers needs Ray, which is not installed: pip install 'vs-hdrvid[ray]'"


def preflight(address: str | None) -> None:
    """What can be checked before any work: Ray is installed, and something listens at ``address``."""
    import_ray()
    if address:
        check_address(address)


def import_ray():
    """The ``ray`` module, or :class:`UserError` saying what to install."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail in one line, within ``timeout`` seconds, when nothing listens at a ``--ray`` address.

    ``host:port`` (the head's GCS) and ``ray://host:port`` (Ray Client) are tried with a TCP
    connection; ``auto`` is left to Ray.
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray takes HOST:PORT of the Ray head (e.g. 10.0.0.1:6379), ray://HOST:PORT "
                        f"or auto, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__).lower()
        raise UserError(f"cannot reach the Ray cluster at {address} ({why})") from None


@contextmanager
def connect(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address`` (or ``RAY_ADDRESS``), or to a local instance started here
    (``ray.init()``) and stopped at the end. A connection the process already has (``ray.is_initialized()``) is used
    as it is and left open. While connected, what Ray prints of its own goes to the log
    (:class:`_RayChatter`)."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None  # as ray.init reads it, checked the same way
    stdout = sys.stdout
    sys.stdout = _RayChatter(stdout)
    try:
        if ray.is_initialized():
            yield ray
            return
        if address:
            check_address(address)
        opts: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False)
        if not address:
            opts.update(include_dashboard=False, object_store_memory=200 * 2**20)  # results are small
        on_term = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(address=address or None, **opts)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError: whatever ray says, in one line
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"cannot connect to {where}: {first_line(e)}") from None
        finally:  # ray.init takes SIGTERM for itself (exit 1): the run's clean-up keeps it (exit 143)
            if on_term is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, on_term)
        try:
            yield ray
        finally:
            ray.shutdown()
    finally:
        sys.stdout = stdout


class _RayChatter:
    """``sys.stdout`` while this process is Ray's driver: Ray prints its cluster's messages (a lost
    worker, say) to stdout from threads of its own; those go to the log (``-v``) instead, since
    stdout stays free for data and the run reports such events itself."""

    def __init__(self, out):
        self._out = out

    def write(self, text: str) -> int:
        if threading.current_thread().name.startswith("ray_"):
            for line in text.splitlines():
                if line.strip():
                    log.info("ray: %s", line.strip())
            return len(text)
        return self._out.write(text)

    def __getattr__(self, name: str):
        return getattr(self._out, name)


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _probe(paths: list[str], absent: list[str], folder: str) -> tuple[str, str | None]:
    """On one node: ``(node address, None)`` if every path opens, none of ``absent`` exists (the
    frame after an image sequence's last) and ``folder`` takes new files, else ``(address, what
    failed)``."""
    import tempfile

    import ray

    where = ray.util.get_node_ip_address()
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
        except OSError as e:
            return where, f"cannot open {path} ({e.strerror or type(e).__name__})"
    for path in absent:
        if os.path.exists(path):
            return where, f"sees {path}, which this machine does not (another copy of the input?)"
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        return where, f"cannot write into {Path(folder).parent} ({e.strerror or type(e).__name__})"
    return where, None


def check_reachable(ray, paths: list[str], absent: list[str], folder: str | os.PathLike) -> int:
    """Check on every alive node that ``paths`` open, ``absent`` do not exist and ``folder`` takes
    files; returns the number of nodes.

    Raises:
        UserError: a node cannot (the message names the node and the path).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            .remote(paths, absent, os.fspath(folder)) for node in nodes]
    for where, problem in ray.get(refs):
        if problem:
            raise UserError(f"worker node {where} {problem}: with --workers the input and the output "
                            "folder must be on storage every node mounts at the same path")
    return len(nodes)
