"""Device mesh and shardings: parameters replicated, batches split along a ``data`` axis.

Multi-host runs: set ``distributed=True`` (``--set distributed=true``) and start the same command on
every host; :func:`maybe_initialize_distributed` then calls ``jax.distributed.initialize()``, which
reads the coordinator address, process count and process id from the cluster environment (SLURM,
Cloud TPU, or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``). Each host
feeds only its slice of every global batch (``cac_jax.data.pipeline.batch_indices`` with its process
index), assembled into one global array by ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from cac_jax import host_malloc

# Before any step runs: single-device CPU computations on the calling thread (see cac_jax.host_malloc).
host_malloc.dispatch_on_calling_thread()

DATA_AXIS = "data"


def maybe_initialize_distributed(distributed: bool) -> None:
    if distributed and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all when None).

    The axis is ``Auto``: the jitted steps only state input/output shardings and let XLA's SPMD
    partitioner place the collectives (gradient and BatchNorm all-reduces)."""
    available = jax.devices()
    n = len(available) if num_devices is None else num_devices
    if n > len(available):
        raise ValueError(f"num_devices={n} but only {len(available)} devices are available")
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=available[:n])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh; "
                         f"pick a multiple of {n} or set num_devices")
    if batch_size % jax.process_count():
        raise ValueError(f"{what}={batch_size} is not divisible by the {jax.process_count()} processes")


def put_batch(mesh: Mesh, *local_arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Assemble this process's slices into global arrays split along the ``data`` axis."""
    sharding = batch_sharding(mesh)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in local_arrays)
