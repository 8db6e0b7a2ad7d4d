#!/usr/bin/env bash
# The GPU figures of issues 9, 10, 13 and 14, in three phases on one machine with 2 H200s
# (the device tool's `nvidia-h200-x2`; each phase fits one 10-minute call, the phases run
# back to back on the same warm machine: /tmp survives between them).
#
#   phase 1 (carry .whl/lib .cifar):   wheels, CIFAR-10 JPEG copy; GPU 0 alone: the default
#            Hessian analysis before/after (bench_hessian_analysis); GPU 1 meanwhile:
#            pytest -m gpu (one-GPU tests), then every product candidate (bench_hvp) at the
#            ResNet-18 checkpoint that GPU 0's bench trained
#   phase 2 (carry .whl/ray-bundle):   study A of runs/grid.toml (seed 0, 12 epochs, -j 4 over
#            both GPUs) with the two-GPU tests beside it; then its curvature table and the
#            grid-cost estimate from its timings
#   phase 3:                           one Hessian over 50,000 images on 2 GPUs (and 5,000 on
#            1 vs 2), a 41x41 surface on 1 vs 2 GPUs, 8 CIFAR runs on Ray (1 vs 2 GPUs)
#
#   phase 4 (carry .whl/lib .cifar):   wheels and data if missing; the GPU surface tests;
#            a 41x41 surface on 1 vs 2 GPUs (channels-last, then contiguous)
#   phase 5:                           study A as in phase 2, in the foreground (no Ray)
#   phase 6:                           analyze-all of study A (whatever phase 5 left), its
#            curvature table and the grid-cost estimate
#   phase 7 (carry .whl/lib .cifar):   issue 14's Hessian targets: GPU 0 alone, the default
#            analysis of study A's ResNet-18 and ViT patch 4 (4 epochs), 3 runs in one process
#            (auto's trials in the first); GPU 1 (if there is one) meanwhile: the Hessian GPU
#            tests, then every product candidate at initialization on 512 CIFAR images
#   phase 8 (after 7, same machine):   every product candidate at phase 7's ResNet-18 checkpoint,
#            on the analysis' own 512 images
#
#   phase 9 (carry .whl/lib .cifar):   GPU 0: study A's ResNet-18 (4 epochs) and its default
#            Hessian analysis, then every product candidate at that checkpoint, TF32 and float32,
#            each top-5's residuals under its own and under float32 products; GPU 1 meanwhile:
#            the channels-last and compiled candidates at initialization
#   phase 10:                          the GPU surface tests; a 41x41 surface on 1 vs 2 GPUs;
#            study A's ResNet-18 (4 epochs) and its analysis, then the compiled product
#            candidates at that checkpoint (issue 14's product target)
#
#   phase 11 (carry .whl/lib .cifar):  phase 4 again
#   phase 12 (carry .whl/lib .cifar; one GPU is enough): the Hessian GPU tests, then issue 14's
#            analysis targets as in phase 7 (ResNet-18 and ViT patch 4, 3 analyses each), then
#            what 3, 4 and 8 columns per call cost (bench_hvp_shapes)
#   phase 13 (carry .whl/lib .cifar; one GPU): the Hessian GPU tests (the compiled product's
#            included)
#
#   phases 16 and 17: last round's issue 14 targets, now phases 21 and 22 (phase 16's AOT=1
#            probe: python3 bench/probe_aot_compile.py save|load, as its docstring says)
#   phase 18 (carry .whl/lib .cifar; one GPU): where a new process' first analysis goes: the
#            ResNet-18 with hvp_mode "compile" (no trials) in 3 processes: the 1st compiles
#            cold; the 2nd and 3rd start from Inductor's on-disk cache, the 3rd with cuDNN's
#            autotuner off (2 analyses each: the first of a process, then its steady state)
#
#   phase 19 (carry .whl/lib .cifar; one GPU): where the ResNet-18's steady analysis spends
#            what is not products: the analysis on a free (diagonal) operator, each part's own
#            work (bench_analysis_overhead), then study A's ResNet-18 with hvp_mode "compile"
#            (1st compiles cold, then 2 steady) with each part's product GPU time
#            (--product-times), then the compiled product's micro-batches (4x4k against 4x2k)
#
#   phase 20 (carry .whl/lib .cifar; one GPU): study A's ResNet-18 with hvp_mode "compile" in
#            two processes, the compiled product over quarter batches (--compiled-split 4), then
#            over half batches (--compiled-split 2), each compiling cold, then 2 steady
#            (--product-times); the GPU test of the eigenvectors' host copy
#
#   phase 21 (carry .whl/lib .cifar; one GPU): issue 14's target for the ResNet-18 on a fresh
#            machine: 4 analyses in one process (1st: auto's trials; 2nd: the compiled
#            product's trial; then steady), then 2 in a new process (it starts from the choice
#            the first process saved, compiled again at once from Inductor's on-disk cache: its
#            1st is a lone `analyze` on a machine that has analysed the architecture before),
#            each with its parts' product GPU time; then the product auto compiles
#            (compile x4 /2) against the float32 reference (bench_hvp)
#   phase 22 (after 21, same machine): the ViT patch 4's 4 analyses in one process, then the
#            Hessian GPU tests
#
#   phase 23 (carry .whl/lib .cifar; one GPU): a new process' first analysis: the device
#            torch's ahead-of-time compile sources (to $OUT/torch), study A's ResNet-18 with
#            hvp_mode "compile" (cold, then steady), the product compiled ahead of time and
#            loaded in a new process (probe_aot_compile.py), then a new process' first
#            analysis profiled (Inductor's cache warm)
#
#   phase 24 (carry .whl/lib .cifar; one GPU): issue 14's target for a lone analysis, ResNet-18,
#            on a fresh machine, hvp_mode "auto": a 1st process with 2 analyses (auto's trials,
#            then the compiled product's trial, compiled ahead of time and saved); a 2nd process
#            with 2 (the 1st loads the saved product), each with its stages and product times;
#            then a lone `analyze` from the command line (another sample seed: not a stored
#            result), timed whole (run at d11a71d to 0c655f0, when a process' 1st analysis ran
#            without cuDNN's autotuner: reverted, see analysis.tf32)
#            then the Hessian GPU tests
#   phase 25 (after 24, same machine): the same for the ViT patch 4
#
#   phase 26 (carry .whl/lib .cifar; one GPU): the final code's lone ResNet-18 analysis on a
#            fresh machine: a 1st process with 2 analyses (trials, then the compiled product,
#            compiled ahead of time and saved); later processes with 2 analyses each (the 1st
#            loads the saved product): cuDNN's autotuner as it is (every custom operator's
#            registration timed), then timing at most 3 plans per new shape
#            (--cudnn-benchmark-limit 3); then a lone `analyze` from the command line, timed
#   phase 27 (after 26, same machine): a later process with --cudnn-benchmark-limit 1 (the
#            heuristics' first plan: what the autotuning costs), a later process' first
#            analysis profiled (who calls the costliest functions); then phase 25 (ViT)
#            without its GPU tests
#
#   phase 28 (carry .whl/lib .cifar; one GPU): what a later process' first analysis spends on
#            Python's bytecode and Inductor's compile workers, ViT patch 4 on a fresh machine:
#            whether the device's torch has or writes bytecode; a 1st process (trials, then the
#            compiled product, saved); later processes with 1 analysis each: as it is;
#            TORCHINDUCTOR_COMPILE_THREADS=1 (kernels loaded in the process, no worker pool);
#            bytecode written to and read from a cache (PYTHONPYCACHEPREFIX: the 1st writes it);
#            both; then a lone `analyze` with both, timed
#   phase 29 (after 28, same machine): the same for the ResNet-18
#
#   bash bench/h200_session.sh 1      # results under $OUT (phase<N>.tgz plus the .txt logs)
set -u
PHASE=${1:?phase 1 to 29}
OUT=${OUT:-/tmp/h200-out}
RES=/tmp/h200-res/phase$PHASE
DATA=/tmp/cifar ROOT=/tmp/lsdata H=/tmp/hstore A=/tmp/studyA
mkdir -p "$OUT" "$RES" /tmp/site "$DATA"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD LANDSCAPE_CACHE=/tmp/landscape-cache
pack() { tar -czf "$OUT/phase$PHASE.tgz" -C "$RES" . 2>/dev/null; }
trap pack EXIT
step() {  # step NAME SECONDS CMD...: its output in $RES/NAME.txt and on stdout
  local name=$1 secs=$2; shift 2
  echo "=== $name ($(date +%T), limit ${secs}s)"
  timeout "$secs" "$@" > "$RES/$name.txt" 2>&1; local rc=$?
  tail -n 40 "$RES/$name.txt"; echo "=== $name rc=$rc"
}

