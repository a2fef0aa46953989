# The eighteenth session's prepared GPU call, on experiment/gluon-dq-dropout: the Gluon dQ
# kernel with dropout (hopper_dq_dropout, off), drawing the mask in its score registers as the
# forward does since v17 item 8 (hopper_dropout.dropout_keep; the dK/dV stays Triton's). Offline
# (sm_90): no spills, full waits as without dropout; the one-warpgroup kernel's registers
# 179 -> 204 at d=128 and no new shared-memory traffic; the warp-specialized one +1-2 shared
# loads and stores a program (the seed and head handed to the consumers). Why: with dropout the
# backward runs the Triton kernels at ~1.8x the dense backward (v17 item 8); the dQ pass is
# ~35-40 % of it. Predicted: forward+backward with dropout -8 to -12 %.
# Also what v17 left: d=64's Triton dQ tile under dropout (dropout_v17.py --sweep).
#   bash scripts/experiments/gpu_v18.sh     (~4 minutes; logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -3; }
run tests/test_hopper.py -k "dropout and dqgluon" > $OUT/t1.log &
run tests/test_hopper.py tests/test_features.py -k "(dropout or philox) and not dqgluon" > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
timeout 150 python3 scripts/experiments/dropout_v17.py 2>&1 | grep -v -i warn | tee $OUT/dropout-gluon-dq-v18.log
timeout 150 python3 scripts/experiments/dropout_v17.py --sweep 2>&1 | grep -v -i warn | tee $OUT/dropout-dq-tiles-v18.log
