#!/usr/bin/env bash
# Issue 15's CUDA targets in one run, written for one H200 with torch 2.11+cu130 and no internet
# (never run yet: no GPU was lent to this work; every part has a time limit, 570 s in all, so the
# whole script ends within 9.5 minutes; the last part, the fp32 demo, gets what is left, up to
# 75 s, and is skipped under 45 s). From the repository root:
#
#     OUT=/some/folder bash bench/gpu_check.sh
#
# It writes to $OUT (default bench/results/gpu): env.txt; tests.txt (masked execution on CUDA
# equals sliced execution, the CUDA tests); supernet_cost.txt/.json (steady-state step times:
# plain full model, min-min r=0, r=1 f=0.25, r=1 f=1, sliced r=0, bf16 + channels-last,
# scoring; r=1 with the candidates probed in one forward and chosen on the device, the CUDA
# default, against one forward each and the host choosing: "batched / each"); demo-bf16.txt
# and demo-fp32.txt (`make demo`'s command on CUDA; the issue's "today" is 122 s with
# --device cuda at f3585b4); search_cost.txt (scoring on CUDA); compile.txt/.json (--compile
# on against off: r=0, r=1 f=0.25, resnet18 then mobilenet_v2, batch 128, after fresh widths,
# graphs compiled per step, the compiled step checked against eager); parts.md (exit status and
# wall time of each part) and summary.md, rewritten after every part. A part that fails or runs
# out of time is reported and the others still run.
set -u
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} ORT_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
START=$SECONDS

part() {  # part NAME LIMIT_SECONDS COMMAND...: run, time, and record the exit status
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "| $name | $rc | $((SECONDS - t0)) s |" >>"$OUT/parts.md"
  return $rc
}

summarize() {
  {
    echo "# issue 15 on $(head -2 "$OUT/env.txt" | tail -1)"
    echo
    cat "$OUT/parts.md"
    echo
    echo "demo: make demo's command with --device cuda (today, at f3585b4: 122 s; target with"
    echo "--amp bf16: at most 61 s): the wall column of demo-bf16 and demo-fp32 above."
    echo
    sed -n '/| target/,$p' "$OUT/supernet_cost.txt" 2>/dev/null
    grep "^candidates probed in one forward" "$OUT/supernet_cost.txt" 2>/dev/null
    echo
    grep -E "^- (score|slim|ratio)" "$OUT/search_cost.txt" 2>/dev/null
    echo
    sed -n '/^### /,$p' "$OUT/compile.txt" 2>/dev/null
    tail -3 "$OUT/tests.txt" 2>/dev/null
    echo
    echo "total so far $((SECONDS - START)) s"
  } >"$OUT/summary.md"
}

echo "| part | exit | wall |" >"$OUT/parts.md"
echo "|---|---:|---:|" >>"$OUT/parts.md"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  git log -1 --oneline 2>/dev/null
} >"$OUT/env.txt"
part install 20 $PY -m pip install -q --no-index --no-deps --no-build-isolation -e .

# 1. correctness on CUDA: masked (auto) equals sliced, batched probes (auto) equal one forward
# each; the CUDA tests of the supernet
part tests 80 $PY -m pytest -q -p no:cacheprovider tests/test_masked.py \
  tests/test_supernet.py::test_cuda_matches_slim tests/test_precision.py \
  tests/test_stacked.py::test_batched_probes_on_cuda_choose_and_train_as_each
summarize

# 2. the step-cost protocol (resnet18, then mobilenet_v2, batch 128, 500 fresh widths first)
part supernet_cost 245 $PY bench/supernet_cost.py --device cuda --models resnet18,mobilenet_v2 \
  --json "$OUT/supernet_cost.json"
summarize

# 3. the demo on CUDA with bf16 (target: at most 61 s, half of today's 122 s). The 122 s were
# measured with the paper's scoring, the default then: it is pinned here (bench/plain.py
# PAPER_SCORING), so the part measures what issue 15 set the target on.
DEMO="examples/mobilenet_digits.py --data digits --flops 50%,25% --epochs 30 --retrain-epochs 30
      --population 16 --generations 10 --calib-batches 4 --device cuda --score metric --score-epochs 0"
RUNS=$(mktemp -d)
part demo-bf16 80 $PY -m widthc slim $DEMO --amp bf16 --out "$RUNS/bf16" --force
cp "$RUNS/bf16/report.md" "$OUT/demo-bf16-report.md" 2>/dev/null
summarize

# 4. scoring on CUDA (bench/search_cost.py)
part search_cost 40 $PY bench/search_cost.py --device cuda --quick --part scoring
summarize

# 5. --compile on against off (torch.compile, CUDA graphs): the first step compiles, then 40
# fresh widths, then 30 timed steps; resnet18 first, figures written after every configuration
part compile 105 $PY bench/supernet_compile.py --device cuda --models resnet18,mobilenet_v2 \
  --batch 128 --warmup 40 --steps 30 --json "$OUT/compile.json"
summarize

# 6. the demo in fp32 (masked execution), in the time left
LEFT=$((570 - (SECONDS - START)))
if [ "$LEFT" -ge 45 ]; then
  part demo-fp32 $((LEFT < 75 ? LEFT : 75)) $PY -m widthc slim $DEMO --out "$RUNS/fp32" --force
else
  echo "| demo-fp32 | skipped: $LEFT s left |  |" >>"$OUT/parts.md"
fi
rm -rf "$RUNS"
summarize
cat "$OUT/summary.md"
