#!/usr/bin/env bash
# The GPU benchmark, unattended, on a machine with an NVIDIA GPU:
#   bash benchmarks/gpu/run.sh [RESULTS_DIR]        (default: $OUT, else benchmarks/results/gpu-<date>)
# Installs what is missing (from $SER_WHEELS, a folder of wheels, where the machine has no network),
# says which GPU libraries it found, then runs benchmarks/suites/gpu.yaml with ser-bench: it exports
# the four models (and builds TensorRT plans where TensorRT is installed), times every backend against
# PyTorch eager FP32 and copies results.json, results.csv, report.md and the plots to RESULTS_DIR.
# A backend whose library is missing is reported as failed in the report; the run goes on.
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-${OUT:-benchmarks/results/gpu-$(date +%Y%m%d)}}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/ser-gpu-bench.XXXXXX)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

need() {  # need PACKAGE CHECK: install PACKAGE unless the Python statement CHECK runs
    "$PY" -c "$2" 2>/dev/null && return 0
    # Into a private folder first on the path, so nothing installed on the machine is replaced.
    if [ -n "${SER_WHEELS:-}" ]; then
        "$PY" -m pip install -q --no-index --find-links "$SER_WHEELS" --target "$WORK/site" "$1"
    else
        "$PY" -m pip install -q --target "$WORK/site" "$1"
    fi || echo "run.sh: could not install $1; what needs it will be reported as failed"
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
}
need soundfile "import soundfile"
need soxr "import soxr"
need pyyaml "import yaml"
need rich "import rich"
need matplotlib "import matplotlib"
# A CPU-only onnxruntime may be there already: the GPU build goes first on the path.
need onnxruntime-gpu "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"

# onnxruntime-gpu may sit in another folder than the nvidia-* CUDA and cuDNN wheels (torch's): put their
# libraries on the loader's path, or its CUDA provider cannot load and ser reports it unavailable.
nvidia_libs=$("$PY" -c "
import importlib.util, pathlib
spec = importlib.util.find_spec('nvidia')
print(':'.join(sorted(str(p) for loc in (spec.submodule_search_locations if spec else []) for p in pathlib.Path(loc).glob('*/lib'))))
" 2>/dev/null)
[ -n "$nvidia_libs" ] && export LD_LIBRARY_PATH="$nvidia_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader || echo "run.sh: no nvidia-smi"
"$PY" - <<'PY'
import onnxruntime as ort
from ser.runtime.onnxrt import device_problem
from ser.runtime.tensorrt import unavailable_reason
print("onnxruntime", ort.__version__, ort.get_available_providers())
for device in ("cuda", "tensorrt"):
    print(f"onnxruntime {device}:", device_problem(device) or "ready")
print("tensorrt:", unavailable_reason() or "ready")
PY

"$PY" -c "from ser.cli.bench import bench_command; bench_command(prog_name='ser-bench')" \
    run benchmarks/suites/gpu.yaml --out "$WORK/run" --overwrite
status=$?
mkdir -p "$RESULTS"
cp "$WORK"/run/results.json "$WORK"/run/results.csv "$WORK"/run/report.md "$WORK"/run/*.png "$RESULTS"/ 2>/dev/null
echo "run.sh: results in $RESULTS (ser-bench exit status $status)"
rm -rf "$WORK"
exit $status
