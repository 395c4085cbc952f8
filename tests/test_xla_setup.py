"""The XLA CPU flag cac-jax adds on import, and that it takes convolutions away from YNNPACK."""

import os
import subprocess
import sys
from importlib import metadata

import pytest

from cac_jax.runtime import xla_setup

YNN = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
WIDTH = "--xla_cpu_prefer_vector_width=512"


@pytest.mark.parametrize("before,version,after", [
    ("", "0.10.2", f"{YNN} {WIDTH}"),
    ("--xla_force_host_platform_device_count=2", "0.10.0",
     f"--xla_force_host_platform_device_count=2 {YNN} {WIDTH}"),
    ("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution", "0.10.2",
     f"--xla_cpu_experimental_ynn_fusion_type=+individual_convolution {WIDTH}"),  # the user's choice stands
    ("--xla_cpu_prefer_vector_width=256", "0.10.2", f"--xla_cpu_prefer_vector_width=256 {YNN}"),
    ("--xla_force_host_platform_device_count=2", "0.11.0", "--xla_force_host_platform_device_count=2"),  # unmeasured
])
def test_with_fast_cpu_flags(before, version, after):
    assert xla_setup.with_fast_cpu_flags(before, version) == after


def test_apply_writes_the_environment_once(monkeypatch):
    monkeypatch.setattr(xla_setup.backends, "started", lambda: False)
    env = {}
    xla_setup.apply(env)
    assert env.get("XLA_FLAGS", "") == xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib"))
    before = dict(env)
    xla_setup.apply(env)
    assert env == before


_PROBE = """
import cac_jax.runtime
cac_jax.runtime.configure(compilation_cache=False)
import jax, jax.numpy as jnp
from jax import lax
x, w = jnp.ones((128, 32, 32, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK takes only large convolutions
f = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
print(jax.jit(f).lower(x, w).compile().as_text())
"""


def _compiled_conv(xla_flags: str) -> str:
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib")), reason="the flag is only added under the jaxlib releases it was measured on")
def test_configure_moves_convolutions_from_ynnpack_to_xla():
    default = _compiled_conv("")
    assert "convolution(" in default and '"__ynn_fusion"' not in default
    # The user's opposite choice is kept, and shows that the flag is what made the difference.
    assert '"__ynn_fusion"' in _compiled_conv("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")


@pytest.mark.skipif(not xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib")), reason="the flag is only added under the jaxlib releases it was measured on")
def test_configure_after_jax_started_warns_and_records_no_flag_it_could_not_set():
    probe = ("import jax, os; jax.numpy.zeros(1).block_until_ready(); import cac_jax.runtime; "
             "cac_jax.runtime.configure(compilation_cache=False); print('XLA_FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert "XLA_FLAGS=\n" in out.stdout  # the record does not claim a setting XLA never read
    assert "ran after JAX started its backends" in out.stderr and "not in effect" in out.stderr


def test_importing_every_module_changes_nothing_in_the_process():
    """No environment variable, malloc policy or JAX setting changes when the package, or any module of it, is
    imported; the command line (cac_jax.runtime.configure) makes them."""
    probe = ("import os, pkgutil, importlib, jax, cac_jax\n"
             "before = (dict(os.environ), jax.config.values['jax_cpu_enable_async_dispatch'], "
             "jax.config.values['jax_compilation_cache_dir'])\n"
             "for m in pkgutil.walk_packages(cac_jax.__path__, 'cac_jax.'):\n"
             "    if m.name != 'cac_jax.__main__':  # the command itself\n"
             "        importlib.import_module(m.name)\n"
             "from cac_jax.runtime import host_malloc\n"
             "after = (dict(os.environ), jax.config.values['jax_cpu_enable_async_dispatch'], "
             "jax.config.values['jax_compilation_cache_dir'])\n"
             "print(before == after, host_malloc.in_effect())")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True system: cac_jax.runtime.host_malloc.apply() not called", out.stderr[-2000:]
