#!/usr/bin/env bash
# The paper's Fig. 3 on SMAX: full-sight qmix experts (experiments/fig3_lossy.yaml) on 5m_vs_6m
# and 3s5z, then `igmda imitate` learners at sight 9, 2 and 0 on each: imitation accuracy,
# learner vs expert win rate (a final evaluation of 320 episodes per seed), per-action value
# distributions (values.png, the paper's Fig. 3b). A map's summary and figures are made once its
# three learners have finished, even when a learner of the other map failed.
#
#   nice -n 19 experiments/fig3_lossy.sh            # PYTHON=path/to/python to use another one
#
# Resumable across machines: rerun the same command. Each (map, sight) learner is its own job,
# two at a time; a finished one's small outputs go to results/fig3_lossy/imitate_<map>/sight_<s>
# at once and are reused from there (`igmda imitate` reuses a finished sight without its
# checkpoints). The experts' checkpoints live only in runs/fig3_lossy/ (never committed): where
# they are gone (a new checkout) and learners remain to train, the expert is retrained with the
# sweep's settings and must reproduce the committed expert's config and metrics exactly (else
# the script stops and says how to start that map afresh).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
igmda() { "$python" -m igmda_jax.cli "$@"; }
maps=(3s5z 5m_vs_6m) # the longer map first
sights=(9 2 0)
results=results/fig3_lossy
runs=runs/fig3_lossy
imitate_args=(--t-max 1e6 --seeds 3 --test-interval 10000 --no-progress)

igmda sweep experiments/fig3_lossy.yaml --jobs 2

expert_dir() { echo "$runs/qmix_$1_sightdefault"; }
sight_done() { [[ -f "$results/imitate_$1/sight_$2/values.json" ]]; }
map_done() { [[ -f "$results/imitate_$1/summary.json" ]]; }

copy_small_outputs() { # FROM TO: everything but checkpoints
  (cd "$1" && find . -path '*/checkpoints' -prune -o -type f \
    \( -name '*.json' -o -name '*.jsonl' -o -name '*.csv' -o -name '*.png' -o -name '*.md' \) \
    -print) | while read -r file; do
    mkdir -p "$2/$(dirname "$file")"
    cp "$1/$file" "$2/$file"
  done
}

metrics_without_wall_time() {
  "$python" -c 'import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line); row.pop("wall_time", None); print(json.dumps(row, sort_keys=True))' "$1"
}

retrain_expert() { # MAP: the sweep's cell again, which must reproduce the committed expert
  local map=$1 dir committed=$results/qmix_$1_sightdefault
  dir=$(expert_dir "$map")
  if [[ -f $dir/config.json ]]; then
    igmda train --resume "$dir" --no-progress
  else
    igmda train --preset smax --out "$dir" --alg qmix --map "$map" --sight-range None --seeds 3 \
      --t-max 1000000 --test-interval 10000 --own-features smac --no-progress
  fi
  if ! cmp -s "$dir/config.json" "$committed/config.json" ||
    ! cmp -s <(metrics_without_wall_time "$dir/metrics.jsonl") \
      <(metrics_without_wall_time "$committed/metrics.jsonl"); then
    echo "fig3_lossy: the retrained $map expert ($dir) differs from the committed one" \
      "($committed), so its learners would imitate another expert; to start $map's Fig. 3" \
      "afresh: rm -r $committed $results/imitate_$map $runs/imitate_$map and rerun" >&2
    return 1
  fi
  echo "fig3_lossy: the retrained $map expert reproduces $committed exactly"
}

# the experts that learners still need, side by side, each on half of the cores
devices=$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))
export IGMDA_CPU_DEVICES=${IGMDA_CPU_DEVICES:-$devices}
retraining=()
for map in "${maps[@]}"; do
  if ! map_done "$map" && [[ ! -d $(expert_dir "$map")/checkpoints ]]; then
    retrain_expert "$map" &
    retraining+=($!)
  fi
done
for pid in "${retraining[@]}"; do wait "$pid"; done

imitate_one() { # MAP SIGHT: one learner, then its small outputs to results/ at once
  local map=$1 sight=$2 out=$runs/imitate_$1
  igmda imitate --expert "$(expert_dir "$map")" --sight-range "$sight" --out "$out" \
    "${imitate_args[@]}"
  copy_small_outputs "$out/sight_$sight" "$results/imitate_$map/sight_$sight"
  echo "fig3_lossy: $map sight $sight imitated"
}

learners=()
for map in "${maps[@]}"; do
  map_done "$map" && continue
  for sight in "${sights[@]}"; do # finished learners back from results/, the rest queued
    if sight_done "$map" "$sight" && [[ ! -d $runs/imitate_$map/sight_$sight ]]; then
      copy_small_outputs "$results/imitate_$map/sight_$sight" "$runs/imitate_$map/sight_$sight"
    elif ! sight_done "$map" "$sight"; then
      while (($(jobs -rp | wc -l) >= 2)); do wait -n || true; done
      imitate_one "$map" "$sight" &
      learners+=($!)
    fi
  done
done
failed=0
for pid in "${learners[@]}"; do wait "$pid" || failed=1; done

for map in "${maps[@]}"; do # the summary, values and figures of each map whose sights all finished
  map_done "$map" && continue
  for sight in "${sights[@]}"; do sight_done "$map" "$sight" || continue 2; done
  igmda imitate --expert "$(expert_dir "$map")" --sight-range "${sights[@]}" \
    --out "$runs/imitate_$map" "${imitate_args[@]}"
  copy_small_outputs "$runs/imitate_$map" "$results/imitate_$map"
done
if ((failed)); then
  echo "fig3_lossy: a learner failed (its log is above); rerun to resume the others" >&2
  exit 1
fi
