"""Several processes (hosts, or one process per accelerator) training one data-parallel run with ``jax.distributed``.

JAX's multi-controller model: every process runs the same program; ``jax.devices()`` lists the devices of all
processes, ``jax.local_devices()`` this process's. The training engines (:func:`stepwise.training.train_ssl`) shard
the batch over ``jax.devices()``, so after :func:`initialize` the same call trains over every process's devices:

- each process holds the whole training set, the evaluation views and the initial state on the host, identical
  on every process (:func:`put_global` checks this with one digest per call, then places only this process's
  shards; the data set stays device-resident and replicated, as in one process);
- each step draws its batch and views from ``fold_in(run_key, step)`` inside the one jitted step, on the global
  mesh: every process computes the same indices, each device keeps its slice of the batch, and the gradient is
  all-reduced over all devices (across processes: NCCL on GPUs, gloo on CPUs);
- what the host reads (losses, tracked matrices, the final state) is fully replicated, so every process gets the
  same numbers locally (:func:`fetch`; anything not replicated is gathered with ``process_allgather``), computes the
  same eigenvalues and takes the same decisions (divergence, checkpoint steps);
- only process 0 writes checkpoints; a resumed run reads process 0's checkpoint and broadcasts it
  (:func:`broadcast_file`), so the hosts need no shared file system.

One process (no :func:`initialize`, or ``num_processes=1``) takes the single-process paths unchanged.

Launch (one command per host, the same on each but for the process id)::

    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        python -m stepwise.launch run stepwise_deep --loss barlow_twins

:mod:`stepwise.launch` initialises from those variables and runs the ``stepwise`` command line; processes other
than 0 write their run directory (``--out``) into a temporary directory deleted at exit, so only process 0's results
remain.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["ENV_VARS", "broadcast_file", "fetch", "initialize", "is_main_process", "put_global"]

ENV_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
"""What :func:`initialize` reads when an argument is not given (JAX itself reads the first one too)."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer (got {value!r})") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    timeout_s: int = 300,
) -> bool:
    """Join a multi-process run with ``jax.distributed.initialize``; call it before any other JAX call.

    Arguments not given are read from :data:`ENV_VARS`. With ``num_processes`` unset or 1 nothing happens (one
    process). Cluster launchers that JAX detects itself (SLURM, Open MPI, Kubernetes) need no arguments: call
    ``jax.distributed.initialize()`` directly there.

    Args:
      coordinator_address: ``host:port`` of process 0, reachable from every process.
      num_processes: number of processes in the run.
      process_id: this process's index in ``[0, num_processes)``; process 0 is the coordinator.
      local_device_ids: the local accelerators this process uses (default: all; one process per GPU passes its
        GPU's index).
      timeout_s: how long to wait for every process to join.

    Returns:
      True when this process is now part of a multi-process run, False for a single process.

    Raises:
      ValueError: missing or inconsistent settings (before contacting anything).
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _env_int("JAX_NUM_PROCESSES") if num_processes is None else num_processes
    process_id = _env_int("JAX_PROCESS_ID") if process_id is None else process_id
    if num_processes is None or num_processes == 1:
        return False
    errors = []
    if num_processes < 1:
        errors.append(f"the number of processes must be >= 1 (got {num_processes})")
    if coordinator_address is None or ":" not in coordinator_address:
        errors.append(f"the coordinator address must be host:port of process 0 (got {coordinator_address!r}; "
                      "set JAX_COORDINATOR_ADDRESS)")
    if process_id is None or not 0 <= process_id < num_processes:
        errors.append(f"the process id must be in [0, {num_processes}) (got {process_id}; set JAX_PROCESS_ID)")
    if errors:
        raise ValueError("cannot start a multi-process run: " + "; ".join(errors))
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=timeout_s)
    return True


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes results and checkpoints (always true for one process)."""
    return jax.process_index() == 0


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _digest(arrays: list[np.ndarray]) -> np.ndarray:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.shape}{a.dtype.str};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8)


def put_global(tree: Any, sharding: jax.sharding.Sharding, *, what: str = "the arrays") -> Any:
    """``jax.device_put(tree, sharding)`` for a sharding that may span several processes.

    Every process passes the whole (host or local-device) value; each places only its own shards
    (``jax.make_array_from_callback``). Across processes the values must be identical: one SHA-256 digest of all
    leaves is compared over processes first (one gather of 32 bytes per process). PRNG key leaves are placed as
    their key data and re-wrapped. With one process this is exactly ``jax.device_put(tree, sharding)``.

    Raises:
      ValueError: the values differ between processes (names which processes differ from process 0).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree.flatten(tree)
    impls = [jax.random.key_impl(x) if _is_key(x) else None for x in leaves]
    host = [np.asarray(jax.device_get(jax.random.key_data(x) if impl is not None else x))
            for x, impl in zip(leaves, impls)]
    host = [h.astype(jax.dtypes.canonicalize_dtype(h.dtype), copy=False) for h in host]  # as device_put would
    digests = np.asarray(multihost_utils.process_allgather(_digest(host)))  # (processes, 32)
    differ = [int(p) for p in np.flatnonzero(np.any(digests != digests[0], axis=1))]
    if differ:
        raise ValueError(f"{what} differ between processes: processes {differ} hold other values than process 0 "
                         "(every process must load the same data, seed and initial parameters)")
    out = []
    for h, impl in zip(host, impls):
        arr = jax.make_array_from_callback(h.shape, sharding, lambda index, h=h: h[index])
        out.append(arr if impl is None else jax.random.wrap_key_data(arr, impl=impl))
    return jax.tree.unflatten(treedef, out)


def fetch(tree: Any) -> Any:
    """``jax.device_get(tree)`` for arrays that may span several processes: a fully replicated array is read from
    a local shard (no communication); any other non-addressable array is gathered with ``process_allgather``
    (a collective: every process must call :func:`fetch` on the same tree)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return jax.device_get(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def broadcast_file(path: str | os.PathLike) -> bytes | None:
    """Process 0's bytes of ``path`` (None where it has no such file), on every process; two broadcasts.

    With one process: the file's bytes, or None.
    """
    path = Path(path)
    if jax.process_count() == 1:
        return path.read_bytes() if path.is_file() else None
    from jax.experimental import multihost_utils

    raw = path.read_bytes() if is_main_process() and path.is_file() else None
    if raw is not None and len(raw) >= 2**31:
        raise ValueError(f"{path} is {len(raw)} bytes; broadcasting files of 2 GiB or more is not supported")
    n = int(multihost_utils.broadcast_one_to_all(np.asarray(-1 if raw is None else len(raw), dtype=np.int32)))
    if n < 0:
        return None
    mine = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(n, dtype=np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(mine), dtype=np.uint8).tobytes()
