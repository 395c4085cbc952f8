"""Sharded training: 8 host devices give the same parameters as 1 device (the global batch is the same).

Runs in a subprocess, because the host device count is fixed when JAX starts."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from _synthetic import synthetic_data, tiny_config
    from cac_jax.evaluation import evaluate
    from cac_jax.training import loop as train

    assert jax.device_count() == 8, jax.devices()
    data = synthetic_data()
    cfg = tiny_config(sys.argv[2])
    finals, logits = [], []
    for n in (1, 8):
        ctx = train.make_context(cfg.replace(num_devices=n), data)
        state, sums = train.initial_state(ctx), train.zero_metrics(ctx)
        args = train.step_arguments(ctx)
        for _ in range(ctx.steps_per_epoch):
            state, sums = ctx.train_step(state, sums, *args)
        assert len(state.params["classify"]["kernel"].sharding.device_set) == n
        finals.append(jax.device_get(state))
        logits.append(evaluate.compute_logits(ctx.model, state.variables(), data.test_known.images,
                      mesh=ctx.mesh, image_size=8, mean=data.mean, std=data.std, batch_size=20))
    for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-4, atol=1e-4)
    print("SAME", int(finals[0].step))
""")


def test_eight_devices_match_one(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, os.path.dirname(__file__), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "SAME 6" in out.stdout
