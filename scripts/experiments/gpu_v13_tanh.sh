# Branch experiment/softcap-tanh-approx: softcap's tanh by one tanh.approx.f32 (MUFU.TANH) in the
# Gluon forwards and, for 16-bit inputs on a GPU, in the Triton kernels (common.SOFTCAP_FAST);
# offline SASS of the warp-specialized forward at d=128: MUFU 790 -> 534 per tile, the plain
# kernel's FFMA folding kept (plain + 256 FMUL + 256 MUFU.TANH). The GPU softcap tests against
# float64, then the forward and forward+backward at 4k against dense causal in one process.
#   bash scripts/experiments/gpu_v13_tanh.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 150 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -4; }
run tests/test_hopper.py -k softcap > $OUT/t1.log &
run tests/test_features.py -k softcap > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
timeout 80 python3 -u scripts/kernel_bench.py features --seqlens 4096 --modes fwd fwdbwd 2>&1 | tee $OUT/softcap-tanh-v13.log
