#!/usr/bin/env bash
# Every experiment of results/RESULTS.md, resumably, then every report: the sweeps through one
# queue (table1 first, two runs at a time; a slot freed at the end of one sweep starts the next
# sweep's run), then fig3_lossy's imitation learners, then experiments/report_all.py.
# Rerun the same command after a stop: finished runs are skipped, the others resume.
#
#   nice -n 19 experiments/run_all.sh               # PYTHON=path/to/python to use another one
#   nice -n 19 experiments/run_all.sh --time-limit 2:40  # only runs that end within 2 h 40 min
#
# Options are passed to `igmda sweep`. When --time-limit leaves sweep runs for later, the script
# stops there (exit 3) and the imitations and reports wait for a later call.
#
# The run-hours of each sweep: experiments/README.md (`igmda sweep FILE --dry-run`).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
files=()
for sweep in table1 fig3_lossy fig5_bc_da fig5_sight expert_view dagger_beta position_leak \
  expert_target; do
  files+=("experiments/$sweep.yaml")
done
"$python" -m igmda_jax.cli sweep "${files[@]}" --jobs 2 "$@"
PYTHON="$python" experiments/fig3_lossy.sh
"$python" experiments/report_all.py