setup() {  # wheels and the CIFAR-10 JPEG copy (carried as .whl/lib and .cifar)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/lib/*.whl || exit 1
  tar -xzf .cifar/cifar10-train.tar.gz -C $DATA && tar -xzf .cifar/cifar10-test.tar.gz -C $DATA || exit 1
  nvidia-smi -L
}
STUDY_A=(runs/grid.toml --study A-vit-sam --epochs 12 --set seed=0 --set dataset=folder
         --set "dataset_options={path=\"$DATA\"}" --store $A --data-root $ROOT --no-progress)
surfaces() {  # the GPU surface tests, then a 41x41 ResNet-18 surface on 1 vs 2 GPUs (channels-last)
  step pytest-surface 200 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py \
      tests/test_gpu_devices.py -k "surface or gpus"
  step surface-gpus 240 python3 bench/bench_surface_gpus.py --data-folder $DATA \
      --data-root $ROOT --json "$RES/surface.json"
}
run_id() {  # run_id PREFIX: the id of the run of store $H whose id starts with PREFIX
  python3 -c "from landscape_lib.store import Store
from landscape_lib.analyses.context import find_run
print(find_run(Store('$H'), '$1')['run_id'])" 2>/dev/null | tail -n 1
}
missing_hessians() {  # study A's done runs without a finished Hessian analysis
  python3 -c "from landscape_lib.store import Store
from landscape_lib.store.queries import hessian_study_table as t
t = t(Store('$A'), 'A-vit-sam')
print(' '.join(t[t.lambda_max.isna() & t.status.isin(['finished', 'diverged'])].run_id))"
}

