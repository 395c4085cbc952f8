#!/usr/bin/env bash
# The GPU figures of RESULTS.md: the speed benchmark against PyTorch (float32, and bfloat16 against
# PyTorch's autocast), the paper's MNIST protocol (5 trials of 35 + 35 epochs, trained 5 at once on
# the one GPU) and CIFAR-10 trial 0 (150 + 50 epochs).
#
#   bash benchmarks/gpu_reproduce.sh bench OUT           # vs_pytorch, float32 and bfloat16 -> OUT/vs_pytorch_gpu_*
#   bash benchmarks/gpu_reproduce.sh loop OUT            # loop_vs_step on CIFAR-10 sizes -> OUT/loop_vs_step_gpu.*
#   bash benchmarks/gpu_reproduce.sh cifar10-sweep DATA  # the paper's CIFAR-10 protocol, trials 0-4 at once
#   bash benchmarks/gpu_reproduce.sh mnist DATA          # start the MNIST sweep, detached from this shell
#   bash benchmarks/gpu_reproduce.sh cifar10 DATA [DTYPE]  # start CIFAR-10 trial 0 (DTYPE float32 or bfloat16)
#   bash benchmarks/gpu_reproduce.sh wait SECONDS        # show progress until the runs end or SECONDS pass
#   bash benchmarks/gpu_reproduce.sh pack OUT            # results, logs, plots (no checkpoints) -> OUT/runs.tar.gz
#
# DATA holds mnist.npz, cifar10_jpeg.npz and expand_cifar10.py (the files of ../shared/data).
# Runs go to $RUNS (default runs/gpu/) and resume from their checkpoints when started again.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RUNS=${RUNS:-runs/gpu}
# The training runs share the GPU (5 MNIST trials and CIFAR-10); JAX would give the first 75% of its memory.
share_gpu() { export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.12}; }

case "${1:-}" in
bench)
  mkdir -p "$2"
  timeout 240 python3 -m benchmarks.vs_pytorch --out "$2/vs_pytorch_gpu_f32.json" 2>&1 | tee "$2/vs_pytorch_gpu_f32.txt"
  timeout 180 python3 -m benchmarks.vs_pytorch --quick --dtype bfloat16 --skip loss \
    --out "$2/vs_pytorch_gpu_bf16.json" 2>&1 | tee "$2/vs_pytorch_gpu_bf16.txt"
  ;;
loop)
  mkdir -p "$2"
  timeout 300 python3 -m benchmarks.loop_vs_step --json "$2/loop_vs_step_gpu.json" 2>&1 | tee "$2/loop_vs_step_gpu.txt"
  ;;
cifar10-sweep)
  data=$(realpath "$2")
  mkdir -p "$RUNS"
  share_gpu
  setsid nohup bash -c "set -e
    [ -f /tmp/cifar10_jpeg_q75.npz ] || python3 '$data/expand_cifar10.py' '$data/cifar10_jpeg.npz' /tmp/cifar10_jpeg_q75.npz
    start=\$(date +%s)
    python3 -m cac_jax sweep --experiment cifar10 --method cac --parallel 5 --no-progress \
      --npz /tmp/cifar10_jpeg_q75.npz --workdir $RUNS/cifar10_sweep/cac
    echo \"sweep wall time: \$((\$(date +%s) - start)) s\"" >>"$RUNS/cifar10_sweep.log" 2>&1 </dev/null &
  echo "started; logs in $RUNS/cifar10_sweep.log and $RUNS/cifar10_sweep/cac/trial*/train.log"
  ;;
mnist)
  mkdir -p "$RUNS"
  share_gpu
  setsid nohup python3 -m cac_jax sweep --experiment mnist --method cac --parallel 5 --no-progress \
    --npz "$(realpath "$2")/mnist.npz" --workdir "$RUNS/mnist/cac" >>"$RUNS/mnist.log" 2>&1 </dev/null &
  echo "started; logs in $RUNS/mnist.log and $RUNS/mnist/cac/trial*/train.log"
  ;;
cifar10)
  data=$(realpath "$2") dtype=${3:-float32}
  mkdir -p "$RUNS"
  share_gpu
  setsid nohup bash -c "set -e
    [ -f /tmp/cifar10_jpeg_q75.npz ] || python3 '$data/expand_cifar10.py' '$data/cifar10_jpeg.npz' /tmp/cifar10_jpeg_q75.npz
    exec python3 -m cac_jax train --experiment cifar10 --trial 0 --no-progress --set dtype=$dtype \
      --npz /tmp/cifar10_jpeg_q75.npz --workdir $RUNS/cifar10_$dtype/trial0" >>"$RUNS/cifar10_$dtype.log" 2>&1 </dev/null &
  echo "started; log in $RUNS/cifar10_$dtype.log"
  ;;
wait)
  end=$((SECONDS + $2))
  # The training commands, and modern_protocol.sh's driver, which runs several of them in turn.
  busy="cac_jax (sweep|train)|modern_protocol\.sh run"
  while pgrep -f "$busy" >/dev/null && [ $SECONDS -lt $end ]; do
    sleep 20
    echo "[$(date +%T)]"
    python3 -m cac_jax.runs.parallel_trials "$RUNS"
  done
  pgrep -f "$busy" >/dev/null && echo "still running" || echo "all runs ended"
  tail -n 25 "$RUNS"/*.log
  ;;
pack)
  mkdir -p "$2"
  tar czf "$2/runs.tar.gz" --exclude=checkpoints "$RUNS"
  ls -la "$2"
  ;;
*)
  sed -n 2,13p "$0"; exit 2 ;;
esac
