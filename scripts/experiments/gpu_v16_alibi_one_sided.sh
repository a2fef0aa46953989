# Branch experiment/alibi-one-sided: one-sided ALiBi in the Gluon forwards
# (hopper_alibi_one_sided, off). Under causal (window_right 0) every visible bias
# -slope * (i + shift - j) equals slope * (j - anchor) less a per-row constant (anchor: the
# tile's first row + shift), which the softmax does not see: one FFMA per score with a
# per-column term, and the constant goes into lse in the epilogue, where |i + shift - j| per
# score cost ~5 instructions (v14 item 9). Why: ALiBi's forward costs +38 % / +28 % over dense
# causal at 4k / 16k (v15 features; issue 5 allows 10 %). Offline (sm_90 SASS): the
# warp-specialized forward 7336 -> 6752 instructions (plain 6088: ALiBi's extra halved), the
# one-warpgroup 2184 -> 2024 (plain 1808), registers 215 -> 197, no new spills or wgmma waits;
# the PTX of all 34 forward builds with the switch off unchanged (scripts/ptx_snapshot.py).
# The Gluon dQ kernels take it too (the per-row part folded into the lse they read): d=128
# warp-specialized 2440 -> 2256 instructions (plain 2064), d=64 1072 -> 1016, no spills; the
# dK/dV kernels keep the two-sided form (one-sided spilled more there, ~1 % fewer
# instructions); the PTX of all 68 backward builds with the switch off unchanged.
# Written in the fifteenth session, never run on a GPU. One call (~4 min): the float64 tests
# (out, lse, gradients; causal and a left window, sq != sk, GQA, slopes per head or per (batch,
# head), bf16 and fp16; any failure: stop), the ALiBi feature tests with the switch on, then
# issue 5's ALiBi rows off / on, each in its own process. Predicted: ALiBi forward +38 % ->
# ~+20 % at 4k, forward+backward -3 to -6 %.
#   bash scripts/experiments/gpu_v16_alibi_one_sided.sh   (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
run() { timeout 300 python3 -m pytest -q -p no:cacheprovider -x "$@" 2>&1 | tail -3; }
run tests/test_hopper.py -k "alibi_one_sided and bf16" > $OUT/t1.log &
run tests/test_hopper.py -k "alibi_one_sided and fp16" > $OUT/t2.log &
PYFLASHATTN_CONFIG='{"hopper_alibi_one_sided": 1}' run tests/test_features.py tests/test_api.py -k "alibi" > $OUT/t3.log &
PYFLASHATTN_CONFIG='{"hopper_alibi_one_sided": 1}' run tests/test_hopper.py -k "varlen_against and alibi" > $OUT/t4.log &
wait
for f in $OUT/t?.log; do echo "== $f"; tail -2 $f; done
grep -q -E "failed|error" $OUT/t?.log && { echo "tests failed: no timing"; exit 1; }
for sw in 0 1; do
    echo "== hopper_alibi_one_sided=$sw" | tee -a $OUT/alibi-one-sided-v16.log
    PYFLASHATTN_CONFIG="{\"hopper_alibi_one_sided\": $sw}" timeout 100 python3 scripts/kernel_bench.py features \
        --seqlens 4096 16384 --modes fwd fwdbwd 2>&1 | grep -E "causal |alibi|#" | tee -a $OUT/alibi-one-sided-v16.log
done