HVP="auto,cached,graph,graph chlast,graph x4,graph x4 /4,graph x4 /4 chlast,graph x8 /8 chlast"
HVP="$HVP,graph x4 /2 chlast,graph /2 chlast,graph bf16"  # bench_hvp's candidates, phases 7-8

case $PHASE in
1)
  setup
  ( export CUDA_VISIBLE_DEVICES=1   # GPU 1: the one-GPU tests, then the products at a checkpoint
    timeout 240 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py tests/test_gpu_hessian.py \
        > "$RES/pytest-gpu.txt" 2>&1; echo "rc=$?" >> "$RES/pytest-gpu.txt"
    for _ in $(seq 1 60); do CKPT=$(find $H -path '*resnet18*/checkpoints/epoch_0004.pt' | head -n 1)
      [ -n "$CKPT" ] && break; sleep 5; done
    timeout 240 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT \
        ${CKPT:+--checkpoint "$CKPT"} --json "$RES/hvp.json" > "$RES/hvp.txt" 2>&1 ) &
  export CUDA_VISIBLE_DEVICES=0     # GPU 0 alone: the default Hessian analysis, before/after
  step hessian-analysis 430 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18,vit-p4 --json "$RES/hessian-analysis.json"
  wait; tail -n 25 "$RES/pytest-gpu.txt"; tail -n 30 "$RES/hvp.txt"
  ;;
2)
  tar -xJf .whl/ray-bundle/site-ray-grid-cp312.tar.xz -C /tmp/site || exit 1
  setsid python3 -m landscape_lib train-all runs/grid.toml --study A-vit-sam --epochs 12 \
      --set seed=0 --set dataset=folder --set "dataset_options={path=\"$DATA\"}" \
      --store $A --data-root $ROOT -j 4 --no-progress > "$RES/studyA.txt" 2>&1 < /dev/null &
  TRAIN=$!
  step pytest-gpu2 200 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu_devices.py
  for _ in $(seq 1 90); do kill -0 $TRAIN 2>/dev/null || break; sleep 5; done
  tail -n 20 "$RES/studyA.txt"
  step curvature-table 60 python3 bench/curvature_table.py --store $A --study A-vit-sam \
      --csv "$RES/studyA-curvature.csv"
  step grid-cost 60 python3 bench/grid_cost.py estimate runs/grid.toml --from-store $A \
      --alias folder=cifar10
  ;;
