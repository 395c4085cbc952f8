"""Benchmark command lines that need no PyTorch: argument checks and repeat counts per backend."""

import pytest

from benchmarks import vs_pytorch


@pytest.mark.parametrize("argv, backend, steps, eval_batches", [
    ([], "cpu", 3, 2), (["--quick"], "cpu", 1, 1), ([], "gpu", 50, 20), (["--quick"], "gpu", 20, 5),
    (["--steps", "7", "--eval-batches", "4"], "gpu", 7, 4),
])
def test_repeats_follow_the_backend_unless_given(argv, backend, steps, eval_batches):
    args = vs_pytorch.parse_args(argv)
    vs_pytorch.default_repeats(args, backend)
    assert (args.steps, args.eval_batches) == (steps, eval_batches)


@pytest.mark.parametrize("flag", ["--steps", "--eval-batches", "--rounds"])
def test_non_positive_repeats_are_refused(flag, capsys):
    with pytest.raises(SystemExit):
        vs_pytorch.parse_args([flag, "0"])
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err
