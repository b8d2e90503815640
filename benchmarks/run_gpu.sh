#!/usr/bin/env bash
# GPU benchmark of the CroBIM-U uncertainty modules, sized for one H100 / H200 in about 7.5 minutes.
#
#   bash benchmarks/run_gpu.sh            # from the repository root; results in $OUT or benchmarks/results
#   bash benchmarks/run_gpu.sh --sections compile,channels_last   # extra arguments go to benchmarks.latency
#   BENCH_SMOKE=1 bash benchmarks/run_gpu.sh   # the same logic on CPU with the micro model (a few minutes)
#
# Needs only torch, timm, transformers and einops; runs the package from source (PYTHONPATH),
# downloads nothing (random-init encoders), installs nothing. Sections, in priority order; gpu.json and
# gpu.md are rewritten as each one finishes (a time-out keeps what finished; compile and training also
# keep their finished parts):
#   1 syncs          host-device synchronisations of Base and Full (set_sync_debug_mode), ops launched
#   2 rows           Base and Full: bf16 autocast, batch 8, 480 px, inference + training step, at least
#                    30 interleaved rounds each (paired ratio with a bootstrap 95 % interval), memory, FLOPs
#   3 compile        torch.compile (inductor, static shapes) of Full, then Base, at batch 32: fullgraph=True?,
#                    compile time; eager and compiled timed interleaved; steady-state throughput (calls
#                    queued back to back, one synchronisation at the end): the 600 images/s goal
#   4 training       training throughput at batch 32 and the largest batch that fits, eager then compiled
#   5 cudagraphs     the compile section in mode="reduce-overhead" (CUDA graphs)
#   6 decoders       Base vs Full around LAVT's SimpleDecoding, lavt recipe
#   7 batch          Base vs Full at batch 32, eager (latency, queued throughput, training step)
#   8 channels_last  Base vs Full with channels_last model and input
#   9 modules        RUS / UGF / UDLR / OnlineErrorLoss alone, bf16 and fp32, batch 8, 320-800 px
#  10 sweep          Base vs Full inference at 320 / 640 / 800 px (480 comes from the rows)
# A section starts only with >= 60 s of the budget left; a compile only with >= 100 s left.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python}"

BUDGET="${BENCH_BUDGET_S:-400}"   # seconds for the Python run (imports excluded)
HARD_LIMIT=$((BUDGET + 40))       # hard stop: SIGINT, then SIGKILL 10 s later

echo "[$(date +%T)] run_gpu.sh: budget ${BUDGET} s, results in ${OUT:-benchmarks/results}"
if [[ "${BENCH_SMOKE:-0}" == "1" ]]; then
  ARGS=(--device cpu --preset micro --threads 1 --dtype fp32,bf16 --batch-sizes 2,4 --main-batch 2
        --image-sizes 64,96 --main-size 64 --warmup 1 --repeats 2 --min-repeats 2 --compile-backend eager
        --compile-mode default --compile-min-seconds 5 --min-section-seconds 5 --queued-seconds 1
        --memory-limit-gib 0.02 --tag gpu_smoke)
else
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch, timm, transformers, einops; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0), '| timm', timm.__version__, \
'| transformers', transformers.__version__, '| einops', einops.__version__)"
  ARGS=(--device cuda --dtype bf16,fp32 --batch-sizes 8,32 --main-batch 8 --compile-batch 32
        --image-sizes 480,320,640,800 --main-size 480 --variants Base,Full --warmup 5 --repeats 30
        --min-repeats 30 --max-seconds 4 --compile-min-seconds 100 --compile-mode default --queued-seconds 3
        --tag gpu)
fi

status=0
timeout --signal=INT --kill-after=10 "$HARD_LIMIT" \
  "$PY" -m benchmarks.latency "${ARGS[@]}" --sections syncs,rows,compile,training,cudagraphs,decoders,batch,channels_last,modules,sweep \
  --time-budget "$BUDGET" "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "[$(date +%T)] benchmark exited with status $status; the sections finished before that are saved."
fi
echo "[$(date +%T)] run_gpu.sh done"
ls -l "${OUT:-benchmarks/results}" | grep -E "gpu" || true
exit $status
