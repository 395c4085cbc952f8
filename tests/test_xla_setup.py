"""The XLA CPU flag cac-jax adds on import, and that it takes convolutions away from YNNPACK."""

import os
import subprocess
import sys
from importlib import metadata

import pytest

from cac_jax import xla_setup

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
    monkeypatch.setattr(xla_setup, "_jax_backends_started", lambda: False)
    env = {}
    xla_setup.apply(env)
    assert env.get("XLA_FLAGS", "") == xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib"))
    before = dict(env)
    xla_setup.apply(env)
    assert env == before


_PROBE = """
import cac_jax, jax, jax.numpy as jnp
from jax import lax
x, w = jnp.ones((128, 32, 32, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK takes only large convolutions
f = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
print(jax.jit(f).lower(x, w).compile().as_text())
"""


def _compiled_conv(xla_flags: str) -> str:
    env = dict(os.environ, XLA_FLAGS=xla_flags)
    return subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib")), reason="the flag is only added under the jaxlib releases it was measured on")
def test_import_moves_convolutions_from_ynnpack_to_xla():
    default = _compiled_conv("")
    assert "convolution(" in default and '"__ynn_fusion"' not in default
    # The user's opposite choice is kept, and shows that the flag is what made the difference.
    assert '"__ynn_fusion"' in _compiled_conv("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")


@pytest.mark.skipif(not xla_setup.with_fast_cpu_flags("", metadata.version("jaxlib")), reason="the flag is only added under the jaxlib releases it was measured on")
def test_import_after_jax_started_warns_and_records_no_flag_it_could_not_set():
    probe = ("import jax, os; jax.numpy.zeros(1).block_until_ready(); import cac_jax; "
             "print('XLA_FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert "XLA_FLAGS=\n" in out.stdout  # the record does not claim a setting XLA never read
    assert "imported after JAX started its backends" in out.stderr and "not in effect" in out.stderr
