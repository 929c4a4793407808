"""One run over several processes (hosts): ``jax.distributed`` set-up and the helpers the host
loop uses to behave like one process (docs/scale-out-multihost.md).

``igmda train`` calls :func:`initialize` before anything touches JAX's backends. It starts
``jax.distributed`` when asked to (``--coordinator HOST:PORT --num-processes N --process-id I``,
or ``--distributed on``: JAX's own cluster detection, e.g. on Cloud TPU VMs) or when the
environment shows a launch of several processes (:func:`detected_cluster`: SLURM with more than
one task, Open MPI with more than one rank, a GKE TPU slice of several hosts). These are launch
settings, not ``Config`` fields: they are not part of a run's identity.

Then the seed axis spreads over the devices of every process (``seed_layout.process_devices``),
each process trains its own seeds, and :func:`fetch` gathers arrays (metrics, evaluation
results, ``t_env``) so that every process sees every seed. Process 0 alone writes the run
folder's files (:func:`is_primary`); every process takes part in each checkpoint (orbax writes
each process's shards). On the CPU, cross-process collectives use gloo, JAX 0.10.2's default
``jax_cpu_collectives_implementation``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

MODES = ("auto", "on", "off")


class DistributedError(ValueError):
    """A multi-process launch that is malformed or not supported; the message says why."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """How ``igmda train`` joins other processes: ``mode`` (``auto``: when the environment
    shows a multi-process launch; ``on``: always, JAX detecting the rest; ``off``: never) and,
    all or none, an explicit coordinator address, process count and this process's index."""

    mode: str = "auto"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def explicit(self) -> bool:
        """True when the coordinator, process count and process id are given."""
        return self.coordinator is not None


def _launch_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="igmda train", add_help=False, allow_abbrev=False)
    parser.add_argument("--distributed", default="auto")
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", default=None)
    parser.add_argument("--process-id", default=None)
    return parser


def _integer(flag: str, text: str | None, minimum: int) -> int | None:
    """``text`` as an integer >= ``minimum`` (None stays None); DistributedError otherwise."""
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < minimum:
        raise DistributedError(f"{flag} must be an integer >= {minimum}, got {text!r}")
    return int(text)


def parse_launch(argv: Sequence[str]) -> tuple[Launch, list[str]]:
    """The launch flags of ``argv`` (``--distributed``, ``--coordinator``,
    ``--num-processes``, ``--process-id``) and the other arguments, in order.

    Raises DistributedError for a bad mode, a coordinator that is not HOST:PORT, some but not
    all of the three explicit flags, or a process id outside ``[0, num_processes)``."""
    known, rest = _launch_parser().parse_known_args(list(argv))
    if known.distributed not in MODES:
        raise DistributedError(
            f"--distributed must be one of {', '.join(MODES)}, got {known.distributed!r}"
        )
    num = _integer("--num-processes", known.num_processes, 1)
    pid = _integer("--process-id", known.process_id, 0)
    given = [known.coordinator is not None, num is not None, pid is not None]
    if any(given) and not all(given):
        raise DistributedError(
            "--coordinator HOST:PORT, --num-processes N and --process-id I go together "
            "(each process gets the same coordinator and count, and its own id 0..N-1)"
        )
    if known.coordinator is not None:
        host, _, port = known.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(
                f"--coordinator must be HOST:PORT (process 0's address), got {known.coordinator!r}"
            )
        assert num is not None and pid is not None
        if pid >= num:
            raise DistributedError(f"--process-id {pid} is not below --num-processes {num}")
        if known.distributed == "off":
            raise DistributedError("--distributed off contradicts --coordinator")
    return Launch(known.distributed, known.coordinator, num, pid), rest


def _count(environ: Mapping[str, str], name: str) -> int:
    """The integer value of ``environ[name]``, 0 when absent or not an integer."""
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() else 0


def detected_cluster(environ: Mapping[str, str]) -> str | None:
    """A description of the multi-process launch ``environ`` shows, or None.

    Only launches of more than one process count: a single SLURM task (``salloc`` then
    ``igmda train``, or a sweep's one-task jobs) stays a plain one-process run. The variables
    are those JAX's own cluster detection reads (jax/_src/clusters)."""
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")
    if all(name in environ for name in slurm) and _count(environ, "SLURM_NTASKS") > 1:
        return f"SLURM ({_count(environ, 'SLURM_NTASKS')} tasks)"
    if "OMPI_MCA_orte_hnp_uri" in environ and _count(environ, "OMPI_COMM_WORLD_SIZE") > 1:
        return f"Open MPI ({_count(environ, 'OMPI_COMM_WORLD_SIZE')} ranks)"
    listed = environ.get("TPU_WORKER_HOSTNAMES") or environ.get("TPU_PROCESS_ADDRESSES") or ""
    hosts = [host for host in listed.split(",") if host.strip()]
    if len(hosts) > 1:
        return f"TPU slice ({len(hosts)} hosts)"
    return None


def should_initialize(launch: Launch, environ: Mapping[str, str]) -> bool:
    """Whether ``launch`` in ``environ`` starts ``jax.distributed``."""
    if launch.mode == "off":
        return False
    return launch.mode == "on" or launch.explicit or detected_cluster(environ) is not None


def initialize(launch: Launch, environ: Mapping[str, str] | None = None) -> bool:
    """Start ``jax.distributed`` when :func:`should_initialize`; True when it did.

    Must run before anything initialises JAX's backends (importing ``igmda_jax.run`` does,
    through the environments it imports); ``envs`` is imported first for its XLA CPU flags.
    Raises DistributedError with JAX's reason when the start fails."""
    import envs  # noqa: F401  (its XLA flags must be set before the backend starts)

    if not should_initialize(launch, os.environ if environ is None else environ):
        return False
    try:
        if launch.explicit:
            jax.distributed.initialize(launch.coordinator, launch.num_processes, launch.process_id)
        else:
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as error:
        raise DistributedError(
            f"cannot start jax.distributed: {' '.join(str(error).split())}"
        ) from error
    return True


def unsupported_reason(backend: str, seeds: int, local_device_counts: Sequence[int]) -> str | None:
    """Why a run of ``seeds`` seeds on ``backend`` cannot use processes with these local
    device counts (one entry per process), or None when it can (always for one process)."""
    processes = len(local_device_counts)
    if processes == 1:
        return None
    if backend != "fused":
        return (
            f"backend {backend!r} runs on one process only (its workers are local "
            f"processes); {processes} processes are supported with --backend fused"
        )
    if seeds % processes:
        return (
            f"--seeds {seeds} does not split over {processes} processes: every process trains "
            f"the same number of seeds; pass a multiple of {processes}"
        )
    if len(set(local_device_counts)) > 1:
        return (
            f"the processes have different numbers of devices ({list(local_device_counts)}); "
            "give every process the same number"
        )
    return None


def check_supported(backend: str, seeds: int) -> None:
    """Raise DistributedError when this launch cannot run ``seeds`` seeds on ``backend``."""
    counts = [0] * jax.process_count()
    for device in jax.devices():
        counts[device.process_index] += 1
    reason = unsupported_reason(backend, seeds, counts)
    if reason is not None:
        raise DistributedError(reason)


def is_primary() -> bool:
    """True in the process that writes the run folder's files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing to wait for alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def fetch(tree: Any) -> Any:
    """``jax.device_get(tree)``, with arrays spread over several processes gathered whole
    (every process must call it, in the same order: it is a collective)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(one, tree)
