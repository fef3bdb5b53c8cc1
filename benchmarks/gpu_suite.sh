#!/usr/bin/env bash
# The one call a GPU session makes (about 8 minutes on one H100/H200), from the repository root:
#
#   bash benchmarks/gpu_suite.sh [--out DIR] [--budget SECONDS] [--only REGEX]
#   bash benchmarks/gpu_suite.sh --rehearse-cpu [--out DIR]     # every step on CPU, tiny shapes, a few minutes
#
# Steps, in priority order (a step that would start after the time budget is skipped and listed as such):
#  1. env: which of flashrnn / mlstm_kernels import; if one does not and a .whl/ folder (git-ignored, carried
#     with the tree) holds wheels, they are installed from it (pip --no-index); else the suite runs without those
#     backends (their rows say "unavailable") and says so.
#  2. check-kernels on the device: every backend (ours, flashrnn-*, mlstm_kernels-*) vs the math reference, fp32,
#     bf16, fp16, forward and gradients (flashrnn-cuda separately at the end: it compiles CUDA code per shape).
#  3. `lstmvision memory` at 224 and 448 (Sequencer2D-S, ViL-T/S, DeiT-S).
#  4. throughput, bf16, batch 128 then 256, infer and train: Sequencer2D-S with every rnn2d backend, ViL-T and
#     ViL-S with every mLSTM backend, all in one process per (model, mode, batch) with the runs interleaved,
#     against the official formulation (`ref:NAME` as in `lstmvision benchmark`: nn.LSTM modules on cuDNN and
#     the official `parallel` mLSTM form), timm's sequencer2d_s, and DeiT-S (timm:deit_small_patch16_224) as the anchor.
#  5. the per-layer rnn2d timing (benchmarks/rnn2d_layer.py); 6. flashrnn-cuda (it compiles CUDA code): check
#     and Sequencer2D-S at batch 128.
# Every JSON carries the command, the device and the versions; the paths are printed at the end.
# Default output: benchmarks/results/gpu-suite/ (a GPU session's device call: --out "$OUT"/gpu-suite).
# A second call can finish what the budget skipped, e.g. --only 'bs256|flashrnn-cuda'.
# Exit status: 0 when every step that ran is ok, 1 when one failed or timed out (the summary says which).
set -uo pipefail  # no -e: a failed step is recorded and the suite goes on
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}

REHEARSE=0; RESULTS=""; BUDGET=""; ONLY=""
while (($#)); do
  case $1 in
    --rehearse-cpu) REHEARSE=1 ;;
    --out) RESULTS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if ((REHEARSE)); then
  DEVICE=cpu; PREC=bf16; BATCHES="2"; IMG=32; MEM_SIZES="32 64"; MEM_BS=2; MEM_EXTRA="--no-throughput"
  WARMUP=0; ITERS=1; REPEATS=1; BUDGET=${BUDGET:-600}  # the first call (logits check) warms up
  SEQ=sequencer2d_tiny; VILS="vil_tiny"; LAYER_BS=1; VIL_KW='{"depth": 2}'  # ViL-T narrowed to 2 blocks
  RESULTS=${RESULTS:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite-rehearsal.XXXXXX")}
else
  DEVICE=cuda; PREC=bf16; BATCHES="128 256"; IMG=224; MEM_SIZES="224 448"; MEM_BS=16; MEM_EXTRA=""
  WARMUP=2; ITERS=5; REPEATS=3; BUDGET=${BUDGET:-450}
  SEQ=sequencer2d_s; VILS="vil_tiny vil_small"; LAYER_BS=128; VIL_KW='{}'
  RESULTS=${RESULTS:-benchmarks/results/gpu-suite}
fi
RNN_BACKENDS=fused,triton,flashrnn-vanilla_fwbw,flashrnn-triton,flashrnn-vanilla  # + ref: = module (cuDNN)
MLSTM_BACKENDS=$($PY -c "from lstmvision.constants import MLSTM_BACKENDS as B; print(','.join(b for b in B if b not in ('auto', 'recurrent')))")
ANCHOR=timm:deit_small_patch16_224
TIMM_SEQ=timm:sequencer2d_s  # timm has no tiny Sequencer: the rehearsal measures the small one at its tiny size
mkdir -p "$RESULTS/logs" "$RESULTS/_suite"
SUITE_CMD="bash benchmarks/gpu_suite.sh$( ((REHEARSE)) && echo ' --rehearse-cpu')"
START=$SECONDS
SUMMARY=()

step() {  # step NAME LIMIT_S COMMAND...: run under a time limit unless the budget is spent or --only excludes it
  local name=$1 limit=$2; shift 2
  if [[ -n $ONLY && ! $name =~ $ONLY ]]; then return 0; fi
  local left=$((BUDGET - (SECONDS - START)))
  if ((left < 15)); then
    SUMMARY+=("$name: SKIPPED (time budget of ${BUDGET}s spent; rerun with --only '$name')")
    echo "== $name: skipped, budget spent"; return 0
  fi
  ((limit > left)) && limit=$left
  echo "== $name (limit ${limit}s, ${left}s of the budget left)"
  local t0=$SECONDS rc status
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$RESULTS/logs/$name.log"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit}s (partial results may be in its JSON)" ;;
    *) status="FAILED (exit $rc, see logs/$name.log)" ;;
  esac
  SUMMARY+=("$name: $status, $((SECONDS - t0))s")
}

