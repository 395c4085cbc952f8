"""Where a run's time goes: exclusive wall-clock sections, with JAX's compilation counted apart.

A :class:`Timings` is active while its ``with timings.active():`` block runs; ``with timings.section(name):``
charges the wall time spent in it to ``name``, and so does ``with timing.section(name):`` anywhere below the
command (evaluation's own steps), which charges the active one, or nothing when none is. Compilation (tracing,
lowering, XLA compilation or reading the persistent compilation cache) is reported by JAX's monitoring events
as it happens; it is charged to ``compile`` and taken out of the section it happened in, so the sections never
overlap and add up to the time spent inside them. Work JAX dispatches asynchronously (on an accelerator) is
charged to the section that waits for it.

``compilations`` counts the XLA compilations done (not read from the persistent cache), ``cache_hits`` the
executables read from it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_BACKEND_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("cac_jax_timings", default=None)


class Timings:
    """Seconds per section plus ``compile``; see the module docstring."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._backend_events = 0  # XLA compilations and executables read from the persistent cache
        self.cache_hits = 0
        self._open: list[list] = []  # [name, start, seconds to leave out] of each open section, innermost last

    def _on_duration(self, event: str, seconds: float, **_) -> None:
        if event in _COMPILE_EVENTS:
            self.seconds["compile"] = self.seconds.get("compile", 0.0) + seconds
            self._backend_events += event == _BACKEND_EVENT
            if self._open:
                self._open[-1][2] += seconds

    @property
    def compilations(self) -> int:
        return self._backend_events - self.cache_hits

    def _on_event(self, event: str, **_) -> None:
        if event == _CACHE_HIT_EVENT:
            self.cache_hits += 1

    @contextlib.contextmanager
    def active(self):
        """Listen to JAX's compilation events for the duration of the block."""
        from jax import monitoring

        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)
            monitoring.unregister_event_duration_listener(self._on_duration)
            monitoring.unregister_event_listener(self._on_event)

    @contextlib.contextmanager
    def section(self, name: str):
        """Charge the block's wall time, less the compilation and the nested sections inside it, to ``name``."""
        entry = [name, time.perf_counter(), 0.0]
        self._open.append(entry)
        try:
            yield
        finally:
            self._open.pop()
            spent = time.perf_counter() - entry[1]
            self.seconds[name] = self.seconds.get(name, 0.0) + spent - entry[2]
            if self._open:
                self._open[-1][2] += spent

    def as_dict(self, total: float) -> dict:
        """``{section: seconds, "compile": s, "other": what no section covers, "total": total, counts}``."""
        out = {"compile": 0.0, **{k: round(v, 3) for k, v in self.seconds.items()}}
        out["other"] = round(max(total - sum(self.seconds.values()), 0.0), 3)
        out["total"] = round(total, 3)
        out["compilations"] = self.compilations
        out["compile_cache_hits"] = self.cache_hits
        return out


@contextlib.contextmanager
def section(name: str):
    """``Timings.section(name)`` of the active :class:`Timings`; without one, the block runs untimed."""
    active = _ACTIVE.get()
    if active is None:
        yield
        return
    with active.section(name):
        yield


def summary(timings: dict) -> str:
    """One line: ``total 9.1 s: compile 3.0, train 2.5, validate 0.4, ...`` (largest first)."""
    parts = sorted(((k, v) for k, v in timings.items() if k not in ("total", "compilations", "compile_cache_hits")),
                   key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.05)
    return (f"total {timings['total']:.1f} s: {text} ({timings['compilations']} XLA compilations, "
            f"{timings['compile_cache_hits']} from the cache)")
