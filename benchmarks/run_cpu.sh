#!/usr/bin/env bash
# CPU benchmark of the CroBIM-U uncertainty modules: the paper preset (random init), fp32, batch 1,
# one torch thread. About 25 minutes on a 2-core machine; run it with nothing else busy.
#
#   bash benchmarks/run_cpu.sh          # from the repository root; results/cpu.{json,md} (or $OUT)
#   bash benchmarks/run_cpu.sh --sections rows --repeats 4   # extra arguments go to benchmarks.latency
#
# Sections, each written as it finishes:
#   syncs          sync-prone ops and ops launched, one inference and one training step of Base and Full
#   rows           Base, +UGF, +UDLR, Full inference (16 interleaved rounds, alternating order) and the
#                  Base and Full training step (6 rounds); memory, FLOPs, parameters
#   modules        RUS / UGF / UDLR / OnlineErrorLoss alone at 320-800 px (12 rounds)
#   compile        torch.compile (inductor) of Full and Base: graph breaks, compile time, eager vs
#                  compiled (10 rounds), steady-state throughput
#   channels_last  Base and Full with channels_last model and input
#   decoders       Base vs Full around LAVT's SimpleDecoding, lavt recipe
# then results/cpu_launches.{json,md}: the syncs section once more under bf16 autocast, the precision of
# the GPU run (ops launched per step, Full vs Base; about a minute).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
PY="${PYTHON:-python}"

"$PY" -m benchmarks.latency --device cpu --threads 1 --preset paper --dtype fp32 --batch-sizes 1 \
  --image-sizes 320,480,640,800 --main-size 480 --warmup 1 --repeats 16 --train-repeats 6 --module-repeats 12 \
  --queued-seconds 20 --sections syncs,rows,modules,compile,channels_last,decoders --tag cpu "$@"
"$PY" -m benchmarks.latency --device cpu --threads 1 --preset paper --dtype bf16 --batch-sizes 1 \
  --image-sizes 480 --main-size 480 --variants Base,Full --sections syncs --tag cpu_launches "$@"
