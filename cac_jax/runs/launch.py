"""``cac-jax launch``: a multi-host job tried on one machine, its processes sharing this machine's CPU.

``cac-jax launch --processes 2 --host-devices 2 -- train --set epochs=6,2`` starts
``cac-jax train --set epochs=6,2 --coordinator 127.0.0.1:<free port> --num-processes 2 --process-id <i>``
twice, each process with 2 CPU devices of its own (``--xla_force_host_platform_device_count``) and gloo
collectives between them: the same code path as a job over two hosts. Every output line is prefixed with
``[p<i>]``; Ctrl-C is passed on to every process once (they run in sessions of their own, so the terminal's
signal does not reach them twice); as soon as one process fails the others are stopped and the launcher
exits with the code of the process that failed first (not that of one that only stopped because of it).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from cac_jax.runtime.distributed import EXIT_PEER_FAILED  # "stopped because another process failed"

STOP_GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port nobody listens on now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_commands(command: Sequence[str], processes: int, port: int) -> list[list[str]]:
    """The command line of every process: ``command`` plus the three distributed flags."""
    if not command:
        raise ValueError("name the cac-jax command to launch after --, e.g. cac-jax launch --processes 2 -- train")
    if command[0] not in ("train", "eval", "sweep"):
        raise ValueError(f"cac-jax launch runs train, eval or sweep across processes, not {command[0]!r}")
    taken = [a for a in command if a.split("=", 1)[0] in ("--coordinator", "--num-processes", "--process-id")]
    if taken:
        raise ValueError(f"the launcher sets {', '.join(taken)} itself; leave them out of the command")
    return [[sys.executable, "-m", "cac_jax", *command, "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(processes), "--process-id", str(i)] for i in range(processes)]


def process_environment(host_devices: int, environ=os.environ) -> dict:
    """The environment of every process: JAX on the CPU with ``host_devices`` devices."""
    env = dict(environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={host_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _relay(stream, prefix: bytes, out) -> None:
    """Copy ``stream`` to ``out``, ``prefix`` before every line (progress bars redraw with \\r: kept as lines)."""
    start = True
    while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
        pieces = []
        for ch in chunk.splitlines(keepends=True):
            pieces.append((prefix if start else b"") + ch)
            start = ch.endswith((b"\n", b"\r"))
        out.write(b"".join(pieces))
        out.flush()


def launch(command: Sequence[str], processes: int, host_devices: int = 1, *, out=None) -> int:
    """Run ``command`` (a cac-jax command line) as a job of ``processes`` processes; see :func:`supervise`."""
    if processes < 1 or host_devices < 1:
        raise ValueError(f"--processes and --host-devices must be positive, got {processes} and {host_devices}")
    cmds = process_commands(command, processes, free_port())
    out = out or sys.stdout.buffer
    _say(out, f"{processes} processes x {host_devices} CPU devices: {' '.join(cmds[0][3:-2])} "
              f"--process-id 0..{processes - 1}")
    return supervise(cmds, process_environment(host_devices), out=out)


def supervise(cmds: Sequence[Sequence[str]], env: dict, *, out) -> int:
    """Run the processes ``cmds`` to their end, their output prefixed ``[p<i>]`` on ``out``; returns 0 when
    all succeed, else the first failed process's code (128 + n for signal n; 130 after Ctrl-C), once the
    others are stopped."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
             for c in cmds]
    relays = [threading.Thread(target=_relay, args=(p.stdout, f"[p{i}] ".encode(), out), daemon=True)
              for i, p in enumerate(procs)]
    for t in relays:
        t.start()
    interrupted = []
    previous = (signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
                if threading.current_thread() is threading.main_thread() else None)
    try:
        code = _wait(procs, interrupted, out)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        _stop(procs)
        for t in relays:
            t.join(timeout=5)
    if code == 0:
        _say(out, f"all {len(procs)} processes finished")
    return code


def _wait(procs, interrupted: list, out) -> int:
    while True:
        if interrupted:
            _say(out, "interrupted: passing Ctrl-C on to every process")
            _stop(procs)
            return 130
        codes = [p.poll() for p in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
        if failed:
            i, c = failed[0]
            how = f"was killed by signal {-c}" if c < 0 else f"exited with code {c}"
            _say(out, f"process {i} {how}" + ("; stopping the others" if None in codes else ""))
            # The others hear of it and end by themselves within seconds; the job's code is the cause's, not
            # that of a process that only stopped because a peer had failed.
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while time.monotonic() < deadline and any(p.poll() is None for p in procs):
                time.sleep(0.1)
            codes = [p.poll() for p in procs]
            causes = [x for x in codes if x not in (None, 0, EXIT_PEER_FAILED)]
            c = causes[0] if causes else c
            return 128 - c if c < 0 else c
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)


def _say(out, text: str) -> None:
    out.write(f"[launch] {text}\n".encode())
    out.flush()


def _signal_all(procs, sig) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass


def _stop(procs) -> None:
    """Ctrl-C to every running process, then, after a grace period, SIGKILL."""
    if all(p.poll() is not None for p in procs):
        return
    _signal_all(procs, signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    _signal_all(procs, signal.SIGKILL)
    for p in procs:
        p.wait()
