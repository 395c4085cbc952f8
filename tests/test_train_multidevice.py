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
    from cac_jax import mesh as mesh_lib, train, train_state
    from cac_jax.data import pipeline

    assert jax.device_count() == 8, jax.devices()
    data = synthetic_data()
    cfg = tiny_config(sys.argv[2])
    finals, logits = [], []
    for n in (1, 8):
        ctx = train.make_context(cfg.replace(num_devices=n), data)
        tx = train_state.make_optimizer(0.01, momentum=0.9, weight_decay=5e-6)
        state = train._fresh_state(ctx, tx)
        key = jax.random.key(0)
        sums = train._zero_metrics(cfg.method)
        for idx in pipeline.batch_indices(len(data.train.labels), cfg.batch_size, seed=0, epoch=0):
            images, labels = mesh_lib.put_batch(ctx.mesh, data.train.images[idx], data.train.labels[idx])
            state, sums = ctx.train_step(state, sums, images, labels, key)
        assert len(state.params["classify"]["kernel"].sharding.device_set) == n
        finals.append(jax.device_get(state))
        logits.append(train.evaluate.compute_logits(ctx.model, state.variables(), data.test_known.images,
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
