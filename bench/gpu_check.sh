#!/usr/bin/env bash
# GPU check (issue 12): run from anywhere on a lent GPU machine; about 6-8 minutes.
#
#   bash bench/gpu_check.sh            # installs into .venv-gpu, runs, prints the numbers
#
# 1. installs the package with the GPU extra (faiss for CUDA replaces faiss-cpu);
# 2. runs the GPU tests (tests/test_gpu.py) and the index-kind tests on this machine;
# 3. prints images/s of a full-size CLIP B/32 config (random weights, fp16 on CUDA) through
#    the indexer (bench/bench_index.py --model b32: JPEG files -> decode -> encode -> store);
# 4. prints FAISS GPU queries/s at 1M vectors (flat, and the kind searchkit.ann chooses).
# Every step has its own time limit; a failed step is reported and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
VENV=${VENV:-.venv-gpu}
FAILED=()
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }
step() {  # step NAME SECONDS CMD...: run with a time limit, remember failures
    local name=$1 limit=$2; shift 2
    log "$name (limit ${limit}s)"
    if ! timeout "$limit" "$@"; then FAILED+=("$name"); log "$name FAILED"; fi
}

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
step "install searchkit[test]" 240 pip install -q -e '.[test]'
# faiss-gpu and faiss-cpu both provide the module `faiss`: only one may stay
step "install faiss for CUDA" 120 sh -c \
    'pip uninstall -q -y faiss-cpu && (pip install -q "faiss-gpu>=1.8" || pip install -q faiss-gpu-cu12)'
python - <<'EOF'
import faiss, torch
print(f"torch {torch.__version__} cuda={torch.cuda.is_available()} "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}; "
      f"faiss {faiss.__version__} gpus={faiss.get_num_gpus()}")
EOF

step "GPU tests" 150 python -m pytest tests/test_gpu.py tests/test_ann.py -q -p no:randomly -rs
step "CLIP B/32 fp16 through the indexer" 180 \
    python bench/bench_index.py --model b32 --images 2048 --noop-files 0
step "FAISS GPU queries/s at 1M" 120 python - <<'EOF'
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

log "done in $(( $(date +%s) - START )) s; failed: ${FAILED[*]:-none}"
[ ${#FAILED[@]} -eq 0 ]
