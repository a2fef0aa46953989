# v11, second call: the GPU tests that run the warp-specialized dK/dV kernel (drained now),
# then the d=192 / d=256 backward candidate sweeps
export PYTHONPATH=src
timeout 250 python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py tests/test_bwd_plan.py \
    -k "dkdvws or dkdvfused or fused_dq or plan_gradients" 2>&1 | tail -15 > $OUT/pytest-v11-ws.log
tail -3 $OUT/pytest-v11-ws.log
timeout 200 python3 scripts/kernel_bench.py sweep-bwd --head-dims 192 --candidates scripts/candidates/bwd-d192.json 2>&1 | tee $OUT/sweep-d192-bwd-v11.log
timeout 110 python3 scripts/kernel_bench.py sweep-bwd --head-dims 256 --candidates scripts/candidates/bwd-d256-round3.json 2>&1 | tee $OUT/sweep-d256-bwd-v11.log
