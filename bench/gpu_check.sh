#!/usr/bin/env bash
# GPU check (issue 12): run from anywhere on a lent GPU machine; at most 7 min 45 s in all.
#
#   bash bench/gpu_check.sh            # installs into .venv-gpu, runs, prints the numbers
#   WHEELS=.whl bash bench/gpu_check.sh   # a machine without network: install from wheels
#
# 1. installs the package with the GPU extra (faiss for CUDA replaces faiss-cpu); with
#    WHEELS=DIR, from the wheels in DIR only (--no-index);
# 2. runs the GPU tests (tests/test_gpu.py) and the index-kind tests on this machine;
# 3. prints images/s of a full-size CLIP B/32 config (random weights, fp16 on CUDA) through
#    the indexer (bench/bench_index.py --model b32: JPEG files -> decode -> encode -> store);
# 4. prints FAISS GPU queries/s at 1M vectors (flat, and the kind searchkit.ann chooses).
#   SKIP_INSTALL=1 VENV=.venv bash bench/gpu_check.sh   # the active environment as it is
#                                                       # (a dry run on a CPU machine)
# Every step has its own time limit (they sum to 455 s) and the whole script a deadline
# (TOTAL_S, 455 s; with nvidia-smi's 5 s and a last kill grace of 5 s, under 8 minutes): a
# step gets what is left of the deadline when that is less, and is skipped when under
# MIN_STEP_S is left. A failed or skipped step is reported and the next one runs; the exit
# status is non-zero if any did not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
TOTAL_S=${TOTAL_S:-455}
MIN_STEP_S=10
VENV=${VENV:-.venv-gpu}
WHEELS=${WHEELS:-}
FAILED=()
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }
step() {  # step NAME SECONDS CMD...: run within its limit and the deadline; remember failures
    local name=$1 limit=$2 left; shift 2
    left=$(( START + TOTAL_S - $(date +%s) ))
    (( left < limit )) && limit=$left
    if (( limit < MIN_STEP_S )); then FAILED+=("$name (skipped: deadline)"); log "$name SKIPPED"; return; fi
    log "$name (limit ${limit}s)"
    if ! timeout -k 5 "$limit" bash -c '"$@"' "$name" "$@"; then FAILED+=("$name"); log "$name FAILED"; fi
}
pip_install() {  # pip install ARGS... (from $WHEELS only, when set)
    if [ -n "$WHEELS" ]; then pip install -q --no-index --find-links "$WHEELS" "$@"
    else pip install -q "$@"; fi
}
export WHEELS
export -f pip_install  # steps run under timeout, in a child bash

log "device: $(timeout 5 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
# the venv sees the system's packages (a GPU image's torch is not installed again)
step "make $VENV" 20 sh -c "[ -x '$VENV/bin/python' ] || python3 -m venv --system-site-packages '$VENV'"
# shellcheck disable=SC1091
. "$VENV/bin/activate" || { log "no $VENV: stopping"; exit 1; }
if [ -z "${SKIP_INSTALL:-}" ]; then
    step "install searchkit[test]" 130 pip_install -e '.[test]'
    # faiss-gpu and faiss-cpu both provide the module `faiss`: only one may stay
    install_faiss_gpu() {
        pip uninstall -q -y faiss-cpu
        pip_install "faiss-gpu>=1.8" || pip_install faiss-gpu-cu12
    }
    export -f install_faiss_gpu
    step "install faiss for CUDA" 60 install_faiss_gpu
fi
step "versions" 15 python - <<'EOF'
import faiss, torch
print(f"torch {torch.__version__} cuda={torch.cuda.is_available()} "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; "
      f"faiss {faiss.__version__} gpus={faiss.get_num_gpus()}")
EOF

step "GPU tests" 85 python -m pytest tests/test_gpu.py tests/test_ann.py -q -p no:randomly -rs
step "CLIP B/32 fp16 through the indexer" 85 \
    python bench/bench_index.py --model b32 --images 2048 --noop-files 0
step "FAISS GPU queries/s at 1M" 60 python - <<'EOF'
import time
import faiss
import numpy as np
from searchkit import ann

N, D, NQ, K = 1_000_000, 512, 10_000, 10
rng = np.random.default_rng(0)
x = rng.standard_normal((N, D), dtype=np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
q = x[rng.choice(N, NQ, replace=False)] + 0.05 * rng.standard_normal((NQ, D), dtype=np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
res = faiss.StandardGpuResources()
spec = ann.choose(N, D)
cpu_ann = ann.build(spec, D, x[rng.choice(N, spec.train_rows, replace=False)],
                    [(np.arange(N), x)])
for name, cpu in (("flat (exact)", faiss.IndexFlatIP(D)), (f"{spec.factory(D)} nprobe "
                                                           f"{spec.nprobe}", cpu_ann)):
    if name.startswith("flat"):
        cpu.add(x)
    try:
        gpu = faiss.index_cpu_to_gpu(res, 0, cpu)
    except RuntimeError as e:
        print(f"FAISS GPU {name}: cannot move to the GPU ({str(e).splitlines()[-1]})")
        continue
    if cpu is cpu_ann:
        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", spec.nprobe)
    gpu.search(q[:100], K)  # warm-up
    for batch in (1, 1000):
        n = min(NQ, 2000 if batch == 1 else NQ)
        t = time.perf_counter()
        for s in range(0, n, batch):
            gpu.search(q[s:s + batch], K)
        print(f"FAISS GPU {name} at 1M x {D}: {n / (time.perf_counter() - t):,.0f} "
              f"queries/s (batches of {batch})")
EOF

log "done in $(( $(date +%s) - START )) s; failed: $( (( ${#FAILED[@]} )) && printf '%s; ' "${FAILED[@]}" || echo none)"
[ ${#FAILED[@]} -eq 0 ]
