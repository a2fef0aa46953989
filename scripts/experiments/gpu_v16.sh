# The sixteenth session's prepared experiments, on experiment/v16-all (main plus
# experiment/fwd-plan and experiment/alibi-one-sided; each a switch, off, so each driver times
# off and on). Two calls of ~4 minutes each on a warm machine:
#   bash scripts/experiments/gpu_v16.sh 1    the forward through a plan: tests, host time, 1k rows
#                                            (PYFLASHATTN_FWD_PLAN), then the engine thread's share
#   bash scripts/experiments/gpu_v16.sh 2    one-sided ALiBi (forwards, dQ): float64 tests, A/B
# Logs under $OUT; copy them to docs/logs/. Then merge what won into main (switch on; the forward
# plan: PLAN_FORWARD's default), and run the GPU suite on it (PYTHONPATH=src bash scripts/gpu_suite.sh).
case "$1" in
1) bash scripts/experiments/gpu_v16_fwd_plan.sh ;;
2) bash scripts/experiments/gpu_v16_alibi_one_sided.sh ;;
esac
