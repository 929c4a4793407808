#!/usr/bin/env bash
# The GPU check of igmda-jax, for a bare machine with one GPU whose image already has JAX with
# CUDA: install the project, train QMIX and QMIX-DA on 3m and MMM2 with 1, 8 and 64 seeds for a
# short budget, run `igmda bench --quick`, and write one JSON, $OUT/device_check.json (env steps/s
# per seed and in total, compile seconds, GPU memory), all within about 10 minutes.
#
#   OUT=/some/dir experiments/device_check.sh          # on the GPU machine
#   DRY_RUN=1 OUT=/tmp/x experiments/device_check.sh   # here, on the CPU: tiny, no install
#
# The GPU machine reaches no network: before the call, download the wheels the project needs
# besides JAX into ./wheels (ignored by git; carried with the working tree), e.g.
#   pip download -d wheels --only-binary=:all: --python-version 3.11 \
#       flax optax chex orbax-checkpoint jaxmarl rlax tyro pyyaml tqdm matplotlib flashbax \
#       rliable 'pandas<3' six
# and call the device tool with carry: ["wheels"]. Without ./wheels, pip installs from the index.
# PYTHON names the interpreter (default: python on the PATH).
set -euo pipefail
PYTHON=${PYTHON:-python}
OUT=${OUT:?set OUT to the folder the JSON goes to}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if [ "${DRY_RUN:-0}" = "1" ]; then
    # the environment that runs this already has the project; a tiny version of every step
    exec "$PYTHON" experiments/device_check.py --out "$OUT/device_check.json" \
        --maps 3m --algs qmix --seeds 1 2 --chunks 1 --deadline-s 600 --bench none
fi
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())"
if [ -d wheels ]; then
    # keep the image's jax/jaxlib (with CUDA): install our package and its other dependencies
    "$PYTHON" -m pip install --quiet --no-index --find-links wheels --no-deps -e .
    "$PYTHON" -m pip install --quiet --no-index --find-links wheels flax optax chex orbax-checkpoint jaxmarl \
        rlax tyro pyyaml tqdm matplotlib flashbax rliable 'pandas<3' six
else
    "$PYTHON" -m pip install --quiet -e .
fi
"$PYTHON" experiments/device_check.py --out "$OUT/device_check.json" \
    --maps 3m MMM2 --algs qmix qmix-da --seeds 1 8 64 --chunks 2 --deadline-s 480 --bench quick \
    2>&1 | tee "$OUT/device_check.log"
