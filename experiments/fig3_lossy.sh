#!/usr/bin/env bash
# The paper's Fig. 3 on SMAX: full-sight qmix experts (experiments/fig3_lossy.yaml) on 5m_vs_6m
# and 3s5z, then `igmda imitate` learners at sight 9, 2 and 0 on each: imitation accuracy,
# learner vs expert win rate, per-action value distributions (values.png, the paper's Fig. 3b).
# Resumable: rerun the same command (the sweep and igmda imitate both resume).
#
#   nice -n 19 experiments/fig3_lossy.sh            # PYTHON=path/to/python to use another one
#
# Checkpoints stay in runs/fig3_lossy/; the small outputs are copied to results/fig3_lossy/.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
igmda() { "$python" -m igmda_jax.cli "$@"; }
igmda sweep experiments/fig3_lossy.yaml --jobs 2
imitate() {  # the learners of one map's expert, then their small outputs to results/
  local map=$1 out=runs/fig3_lossy/imitate_$1
  igmda imitate --expert "runs/fig3_lossy/qmix_${map}_sightdefault" --sight-range 9 2 0 \
    --t-max 1e6 --seeds 3 --test-interval 10000 --out "$out" --no-progress
  # everything but the checkpoints
  (cd "$out" && find . -path ./'*'/checkpoints -prune -o -type f \
    \( -name '*.json' -o -name '*.jsonl' -o -name '*.csv' -o -name '*.png' \) -print) |
    while read -r file; do
      mkdir -p "results/fig3_lossy/imitate_${map}/$(dirname "$file")"
      cp "$out/$file" "results/fig3_lossy/imitate_${map}/$file"
    done
}
# the two maps side by side, each on half of the cores (as igmda sweep --jobs 2 does)
devices=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
IGMDA_CPU_DEVICES=${IGMDA_CPU_DEVICES:-$devices} imitate 5m_vs_6m &
first=$!
IGMDA_CPU_DEVICES=${IGMDA_CPU_DEVICES:-$devices} imitate 3s5z
wait "$first"
