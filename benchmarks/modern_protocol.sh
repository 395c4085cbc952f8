#!/usr/bin/env bash
# CAC against MLS under the same strong recipe (issue 18): on the ARPL splits (split_family=arpl2020), for
# each trial, cross-entropy and CAC with Vaze et al.'s recipe (recipe=vaze2022; every network scored by
# every score, MLS being max_logit), then CAC with the paper's recipe (cac2021) on the same splits; then
# the report, one table per recipe, Vaze et al.'s published MLS beside our max_logit rows.
#
#   bash benchmarks/modern_protocol.sh run EXPERIMENT DATA [TRIALS] [PARALLEL]    # in the foreground
#   bash benchmarks/modern_protocol.sh start EXPERIMENT DATA [TRIALS] [PARALLEL]  # detached; log in $RUNS/EXPERIMENT.log
#   bash benchmarks/modern_protocol.sh wait SECONDS        # progress until the runs end or SECONDS pass
#   bash benchmarks/modern_protocol.sh pack OUT            # results, logs, plots, reports (no checkpoints) -> OUT/runs.tar.gz
#
# EXPERIMENT: mnist, cifar10, ... (digits needs no DATA: give -). DATA: the npz for --npz; cifar10_jpeg.npz
# (the compact JPEG pack of ../shared/data) is expanded next to it first, with expand_cifar10.py from the same
# folder. TRIALS: comma-separated (default 0,1,2,3,4); PARALLEL: trials trained at once (default 5: fills a GPU
# that one small trial leaves idle; 1 on a CPU). Runs go to $RUNS/EXPERIMENT/{vaze2022,cac2021}/<method>
# (RUNS defaults to runs/modern) and resume from their checkpoints when started again. $EXTRA adds cac-jax
# options to every sweep, e.g. EXTRA="--epochs 60,0 --set warmup_epochs=1" for a shortened run (the report
# says so); RECIPES="vaze2022" leaves out the paper-recipe sweep. On a GPU the whole of CIFAR-10 is 10
# networks of 600 epochs and 5 of 150 + 50.
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RUNS=${RUNS:-runs/modern}
PY=${PYTHON:-python3}

sweeps() {  # EXPERIMENT DATA TRIALS PARALLEL
  local exp=$1 data=$2 trials=$3 parallel=$4 npz=()
  if ! "$PY" -c "import tensorflow_datasets" 2>/dev/null; then
    # The GPU image has none: the earlier GPU session carried wheels of tensorflow-datasets and of its missing
    # dependencies in a git-ignored .carry/ folder (RESULTS.md, "Devices").
    echo "modern_protocol.sh: $PY cannot import tensorflow_datasets, which reads the data; install it first" \
         "(pip install --no-index --find-links .carry/wheels tensorflow-datasets)" >&2
    return 1
  fi
  if [ "$data" != "-" ]; then
    data=$(realpath "$data")
    if [[ $(basename "$data") == cifar10_jpeg.npz ]]; then
      local expanded=${TMPDIR:-/tmp}/cifar10_jpeg_q75.npz
      [ -f "$expanded" ] || "$PY" "$(dirname "$data")/expand_cifar10.py" "$data" "$expanded" || return
      data=$expanded
    fi
    npz=(--npz "$data")
  fi
  local common=(--experiment "$exp" --trials "$trials" --parallel "$parallel" --no-progress --set split_family=arpl2020
                "${npz[@]}")
  local start recipe dirs=()
  for recipe in ${RECIPES:-vaze2022 cac2021}; do
    start=$SECONDS
    if [ "$recipe" = vaze2022 ]; then
      # shellcheck disable=SC2086  # EXTRA is a list of options
      "$PY" -m cac_jax sweep "${common[@]}" --method ce,cac --set recipe=vaze2022 --workdir "$RUNS/$exp/vaze2022" \
        ${EXTRA:-} || return
      echo "vaze2022 sweeps (ce, cac): $((SECONDS - start)) s"
    else
      # shellcheck disable=SC2086
      "$PY" -m cac_jax sweep "${common[@]}" --method cac --workdir "$RUNS/$exp/cac2021/cac" ${EXTRA:-} || return
      echo "cac2021 sweep (cac): $((SECONDS - start)) s"
    fi
    dirs+=("$RUNS/$exp/$recipe")
  done
  "$PY" -m cac_jax report "${dirs[@]}" --output "$RUNS/$exp/report.md"
}

case "${1:-}" in
run)
  [ $# -ge 3 ] || { sed -n 7,10p "$0"; exit 2; }
  sweeps "$2" "$3" "${4:-0,1,2,3,4}" "${5:-5}"
  ;;
start)
  [ $# -ge 3 ] || { sed -n 7,10p "$0"; exit 2; }
  mkdir -p "$RUNS"
  # The trials share the GPU: JAX would give the first of them 75% of its memory.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.12}
  setsid nohup bash "$0" run "$2" "$3" "${4:-0,1,2,3,4}" "${5:-5}" >>"$RUNS/$2.log" 2>&1 </dev/null &
  echo "started; log in $RUNS/$2.log, each trial's in $RUNS/$2/<recipe>/<method>/trial<k>/train.log"
  ;;
wait | pack)  # as gpu_reproduce.sh does them, on these runs
  RUNS=$RUNS exec bash benchmarks/gpu_reproduce.sh "$@"
  ;;
*)
  sed -n 7,10p "$0"; exit 2 ;;
esac
