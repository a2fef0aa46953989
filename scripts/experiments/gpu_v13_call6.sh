# v13: d=256's backward, the one head dim still at SDPA flash's level (0.97-1.03x): dK/dV and dQ
# tiles swept on a quiet GPU, then every candidate's float64 tests at d=256 (in parallel).
#   bash scripts/experiments/gpu_v13_call6.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 130 python3 -u scripts/kernel_bench.py sweep-bwd --head-dims 256 --seqlens 1024 4096 16384 \
    --candidates scripts/candidates/bwd-d256-v13b.json 2>&1 | tee $OUT/sweep-bwd-d256-v13b.log
python3 -c "import json; [print(json.dumps(c)) for c in json.load(open('scripts/candidates/bwd-d256-v13b.json'))[1:]]" > $OUT/cands.txt
i=0
while read -r c; do
    i=$((i+1))
    PYFLASHATTN_CONFIG="$c" timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_attention.py \
        -k "gpu_sizes and D256" 2>&1 | tail -1 | sed "s|^|$c |" > $OUT/t$i.log &
done < $OUT/cands.txt
wait
cat $OUT/t*.log
