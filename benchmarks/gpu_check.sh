#!/usr/bin/env bash
# The device check: the GPU path end to end and the benchmarks, in one short run.
# Usage (on a GPU machine whose image has jax/flax/optax/orbax; missing pure-Python wheels in
# .whl/): OUT=/some/folder bash benchmarks/gpu_check.sh
set -uo pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
run() { echo "== $*"; timeout "$1" "${@:2}" 2>&1 | grep -v '^[IW][0-9]\{4\} ' | tee -a "$OUT/bench.log"; }
run 90 python3 -m pytest -q -p no:cacheprovider tests/idspn_jax/test_solve.py -x -k "cg_matches or unroll_equals or approx_is_exact"
run 240 python3 -m benchmarks.bench_steps --no-fresh
run 90 python3 -m benchmarks.bench_clevr_step paper128 40
run 60 python3 -m benchmarks.bench_clevr_step paper128 20
run 60 python3 -m benchmarks.bench_matching --quick
