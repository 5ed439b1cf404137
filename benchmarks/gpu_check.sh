#!/usr/bin/env bash
# The recurrent variants' GPU path checked and measured in one go, on a CUDA machine:
#   1. tests/nn/test_cuda.py: cuDNN parity of the plain layers, and every variant through the
#      Triton loop (seqlab.nn.triton_scan) against its CPU result, gradients and lengths included;
#   2. benchmarks/recurrent.py --device cuda with the Python loop (SEQLAB_TRITON_SCAN=0: before),
#      with the Triton loop (after), and with the Triton loop replayed as CUDA graphs
#      (SEQLAB_CUDA_GRAPHS=1), as markdown tables for benchmarks/RESULTS.md;
#   3. benchmarks/minimal.py --device cuda: MinGRU / MinLSTM's parallel scan against cuDNN.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else runs/gpu-check)
#   PARTS="tests after graphs" bash benchmarks/gpu_check.sh    (some of: tests before after
#                                                               graphs minimal; default all)
#
# It reads seqlab from src/ (no install step); torch with CUDA, Triton, pydantic, PyYAML and
# safetensors must be importable. Wheels in .whl/ (for a machine without a package index, e.g.
# pydantic's, fetched with `pip download --python-version 3.12 --only-binary=:all: -d .whl ...`)
# are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/gpu-check}}"
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__,
'|', torch.cuda.get_device_name())" 2>&1 | tee "$out/device.txt"
parts=" ${PARTS:-tests before after graphs minimal} "
bench() { python3 benchmarks/recurrent.py --device cuda --repeats 5 --warmup 2 --output "$out/$1.md" \
    2>&1 | tee "$out/$1.log"; }
[[ $parts == *" tests "* ]] && python3 -m pytest -q -p no:cacheprovider tests/nn/test_cuda.py 2>&1 | tee "$out/test_cuda.log"
[[ $parts == *" before "* ]] && SEQLAB_TRITON_SCAN=0 bench before
[[ $parts == *" after "* ]] && bench after
[[ $parts == *" graphs "* ]] && SEQLAB_CUDA_GRAPHS=1 bench graphs
[[ $parts == *" minimal "* ]] && python3 benchmarks/minimal.py --device cuda 2>&1 | tee "$out/minimal.log"
exit 0
