# v11, the GPU suite of the kernels changed this session (the drained warp-specialized dK/dV, the
# forwards' program order), four pytest processes at once: compiles dominate a fresh machine
export PYTHONPATH=src
run() { timeout 430 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -6; }
run tests/test_hopper.py -k "against_float64 and bf16 and not varlen and not window and not softcap" > $OUT/t1.log &
run tests/test_hopper.py -k "against_float64 and fp16 and not varlen and not window and not softcap" > $OUT/t2.log &
run tests/test_hopper.py -k "not (against_float64 and (bf16 or fp16) and not varlen and not window and not softcap)" > $OUT/t3.log &
run tests/test_attention.py tests/test_bwd_plan.py tests/test_api.py tests/test_bwd_into.py > $OUT/t4.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -3 $f; done
