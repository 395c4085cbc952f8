"""Where a run's time goes: exclusive sections, compilation charged apart, the persistent cache's settings."""

import time

import jax
import jax.numpy as jnp
import pytest

from cac_jax.runtime import timing
from cac_jax.runtime import xla_setup


def test_sections_are_exclusive_and_compilation_is_taken_out():
    t = timing.Timings()
    start = time.perf_counter()
    with t.active():
        with t.section("outer"):
            time.sleep(0.05)
            with t.section("inner"):
                time.sleep(0.05)
                jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()  # compiles
            time.sleep(0.02)
    out = t.as_dict(time.perf_counter() - start)
    assert t.compilations >= 1 and out["compile"] > 0
    # Each section holds its own sleeps, not the other's nor the compilation (a loaded machine only adds time).
    assert out["outer"] >= 0.069 and out["inner"] >= 0.049
    assert out["outer"] + out["inner"] + out["compile"] <= out["total"] + 0.001
    assert out["outer"] + out["inner"] + out["compile"] + out["other"] == pytest.approx(out["total"], abs=0.005)
    assert "XLA compilations" in timing.summary(out)
    # Outside ``active()`` nothing listens any more.
    before = t.compilations
    jax.jit(lambda x: jnp.cos(x) - 2.0)(jnp.arange(5.0)).block_until_ready()
    assert t.compilations == before


def test_the_module_level_section_charges_the_active_timings_and_nothing_without_one():
    with timing.section("untimed"):  # no active Timings: runs, records nowhere
        pass
    t = timing.Timings()
    with t.active():
        with t.section("outer"):
            with timing.section("inner"):
                time.sleep(0.02)
    assert t.seconds["inner"] >= 0.02 and t.seconds["outer"] < 0.02 and "untimed" not in t.seconds
    with timing.section("after"):
        pass
    assert "after" not in t.seconds


@pytest.mark.parametrize("value, expected", [
    ("off", None), ("OFF", None), ("/some/where", "/some/where"),
])
def test_compilation_cache_dir_follows_the_environment(value, expected):
    assert xla_setup.compilation_cache_dir({xla_setup.CACHE_ENV: value}) == expected


def test_compilation_cache_dir_defaults_beside_the_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert xla_setup.compilation_cache_dir({}) == str(tmp_path / ".cache" / "cac_jax" / "jax_compilation_cache")