3)
  step hessian-multi 290 python3 bench/bench_hessian_multi.py --data-folder $DATA \
      --data-root $ROOT --store $H
  step surface-gpus 160 python3 bench/bench_surface_gpus.py --data-folder $DATA \
      --data-root $ROOT --json "$RES/surface.json"
  step ray-grid 150 python3 bench/bench_ray_grid.py --data-folder $DATA --data-root $ROOT \
      --variants BC --out /tmp/raygrid --logs "$RES/raygrid-logs" --json "$RES/raygrid.json"
  ;;
4|11)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  surfaces
  step surface-gpus-contiguous 200 python3 bench/bench_surface_gpus.py --data-folder $DATA \
      --data-root $ROOT --contiguous --no-processes --json "$RES/surface-contiguous.json"
  ;;
5)
  step studyA 560 python3 -m landscape_lib train-all "${STUDY_A[@]}" -j 4
  ;;
6)
  i=0
  for run in $(missing_hessians); do  # one process per run, alternating GPUs
    echo "=== analyze $run on GPU $((i % 2))"
    CUDA_VISIBLE_DEVICES=$((i % 2)) timeout 400 python3 -m landscape_lib analyze "$run" \
        --what hessian --store $A --data-root $ROOT --no-progress > "$RES/analyze-$run.txt" 2>&1 &
    i=$((i + 1))
  done
  wait
  step curvature-table 60 python3 bench/curvature_table.py --store $A --study A-vit-sam \
      --csv "$RES/studyA-curvature.csv"
  step grid-cost 60 python3 bench/grid_cost.py estimate runs/grid.toml --from-store $A \
      --alias folder=cifar10
  ;;
7)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  if [ "$(nvidia-smi -L | wc -l)" -gt 1 ]; then
    ( export CUDA_VISIBLE_DEVICES=1
      timeout 150 python3 -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu_hessian.py \
          > "$RES/pytest-gpu.txt" 2>&1; echo "rc=$?" >> "$RES/pytest-gpu.txt"
      timeout 300 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT --no-compile \
          --repeats 3 --candidates "$HVP" --json "$RES/hvp-init.json" > "$RES/hvp-init.txt" 2>&1 ) &
  fi
  export CUDA_VISIBLE_DEVICES=0
  step hessian-analysis 480 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18,vit-p4 --variants after --repeats 3 \
      --json "$RES/hessian-analysis.json"
  wait; tail -n 12 "$RES/pytest-gpu.txt" 2>/dev/null; tail -n 30 "$RES/hvp-init.txt" 2>/dev/null
  ;;
8)
  export CUDA_VISIBLE_DEVICES=0
  step hvp-checkpoint 500 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT \
      --store $H --run resnet18 --no-compile --repeats 3 --candidates "$HVP" \
      --json "$RES/hvp-checkpoint.json"
  ;;
9)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  ( export CUDA_VISIBLE_DEVICES=1
    timeout 500 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT --repeats 3 \
        --candidates "graph chlast,graph x4 /4,graph x4 /4 chlast,graph x4 /2 chlast,graph x4 /2,graph chlast x4,compile x4 /4 chlast,compile x4 /4,compile x4" \
        --json "$RES/hvp-init.json" > "$RES/hvp-init.txt" 2>&1 ) &
  export CUDA_VISIBLE_DEVICES=0
  step hessian-analysis 240 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18 --variants after --repeats 2 \
      --json "$RES/hessian-analysis.json"
  step hvp-checkpoint 300 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT \
      --store $H --run resnet18 --no-compile --repeats 3 \
      --candidates "auto,cached,graph,graph x4 /4,graph x4 /4 chlast,cached fp32,graph fp32,graph x4 /4 fp32,graph x4 /4 chlast fp32,graph bf16" \
      --json "$RES/hvp-checkpoint.json"
  wait; grep -v "it/s" "$RES/hvp-init.txt" | tail -n 40
  ;;
10)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  surfaces
  export CUDA_VISIBLE_DEVICES=0
  step train-resnet 120 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18 --variants after --repeats 1
  step hvp-compile 330 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT \
      --store $H --run resnet18 --repeats 3 \
      --candidates "graph x4 /4,compile x4 /4,compile x4 /4 chlast" --json "$RES/hvp-compile.json"
  ;;
