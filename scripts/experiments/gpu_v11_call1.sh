export PYTHONPATH=src
nvidia-smi --query-gpu=name,clocks.sm,power.draw --format=csv > $OUT/gpu.txt
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py tests/test_bwd_plan.py -x 2>&1 | tail -15 > $OUT/pytest-v11-hopper.log
tail -3 $OUT/pytest-v11-hopper.log
timeout 220 python3 scripts/kernel_bench.py sweep-bwd --head-dims 128 --causal 0 --seqlens 1024 2048 4096 8192 16384 --candidates scripts/candidates/bwd-d128-thresholds-v11.json 2>&1 | tee $OUT/sweep-d128-thresholds-v11.log