# ------------------------------------------------------------------------------------------- helpers (Python)
cat > "$RESULTS/_suite/env.py" <<'PYEOF'
"""Versions, device and which opt-in kernel libraries import: env.json."""
import json, platform, subprocess, sys
import torch
from lstmvision.device import device_name
from lstmvision.ops import _flashrnn, _mlstm_kernels
from lstmvision.device import versions
out = dict(command=sys.argv[2], python=sys.executable, platform=platform.platform(), versions=versions(),
           cuda_available=torch.cuda.is_available(),
           device=device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
           flashrnn_imports=_flashrnn.available(), mlstm_kernels_imports=_mlstm_kernels.available())
try:
    out["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
except Exception as e:
    out["nvidia_smi"] = f"unavailable: {e}"
json.dump(out, open(sys.argv[1], "w"), indent=2)
print(json.dumps({k: v for k, v in out.items() if k != "nvidia_smi"}, indent=2))
PYEOF

cat > "$RESULTS/_suite/annotate.py" <<'PYEOF'
"""Adds the suite's command line, device and versions to a JSON written by a command that records fewer."""
import json, sys
import torch
from lstmvision.device import device_name
from lstmvision.device import versions
path, command, device = sys.argv[1:4]
data = json.load(open(path))
data["suite"] = dict(command=command, device=device_name(torch.device(device)), versions=versions())
json.dump(data, open(path, "w"), indent=2)
PYEOF

cat > "$RESULTS/_suite/bench_backends.py" <<'PYEOF'
"""Every backend of one model in one process against baselines, runs interleaved (benchmarks/gpu_suite.sh).

Procedure as `lstmvision benchmark` (warm-up, then rounds of timed iterations per entry, median; inference under
no_grad in eval mode, training = forward, cross-entropy, backward, SGD step; autocast for bf16/fp16). The
backend entries and `ref:` share one model (one set of weights); `ref:NAME` runs as `lstmvision benchmark`
defines it (its `kernels_ctx("module")`: nn.LSTM modules, the official `parallel` mLSTM form). Logits of every backend
are compared with ref: (heads randomised first: they start at zero), and timm models get the same weights when
their layout matches. A backend that cannot run on the device is listed as unavailable; one that fails, with
its error. The JSON is rewritten after every phase, so a run stopped by its time limit keeps what it measured.
"""
import argparse, contextlib, json, statistics, sys, time
import torch
from lstmvision.commands.benchmark import DTYPES, kernels_ctx, make_step, randomise_head, share_weights
from lstmvision.device import device_name, resolve_device, time_steps
from lstmvision.models.loading import create_model
from lstmvision.ops import _flashrnn, _mlstm_kernels, use_backend
from lstmvision.ops._triton_common import can_run
from lstmvision.device import versions

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--model-kwargs", default="{}", help="JSON: architecture overrides (the rehearsal's narrow ViL)")
p.add_argument("--op", choices=["rnn2d", "mlstm"], required=True)
p.add_argument("--backends", required=True, help="comma-separated")
p.add_argument("--compare", action="append", default=[])
p.add_argument("--mode", choices=["infer", "train"], default="infer")
p.add_argument("--batch-size", type=int, default=8)
p.add_argument("--img-size", type=int, default=224)
p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="bf16")
p.add_argument("--device", default="cuda")
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--suite-command", default="")
p.add_argument("--json", required=True)
a = p.parse_args()
dev = resolve_device(a.device)
amp_dtype = DTYPES[a.precision]


def amp():
    return torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()


def why_not(backend):
    if backend in _flashrnn.BACKENDS:
        return _flashrnn.unavailable_reason(backend, dev)
    if backend in _mlstm_kernels.BACKENDS:
        return _mlstm_kernels.unavailable_reason(backend, dev)
    if backend == "triton" and not can_run(dev):
        return "needs CUDA and Triton (elsewhere rnn2d would silently run fused)"
    return ""


torch.manual_seed(0)
ours = create_model(a.model, **json.loads(a.model_kwargs))
randomise_head(ours)  # heads start at zero (official init): random ones make logits comparable
entries = []  # dict(label, backend, model, ctx, kind)
for b in a.backends.split(","):
    ctx = (lambda b=b: use_backend(rnn2d=b)) if a.op == "rnn2d" else (lambda b=b: use_backend(mlstm=b))
    entries.append(dict(label=f"{a.model}@{b}", backend=b, model=ours, ctx=ctx, kind="backend", why=why_not(b)))
for spec in a.compare:
    if spec.startswith("ref:"):
        entries.append(dict(label=spec, backend="ref", model=ours, ctx=lambda: kernels_ctx("module"), kind="baseline",
                            why=""))
    else:
        m = create_model(spec, img_size=a.img_size)
        entries.append(dict(label=spec, backend=None, model=m, ctx=contextlib.nullcontext, kind="baseline", why="",
                            shared_weights=share_weights(ours, m)))
models = {id(e["model"]): e["model"] for e in entries}
for m in models.values():
    m.to(dev).train(a.mode == "train")
x = torch.randn(a.batch_size, 3, a.img_size, a.img_size, device=dev)
report = dict(command=a.suite_command + " | " + " ".join([sys.executable, *sys.argv]), device=device_name(dev),
              versions=versions(), settings={k: v for k, v in vars(a).items() if k not in ("json", "suite_command")},
              results=[], notes="")


def save():
    report["results"] = [{k: v for k, v in e.items() if k not in ("model", "ctx", "step")} for e in entries]
    base = [e for e in entries if e["kind"] == "baseline" and "img_per_s" in e]
    report["ratios"] = {f"{e['label']} / {b['label']}": round(e["img_per_s"] / b["img_per_s"], 3)
                        for e in entries if e["kind"] == "backend" and "img_per_s" in e for b in base}
    with open(a.json, "w") as f:
        json.dump(report, f, indent=2)


def fail(e, phase, err):
    e["status"] = f"error in {phase}: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    print(e["label"], e["status"], flush=True)


for e in entries:
    if e["why"]:
        e["status"] = "unavailable: " + e["why"]
        print(e["label"], e["status"], flush=True)
save()
live = [e for e in entries if not e["why"]]
# logits against ref: (same weights) and the first run of every kernel (compiles, autotunes)
ref = next((e for e in live if e["backend"] == "ref"), None)
with torch.no_grad():
    was_training = {i: m.training for i, m in models.items()}
    for m in models.values():
        m.eval()
    outs = {}
    for e in live:
        try:
            t0 = time.perf_counter()
            with e["ctx"](), amp():
                outs[e["label"]] = e["model"](x).float()
            e["first_call_s"] = round(time.perf_counter() - t0, 2)
        except Exception as err:
            fail(e, "first call", err)
    for i, m in models.items():
        m.train(was_training[i])
    if ref is not None and ref["label"] in outs:
        for e in live:
            if e is not ref and e["label"] in outs and (e["model"] is ours or e.get("shared_weights")):
                e["max_abs_logit_diff_vs_ref"] = float((outs[e["label"]] - outs[ref["label"]]).abs().max())
live = [e for e in live if "status" not in e]
save()


for e in list(live):
    try:
        e["step"] = make_step(e["model"], x, a.precision, a.mode, False, dev, e["ctx"])
        time_steps(e["step"], a.warmup, dev)
    except Exception as err:
        fail(e, "warm-up", err)
        live.remove(e)
save()
for _ in range(a.repeats):
    for e in list(live):
        try:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            sec = time_steps(e["step"], a.iters, dev)
        except Exception as err:
            fail(e, "timing", err)
            live.remove(e)
            continue
        e.setdefault("runs_s", []).append(sec)
        if dev.type == "cuda":
            e["peak_mem_mib"] = max(e.get("peak_mem_mib", 0), torch.cuda.max_memory_allocated(dev) // 2**20)
        med = statistics.median(e["runs_s"])
        e.update(status="ok", img_per_s=round(a.batch_size * a.iters / med, 2), ms_per_iter=round(med / a.iters * 1e3, 2))
    save()
for e in entries:
    print(f"{e['label']:48} {e.get('img_per_s', '-'):>10} img/s  {e.get('status', '')}"
          f"{'  logits vs ref: %.3g' % e['max_abs_logit_diff_vs_ref'] if 'max_abs_logit_diff_vs_ref' in e else ''}")
for k, v in report["ratios"].items():
    print(f"ratio {k}: {v:.3f}x")
print("wrote", a.json)
sys.exit(1 if any(e.get("status", "").startswith("error") for e in entries) else 0)
PYEOF

# ------------------------------------------------------------------------------------------------ 1. env
echo "gpu_suite: device=$DEVICE results=$RESULTS budget=${BUDGET}s rehearse=$REHEARSE"
for pkg in flashrnn mlstm_kernels; do
  if $PY -c "import $pkg" >/dev/null 2>&1; then
    echo "$pkg: imports ($($PY -c "from importlib.metadata import version; print(version('$pkg'))" 2>/dev/null))"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    echo "$pkg: missing; installing from .whl/"
    $PY -m pip install -q --no-index --find-links .whl "$pkg" \
      || $PY -m pip install -q --no-index --no-deps --find-links .whl "$pkg" \
      || echo "$pkg: pip install from .whl/ failed"
    $PY -c "import $pkg" >/dev/null 2>&1 && echo "$pkg: installed from .whl/" \
      || echo "$pkg: NOT AVAILABLE: its backends are skipped (unavailable rows / entries)"
  else
    echo "$pkg: NOT AVAILABLE (not installed, no .whl/ folder): its backends are skipped (unavailable rows / entries)"
  fi
done
step env 60 $PY "$RESULTS/_suite/env.py" "$RESULTS/env.json" "$SUITE_CMD"

# ------------------------------------------------------------------------------------- 2. check-kernels
CK_BACKENDS=$($PY -c "from lstmvision.ops.check import backend_names; print(' '.join('--backend ' + b for b in backend_names() if b != 'flashrnn-cuda'))")
# shellcheck disable=SC2086  # word splitting of the --backend list is intended
step check-kernels 150 $PY -m lstmvision check-kernels --device "$DEVICE" $CK_BACKENDS --json "$RESULTS/check-kernels.json"

# ------------------------------------------------------------------------------ 3. memory at 224 and 448
# shellcheck disable=SC2086  # word splitting of the size and model lists is intended
step memory 90 $PY -m lstmvision memory --model "$SEQ" $VILS "$ANCHOR" --sizes $MEM_SIZES -b "$MEM_BS" \
  --warmup 1 --iters 2 --repeats 1 --device "$DEVICE" $MEM_EXTRA -o "$RESULTS/memory"
[[ -f $RESULTS/memory/memory.json ]] && $PY "$RESULTS/_suite/annotate.py" "$RESULTS/memory/memory.json" \
  "$SUITE_CMD (step memory)" "$DEVICE"

# ---------------------------------------------------------------------------------------- 4. throughput
bench() {  # bench STEP LIMIT MODEL OP BACKENDS MODE BS COMPARE...
  local name=$1 limit=$2 model=$3 op=$4 backends=$5 mode=$6 bs=$7; shift 7
  local cmp=() c kw='{}'
  for c in "$@"; do cmp+=(--compare "$c"); done
  [[ $op == mlstm ]] && kw=$VIL_KW
  step "$name" "$limit" $PY "$RESULTS/_suite/bench_backends.py" --model "$model" --model-kwargs "$kw" --op "$op" \
    --backends "$backends" "${cmp[@]}" --mode "$mode" --batch-size "$bs" --img-size "$IMG" --precision "$PREC" \
    --device "$DEVICE" --warmup "$WARMUP" --iters "$ITERS" --repeats "$REPEATS" --suite-command "$SUITE_CMD" \
    --json "$RESULTS/$name.json"
}
for BS in $BATCHES; do
  for MODE in infer train; do
    bench "$SEQ-$MODE-$PREC-bs$BS" 120 "$SEQ" rnn2d "$RNN_BACKENDS" "$MODE" "$BS" "ref:$SEQ" "$TIMM_SEQ" "$ANCHOR"
  done
  for M in $VILS; do
    for MODE in infer train; do
      bench "$M-$MODE-$PREC-bs$BS" 120 "$M" mlstm "$MLSTM_BACKENDS" "$MODE" "$BS" "ref:$M" "$ANCHOR"
    done
  done
done

# --------------------------------------------------------------------- 5. per-layer rnn2d (sequencer2d_s shapes)
if ((REHEARSE)); then LAYER_BACKENDS="module fused flashrnn-vanilla_fwbw"; else
  LAYER_BACKENDS="module fused triton flashrnn-vanilla_fwbw flashrnn-triton"; fi
if ! $PY -c "import flashrnn" >/dev/null 2>&1; then  # the per-layer script times every backend it is given
  LAYER_BACKENDS=$(tr ' ' '\n' <<<"$LAYER_BACKENDS" | grep -v '^flashrnn-' | tr '\n' ' ')
  echo "rnn2d-layer: flashrnn not available: its backends are left out"
fi
for MODE in infer train; do
  # shellcheck disable=SC2086
  step "rnn2d-layer-$MODE" 90 $PY benchmarks/rnn2d_layer.py --device "$DEVICE" --batch-size "$LAYER_BS" \
    --iters "$ITERS" --repeats "$REPEATS" --mode "$MODE" --backends $LAYER_BACKENDS \
    --json "$RESULTS/rnn2d-layer-$MODE.json"
  [[ -f $RESULTS/rnn2d-layer-$MODE.json ]] && $PY "$RESULTS/_suite/annotate.py" "$RESULTS/rnn2d-layer-$MODE.json" \
    "$SUITE_CMD (step rnn2d-layer-$MODE)" "$DEVICE"
done

# ----------------------------------------------- 6. flashrnn-cuda: compiles CUDA code (nvcc) per shape and dtype
# Last: each new (hidden size, heads, batch, dtype) compiles FlashRNN's kernels. bf16 only in check-kernels (its
# problems need 4 compilations per dtype). On CPU (rehearsal) these steps run and report it as unavailable.
step check-kernels-flashrnn-cuda 150 $PY -m lstmvision check-kernels --device "$DEVICE" --backend flashrnn-cuda \
  --dtype bf16 --json "$RESULTS/check-kernels-flashrnn-cuda.json"
for MODE in infer train; do
  BS=${BATCHES%% *}
  bench "$SEQ-$MODE-$PREC-bs$BS-flashrnn-cuda" 150 "$SEQ" rnn2d flashrnn-cuda,fused "$MODE" "$BS" "ref:$SEQ" "$TIMM_SEQ"
done

# ------------------------------------------------------------------------------------------------- summary
echo
echo "== gpu_suite summary ($((SECONDS - START))s of ${BUDGET}s; results in $RESULTS)"
printf '  %s\n' "${SUMMARY[@]}"
echo "JSON written:"
find "$RESULTS" -name '*.json' -not -path '*/_suite/*' | sort | sed 's/^/  /'
for line in "${SUMMARY[@]}"; do [[ $line == *": FAILED"* || $line == *": TIMEOUT"* ]] && exit 1; done
exit 0
