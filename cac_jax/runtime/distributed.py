"""Several processes, one job: JAX's distributed runtime, and what cac-jax agrees on through it.

A multi-host run starts the same command on every host (or every process of a local trial, see
:mod:`cac_jax.runs.launch`); :func:`initialize` connects it to JAX's coordination service, either from
explicit ``--coordinator HOST:PORT --num-processes N --process-id I`` or, with ``--set distributed=true``,
from what ``jax.distributed.initialize()`` detects by itself (SLURM, Open MPI, Cloud TPU). CPU processes
exchange their collectives through gloo; GPUs and TPUs use their own.

Everything here runs on the runtime's key-value store and barriers (no XLA program is compiled):

* :func:`agree`: every process posts what it was started with (config, data fingerprint) and compares
  it with every other's; a difference is a :class:`ProcessMismatch` naming the field and the processes.
* :func:`barrier` and :func:`broadcast` (process 0's decision, e.g. whether a validation improved, taken
  as every process's, so checkpoint selection and stopping are identical by construction).
* Faults. A process that fails with a Python error (Ctrl-C and SIGTERM included) posts it
  (:func:`leave_failed_job`) before it exits; a watchdog thread in every other process looks for that
  post twice a second and ends its process at once with a message naming the failed process. A process
  that is killed outright breaks the others' next collective, which ends them; one that hangs, or whose
  host vanishes, is found by the runtime's heartbeats: after ``heartbeat_timeout`` seconds (default 30,
  JAX's own is 100) JAX aborts the others with "the JAX distributed service detected fatal errors ...
  another task died". Either way the survivors exit non-zero and leave the checkpoints as the last
  completed save wrote them (Orbax commits a save by renaming it into place).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
import threading
import time

DEFAULT_HEARTBEAT_TIMEOUT = 30  # seconds; JAX's default (100) would keep survivors waiting for minutes
WAIT_MS = 24 * 3600 * 1000  # agreements and barriers wait for peers preparing data; faults end them sooner
FAILED_KEY = "cac_jax/failed"
WATCH_SECONDS = 0.5  # how often the watchdog looks for a failed peer
LEAVE_WAIT_MS = 5000  # how long a failed process waits for the others to leave with it
EXIT_PEER_FAILED = 3


class ProcessMismatch(ValueError):
    """The processes of one job were started with different configs or data."""


class JobError(RuntimeError):
    """This process could not join its job."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How to join a job: all three of coordinator, num_processes, process_id, or ``auto`` (cluster detection)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT

    def __post_init__(self):
        given = [v is not None for v in (self.coordinator, self.num_processes, self.process_id)]
        if any(given) and not all(given):
            raise ValueError("give all three of --coordinator HOST:PORT, --num-processes N and --process-id I, or "
                             f"none (got coordinator={self.coordinator!r}, num_processes={self.num_processes!r}, "
                             f"process_id={self.process_id!r})")
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--coordinator expects HOST:PORT, got {self.coordinator!r}")
            if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
                raise ValueError(f"--process-id must lie in 0..{self.num_processes - 1} for --num-processes "
                                 f"{self.num_processes}, got {self.process_id}")
        if self.heartbeat_timeout < 1:
            raise ValueError(f"heartbeat timeout must be at least 1 s, got {self.heartbeat_timeout}")

    @property
    def requested(self) -> bool:
        return self.auto or self.coordinator is not None


_state = {"tag": 0, "stopping": False, "watchdog": None}
_leaving = threading.Lock()


def initialize(options: Options) -> None:
    """Join the job described by ``options`` (nothing when it asks for none, or this process joined already).

    Must run before the first JAX computation: gloo is chosen for the CPU collectives, which JAX reads when
    it starts its CPU backend."""
    import jax

    if not options.requested or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(heartbeat_timeout_seconds=options.heartbeat_timeout,
                  shutdown_timeout_seconds=max(options.heartbeat_timeout, 30))
    if options.coordinator is not None:
        kwargs.update(coordinator_address=options.coordinator, num_processes=options.num_processes,
                      process_id=options.process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError) as e:
        how = (f"coordinator {options.coordinator}, process {options.process_id} of {options.num_processes}"
               if options.coordinator else "cluster auto-detection (distributed=true)")
        raise JobError(f"could not join the distributed job ({how}): {e}. Outside SLURM, Open MPI or Cloud "
                       f"TPU, start every process with --coordinator HOST:PORT --num-processes N --process-id I, "
                       f"or run one process with --set distributed=false") from None
    # Registered after JAX's own shutdown hook, so it runs first (atexit is LIFO): the watchdog must not take
    # the end of a finished job for a failure.
    atexit.register(_stopping)
    if jax.process_count() > 1:
        _start_watchdog()


def _client():
    from jax._src import distributed  # the runtime's client: key-value store and barriers (no public handle)

    return distributed.global_state.client


def process_count() -> int:
    import jax

    return jax.process_count()


def process_index() -> int:
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """Whether this process writes the job's files (results, plots, logs) and draws its progress bars."""
    return process_index() == 0


def _next_tag(name: str) -> str:
    # Every process makes the same calls in the same order, so the n-th call has the same key everywhere.
    _state["tag"] += 1
    return f"cac_jax/{_state['tag']}/{name}"


def barrier(name: str) -> None:
    if process_count() > 1:
        _client().wait_at_barrier(_next_tag(name), WAIT_MS)


def broadcast(name: str, value):
    """Process 0's ``value`` (JSON-serialisable), on every process."""
    if process_count() == 1:
        return value
    key, client = _next_tag(name), _client()
    if is_primary():
        client.key_value_set(key, json.dumps(value))
        return value
    return json.loads(client.blocking_key_value_get(key, WAIT_MS))


