# The fourteenth session's prepared experiments, on experiment/v14-all (main plus
# experiment/softcap-gluon-bwd, experiment/fwd-tma-store and experiment/window-persistent; all
# config switches, off in the table, so each driver times off and on). Three calls of ~4-5
# minutes each on a fresh machine:
#   bash scripts/experiments/gpu_v14.sh 1    softcap in the Gluon backward: float64 tests, A/B
#   bash scripts/experiments/gpu_v14.sh 2    the forward's out by TMA stores: float64 tests, A/B
#   bash scripts/experiments/gpu_v14.sh 3    the forward persistent under a causal band: tests, A/B
# Logs under $OUT; copy them to docs/logs/. Then merge what won into main, its switch on in the
# table, and run the suite on it (scripts/experiments/gpu_v13_call4.sh has the seven-process suite).
case "$1" in
1) bash scripts/experiments/gpu_v14_softcap_bwd.sh ;;
2) bash scripts/experiments/gpu_v14_fwd_tma.sh ;;
3) bash scripts/experiments/gpu_v14_window.sh ;;
esac
