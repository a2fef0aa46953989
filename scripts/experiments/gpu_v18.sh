# The eighteenth session's prepared GPU call, on experiment/gluon-dkdv-dropout (which contains
# experiment/gluon-dq-dropout): the backward with dropout on the Gluon kernels. Each is a switch
# that is off:
# - hopper_dq_dropout: the Gluon dQ kernel draws the mask in its score registers as the
#   forward does since v17 item 8 (hopper_dropout.dropout_keep). Offline (sm_90): no spills,
#   full waits as without dropout; the one-warpgroup kernel 179 -> 204 registers at d=128.
# - hopper_dkdv_dropout: the one-warpgroup Gluon dK/dV draws it in the forward's orientation and
#   turns it through shared memory, 64 x 64 bytes a step (hopper_dropout.dropout_keep_transposed);
#   it retires every wgmma at each step's end, as the warp-specialized kernel does (without that,
#   ptxas serialized every wgmma without causal: C7514). Offline: d=128 stack 64 B (the
#   shipped build 0-32 B), d=64 none; 2-3 full waits. Never the warp-specialized or fused kernel
#   with dropout (stack 160-568 B).
# Builds without dropout: PTX unchanged (forward, dQ, every dK/dV; compared without debug lines).
# Why: with dropout the backward runs the Triton kernels at ~1.8x the dense backward (v17 item
# 8). Predicted: forward+backward with dropout -8 to -12 % with the Gluon dQ, -20 to -30 % with
# both, so ~1.3x the dense one and ~1.3x SDPA flash's speed with dropout.
# Also what v17 left: d=64's Triton dQ tile under dropout (dropout_v17.py --sweep), and the
# GPU test of dropout on the Gluon forward with varlen, softcap, ALiBi, a left window or rows
# that see no key (test_gpu_gluon_dropout_features_against_fp32; hopper_dropout_features, off
# on main until it passes).
#   bash scripts/experiments/gpu_v18.sh     (~5 minutes; logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 280 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -3; }
run tests/test_hopper.py -k "dropout and dkdvgluon" > $OUT/t1.log &
run tests/test_hopper.py -k "dropout_features" > $OUT/t4.log &
run tests/test_hopper.py -k "dropout and dqgluon" > $OUT/t2.log &
run tests/test_hopper.py tests/test_features.py -k "(dropout or philox) and not dqgluon and not dkdvgluon and not dropout_features" > $OUT/t3.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
timeout 180 python3 scripts/experiments/dropout_v17.py 2>&1 | grep -v -i warn | tee $OUT/dropout-gluon-bwd-v18.log
timeout 120 python3 scripts/experiments/dropout_v17.py --sweep 2>&1 | grep -v -i warn | tee $OUT/dropout-dq-tiles-v18.log