def agree(name: str, values: dict) -> None:
    """Check that every process has the same ``values`` (a JSON-serialisable dict); ProcessMismatch if not."""
    n = process_count()
    if n == 1:
        return
    key, client, me = _next_tag(name), _client(), process_index()
    client.key_value_set(f"{key}/{me}", json.dumps(values, sort_keys=True))
    theirs = {p: json.loads(client.blocking_key_value_get(f"{key}/{p}", WAIT_MS)) for p in range(n)}
    diffs = mismatches(theirs)
    if diffs:
        raise ProcessMismatch(f"the {n} processes of this job were started with different {name} "
                              f"({'; '.join(diffs)}); start every process with the same command and data")


def mismatches(per_process: dict[int, dict]) -> list[str]:
    """``"field: process 0 has A, process 1 has B"`` for every field on which the processes differ."""
    keys = sorted(set().union(*per_process.values()))
    diffs = []
    for k in keys:
        seen = {p: v.get(k) for p, v in per_process.items()}
        if len({json.dumps(v, sort_keys=True) for v in seen.values()}) > 1:
            diffs.append(f"{k}: " + ", ".join(f"process {p} has {v!r}" for p, v in sorted(seen.items())))
    return diffs


def leave_failed_job(message: str, code: int, print_own_error=None, *, echo: bool = False) -> None:
    """End this process of a job that failed: ``print_own_error()`` runs, ``message`` is posted for the
    others (they stop at once instead of at the heartbeat timeout), and the process exits with ``code``.
    With ``echo`` (an unexpected error, such as a collective broken by a peer's exit), a failure that
    another process posted first is the cause: it is named instead, and the code is EXIT_PEER_FAILED."""
    try:
        first = _posted_failure() if echo else None
    except Exception:  # noqa: BLE001  (the coordinator is gone: nobody can be told, and nothing read)
        first = None
    if first is not None and not first.startswith(f"process {process_index()}:"):
        _stop_for_peer(first)
    if print_own_error is not None:
        print_own_error()
    try:
        _client().key_value_set(FAILED_KEY, f"process {process_index()}: {message}", allow_overwrite=True)
    except Exception:  # noqa: BLE001  (the coordinator may be gone already; the heartbeats then tell the others)
        pass
    exit_now(code)


def _posted_failure() -> str | None:
    """The failure a process posted, None if none did; raises when the coordinator cannot be reached."""
    try:
        return _client().key_value_try_get(FAILED_KEY)
    except Exception as e:  # noqa: BLE001  (JaxRuntimeError: NOT_FOUND while nobody failed)
        if str(e).startswith("NOT_FOUND"):
            return None
        raise


def _stop_for_peer(failure: str) -> None:
    exit_now(EXIT_PEER_FAILED, f"cac-jax: error: {failure}\ncac-jax: stopping process {process_index()} of "
                               f"{process_count()} as well; the checkpoints keep the last completed save: run the "
                               f"same command on every process again to resume\n")


def peer_hint(error: BaseException) -> str:
    """What a failed exchange with the other processes most likely means, for the error message."""
    text = str(error)
    if any(s in text for s in ("Connection closed by peer", "Connection reset", "Socket closed", "UNAVAILABLE")):
        return (": the connection to another process of the job broke, most likely because that process died "
                "(see its output)")
    return ""


def exit_now(code: int, message: str = "") -> None:
    """End a failed process of a multi-process job at once, without JAX's shutdown (whose barrier would wait
    for peers stuck in a collective), after writing ``message`` to stderr. The processes that are leaving
    wait for each other a few seconds, and process 0 goes last: its exit takes the coordinator down, and a
    process that loses the coordinator before it has exited is aborted by JAX, its own message unsaid."""
    if not _leaving.acquire(blocking=False):  # the watchdog and the main thread may both get here
        threading.Event().wait()  # the other one ends the process
    _state["stopping"] = True  # no wait for the watchdog: os._exit ends it wherever it is
    sys.stderr.write(message)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        _client().wait_at_barrier("cac_jax/leaving", LEAVE_WAIT_MS)
        if is_primary():
            time.sleep(1.0)
    except Exception:  # noqa: BLE001  (a peer is dead or stuck, or the coordinator is gone: leave anyway)
        pass
    os._exit(code)


def _joined() -> bool:
    if "jax" not in sys.modules:
        return False
    import jax

    return jax.distributed.is_initialized()


def in_job() -> bool:
    """Whether this process is one of several in a distributed job."""
    return _joined() and process_count() > 1


def _stopping() -> None:
    # The watchdog must be out of its call into the runtime's client before JAX shuts that client down and
    # the interpreter ends its threads (a thread ended inside that call aborts the process).
    _state["stopping"] = True
    thread = _state["watchdog"]
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=2 * WATCH_SECONDS + 1)


def _start_watchdog() -> None:
    me = process_index()

    def watch():
        while not _state["stopping"]:
            try:
                failure = _posted_failure()
            except Exception as e:  # noqa: BLE001  (the coordinator's process went away)
                failure = f"process 0 (the coordinator) is unreachable ({str(e).splitlines()[0][:200]})"
            if _state["stopping"]:
                return
            if failure is None or failure.startswith(f"process {me}:"):
                time.sleep(WATCH_SECONDS)
                continue
            _stop_for_peer(failure)

    thread = threading.Thread(target=watch, name="cac-jax-watchdog", daemon=True)
    thread.start()
    _state["watchdog"] = thread
