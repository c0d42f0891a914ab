#!/bin/bash
# The GPU checks, as one prepared run on a lent GPU machine (the workplace's `device` tool): the repo's working
# tree is copied there, the datasets travel in .gpu/datasets, and results land in $OUT. Its python3 (with torch,
# pandas, pyarrow, scikit-learn) runs mdctr from src/ without an install; nothing here needs MLflow or KFP.
#   part 1: training throughput of every model on CUDA, then the FLOP-matched grids (ML-1M (users 1–2999) and
#           Epinions, every model × 5 domain sources × 5 seeds) on worker processes sharing the GPU, with a
#           deadline, resumed from the committed GPU stores (docs/benchmarks/grid-*-gpu.runs.jsonl: a store per
#           machine kind, since the pre-trained miner's codes must match); then the data of the scaling benchmark.
#   part 2: the scaling benchmark (10M and 50M train rows, dnn and hamur, in memory vs streaming) on CUDA.
# Usage (device tool, repo root):  bash benchmarks/device_run.sh 1   /   bash benchmarks/device_run.sh 2
set -u
PART=${1:-1}
BUDGET_S=${BUDGET_S:-500}
START=$(date +%s)
export PYTHONPATH=$PWD/src DATASETS_DIR=$PWD/.gpu/datasets PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-runs/device-out}
mkdir -p "$OUT" runs
left() { echo $((START + BUDGET_S - $(date +%s))); }

if [ "$PART" = 1 ]; then
  { nvidia-smi -L; nproc; free -g | head -2; python3 -c "import torch, sys; print(sys.version); print(torch.__version__, torch.cuda.get_device_name(0))"; } > "$OUT/env.txt" 2>&1
  timeout 150 python3 benchmarks/bench_train.py --epochs 2 --device cuda --threads 4 \
      --out "$OUT/training-gpu.md" > "$OUT/bench_train.log" 2>&1
  echo "bench_train rc=$? at $(( $(date +%s) - START ))s" >> "$OUT/env.txt"
  D=$(( $(left) - 60 ))
  GRID="--domains handcrafted,mined,none,random,binned --seeds 5 --epochs 20 --patience 2 --device cuda"
  # each grid resumes from (and rewrites) its committed GPU store: copy $OUT/grid-*-gpu.runs.jsonl back into
  # docs/benchmarks/ and commit it, and the next lease goes on where this one stopped
  python3 benchmarks/grid.py --dataset ml-1m $GRID --workers 8 --deadline-s $D --out runs/grid-ml1m \
      --records docs/benchmarks/grid-ml1m-gpu.runs.jsonl > runs/grid-ml1m.log 2>&1 &
  python3 benchmarks/grid.py --dataset epinions $GRID --workers 6 --deadline-s $D --out runs/grid-epinions \
      --records docs/benchmarks/grid-epinions-gpu.runs.jsonl > runs/grid-epinions.log 2>&1 &
  nice -n 19 python3 benchmarks/bench_scale.py --rows 10000000,50000000 --data-only --out runs/bench_scale \
      > runs/bench_scale_data.log 2>&1 &
  wait
  echo "grids done at $(( $(date +%s) - START ))s" >> "$OUT/env.txt"
  for g in grid-ml1m grid-epinions; do
    tar czf "$OUT/$g.tgz" -C runs "$g.log" --exclude '*.npy' --exclude miner "$g"
    cp "docs/benchmarks/$g-gpu.runs.jsonl" "$OUT/" 2>/dev/null
  done
  cp runs/bench_scale_data.log "$OUT/"
else
  timeout $(( $(left) - 10 )) python3 benchmarks/bench_scale.py --rows 10000000,50000000 --models dnn,hamur \
      --device cuda --out runs/bench_scale 2>&1 | tee "$OUT/bench_scale.log"
  cp runs/bench_scale/results.json "$OUT/bench_scale.json" 2>/dev/null
fi
echo "part $PART done at $(( $(date +%s) - START ))s" >> "$OUT/env.txt"
