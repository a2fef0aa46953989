# The eighteenth session's prepared GPU call, on experiment/gluon-dropout: dropout drawn in the
# order a wgmma accumulator's thread holds its elements (pyflashattn.dropout's map), so that
# the warp-specialized Gluon forward takes dropout (hopper_dropout, off) with no element moving
# between threads (kernels/hopper_dropout.py; offline: the build's convert_layout asserted
# trivial, no new shared-memory traffic, full waits 6 as without; stack at d=128 without
# causal 0 -> 104 B, causal 128 B as without; d=64 0 -> 24 B without causal). The Triton
# kernels draw the same map (rearranged through joins and a permute; offline at d=128 the
# forward's stack 40 -> 0 B and shared memory 180 -> 164 KB against main's v17 bytes).
# Why: dropout's forward is 3.2x the dense one at 4k and 0.78x SDPA flash (v17 item 7): the
# Triton forward rearranges the mask through shared memory. Predicted: the Gluon forward with
# dropout at 1.2-1.5x the dense one, ~1.7x SDPA flash's forward with dropout; forward+backward
# ~-15 % (the backward stays on the Triton kernels).
# Before the call: mkdir -p scripts/experiments/_main_src && git archive main src | tar -x -C
# scripts/experiments/_main_src (git-ignored: pass it in the device call's carry), so that the
# same script times main's map on the Triton kernels in a process of its own.
#   bash scripts/experiments/gpu_v18.sh     (~4 minutes; logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 240 python3 -m pytest -q -p no:cacheprovider "$@" 2>&1 | tail -3; }
run tests/test_hopper.py -k "dropout" > $OUT/t1.log &
run tests/test_features.py tests/test_api.py tests/test_cuda_graphs.py tests/test_configs.py -k "dropout or philox" > $OUT/t2.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
timeout 150 python3 scripts/experiments/dropout_v17.py 2>&1 | grep -v -i warn | tee $OUT/dropout-gluon-v18.log
[ -d scripts/experiments/_main_src/src ] && PYTHONPATH=scripts/experiments/_main_src/src timeout 120 \
    python3 scripts/experiments/dropout_v17.py 2>&1 | grep -v -i warn | tee $OUT/dropout-main-v18.log
timeout 120 python3 scripts/experiments/dropout_v17.py --sweep 2>&1 | grep -v -i warn | tee $OUT/dropout-dq-tiles-v18.log