12)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  step pytest-gpu-hessian 150 python3 -m pytest -q -m gpu -rs -p no:cacheprovider \
      tests/test_gpu_hessian.py
  step hessian-analysis 420 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18,vit-p4 --variants after --repeats 3 \
      --json "$RES/hessian-analysis.json"
  step hvp-shapes 120 python3 bench/bench_hvp_shapes.py --shapes 3x1,4x1,8x2 --profile ""
  ;;
13)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  step pytest-gpu-hessian 400 python3 -m pytest -q -m gpu -rs -p no:cacheprovider \
      tests/test_gpu_hessian.py
  ;;
24|25)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  ARCH=resnet18 PREFIX=resnet18; [ "$PHASE" = 25 ] && ARCH=vit-p4 PREFIX=vit
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs $ARCH --variants after --stages --product-times)
  step $ARCH-first-process 330 "${BENCH[@]}" --repeats 2 --json "$RES/$ARCH-first.json"
  ls -la /tmp/landscape-cache/hvp-compiled /tmp/landscape-cache/hvp-choices
  step $ARCH-later-process 120 "${BENCH[@]}" --repeats 2 --json "$RES/$ARCH-later.json"
  RUN=$(run_id $PREFIX)
  step $ARCH-lone-analyze 120 bash -c "time python3 -m landscape_lib analyze $RUN --what hessian \
      --set data_seed=1 --store $H --data-root $ROOT --no-progress"
  [ -n "${NO_TESTS:-}" ] || step pytest-gpu-hessian 200 python3 -m pytest -q -m gpu -rs \
      -p no:cacheprovider tests/test_gpu_hessian.py
  ;;
28|29)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  ARCH=vit-p4 PREFIX=vit; [ "$PHASE" = 29 ] && ARCH=resnet18 PREFIX=resnet18
  python3 -c "import sys, os, torch, pathlib
d = pathlib.Path(torch.__file__).parent / '_inductor'
print('dont_write_bytecode', sys.flags.dont_write_bytecode, 'PYTHONDONTWRITEBYTECODE',
      os.environ.get('PYTHONDONTWRITEBYTECODE'), 'pycache_prefix', sys.pycache_prefix,
      'torch writable', os.access(d, os.W_OK), 'inductor .pyc files',
      len(list(d.rglob('*.pyc'))), 'of .py', len(list(d.rglob('*.py'))))"
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs $ARCH --variants after --stages --product-times)
  PYC=(env -u PYTHONDONTWRITEBYTECODE PYTHONPYCACHEPREFIX=/tmp/pyc)
  step $ARCH-first-process 300 "${BENCH[@]}" --repeats 2 --json "$RES/$ARCH-first.json"
  step $ARCH-later 90 "${BENCH[@]}" --repeats 1
  step $ARCH-later-threads1 90 env TORCHINDUCTOR_COMPILE_THREADS=1 "${BENCH[@]}" --repeats 1
  step $ARCH-later-pyc-writes 90 "${PYC[@]}" "${BENCH[@]}" --repeats 1
  step $ARCH-later-pyc 90 "${PYC[@]}" "${BENCH[@]}" --repeats 1
  step $ARCH-later-pyc-threads1 90 "${PYC[@]}" TORCHINDUCTOR_COMPILE_THREADS=1 "${BENCH[@]}" \
      --repeats 1
  RUN=$(run_id $PREFIX)
  step $ARCH-lone-analyze-pyc-threads1 90 "${PYC[@]}" TORCHINDUCTOR_COMPILE_THREADS=1 bash -c \
      "time python3 -m landscape_lib analyze $RUN --what hessian --set data_seed=2 --store $H \
      --data-root $ROOT --no-progress"
  ;;
26|27)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs resnet18 --variants after --stages)
  if [ "$PHASE" = 26 ]; then
    step resnet18-first-process 300 "${BENCH[@]}" --product-times --repeats 2 \
        --json "$RES/resnet18-first.json"
    ls -la /tmp/landscape-cache/hvp-compiled /tmp/landscape-cache/hvp-choices
    step resnet18-later-process 100 "${BENCH[@]}" --product-times --repeats 2 --custom-ops \
        --json "$RES/resnet18-later.json"
    step resnet18-later-limit3 100 "${BENCH[@]}" --product-times --repeats 2 \
        --cudnn-benchmark-limit 3 --json "$RES/resnet18-later-limit3.json"
    RUN=$(run_id resnet18)
    step resnet18-lone-analyze 100 bash -c "time python3 -m landscape_lib analyze $RUN \
        --what hessian --set data_seed=1 --store $H --data-root $ROOT --no-progress"
  else
    step resnet18-later-limit1 100 "${BENCH[@]}" --product-times --repeats 2 \
        --cudnn-benchmark-limit 1 --json "$RES/resnet18-later-limit1.json"
    step resnet18-later-profiled 100 "${BENCH[@]}" --repeats 1 --profile 40 --callers 12
    NO_TESTS=1 bash "$0" 25
  fi
  ;;
23)
  setup
  export CUDA_VISIBLE_DEVICES=0
  T=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__))")
  mkdir -p "$OUT/torch"
  for f in _dynamo/aot_compile.py _dynamo/aot_compile_types.py _dynamo/config.py \
           _dynamo/eval_frame.py _dynamo/package.py compiler/__init__.py version.py; do
    [ -f "$T/$f" ] && cp "$T/$f" "$OUT/torch/${f//\//__}"; done
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs resnet18 --variants after --hvp-mode compile)
  step compile-cold 260 "${BENCH[@]}" --repeats 2 --json "$RES/compile-cold.json"
  AOT=(python3 bench/probe_aot_compile.py --store $H --run resnet18 --data-root $ROOT
       --file /tmp/aot-product.bin)
  step aot-save 200 "${AOT[@]}" save
  step aot-load 90 "${AOT[@]}" load
  step first-profiled 120 "${BENCH[@]}" --repeats 1 --profile 70
  ;;
18)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs resnet18 --variants after --hvp-mode compile)
  step compile-cold 190 "${BENCH[@]}" --repeats 1 --json "$RES/compile-cold.json"
  step compile-cached 75 "${BENCH[@]}" --repeats 2 --json "$RES/compile-cached.json"
  step compile-cached-no-benchmark 75 "${BENCH[@]}" --repeats 2 --no-cudnn-benchmark \
      --json "$RES/compile-cached-no-benchmark.json"
  ;;
19)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  step overhead 120 python3 bench/bench_analysis_overhead.py --arch resnet18 vit:patch_size=4 \
      --repeats 1 --detail
  step compile-resnet18 300 python3 bench/bench_hessian_analysis.py --data-folder $DATA \
      --data-root $ROOT --store $H --archs resnet18 --variants after --hvp-mode compile \
      --repeats 3 --product-times --profile 40 --json "$RES/compile-resnet18.json"
  step compiled-shapes 170 python3 bench/bench_hvp_shapes.py --arch resnet18 \
      --shapes 4x4k,4x2k --profile "" --repeats 5
  ;;
20)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs resnet18 --variants after --hvp-mode compile --repeats 3
         --product-times)
  step compile-quarter 250 "${BENCH[@]}" --compiled-split 4 --json "$RES/compile-quarter.json"
  step compile-half 200 "${BENCH[@]}" --compiled-split 2 --json "$RES/compile-half.json"
  step pytest-host-copy 60 python3 -m pytest -q -m gpu -p no:cacheprovider \
      tests/test_gpu_hessian.py -k host_copy
  ;;
21|22)
  [ -d /tmp/site/duckdb ] && [ -d $DATA/train ] || setup
  export CUDA_VISIBLE_DEVICES=0
  ARCH=$([ "$PHASE" = 21 ] && echo resnet18 || echo vit-p4)
  BENCH=(python3 bench/bench_hessian_analysis.py --data-folder $DATA --data-root $ROOT
         --store $H --archs $ARCH --variants after --product-times)
  step hessian-analysis-$ARCH 340 "${BENCH[@]}" --repeats 4 --json "$RES/hessian-$ARCH.json"
  if [ "$PHASE" = 21 ]; then
    step hessian-analysis-$ARCH-new-process 100 "${BENCH[@]}" --repeats 2 \
        --json "$RES/hessian-$ARCH-new-process.json"
    step hvp-compiled 140 python3 bench/bench_hvp.py --data-folder $DATA --cache-root $ROOT \
        --store $H --run resnet18 --repeats 3 --candidates "compile x4 /2" \
        --json "$RES/hvp-compiled.json"
  else
    step pytest-gpu-hessian 220 python3 -m pytest -q -m gpu -rs -p no:cacheprovider \
        tests/test_gpu_hessian.py
  fi
  ;;
esac
