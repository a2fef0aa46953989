# The fifteenth session's prepared experiments, on experiment/v15-all (main plus
# experiment/varlen-gluon-bwd, experiment/varlen-persistent and experiment/bwd-stats; all config
# switches, off in the table, so each driver times off and on). Three calls of ~3-4 minutes
# each on a warm machine (3 first: it is issue 4's):
#   bash scripts/experiments/gpu_v15.sh 3    the dK/dV kernels' padded statistics: tests, A/B
#   bash scripts/experiments/gpu_v15.sh 1    varlen in the Gluon backward: float64 tests, A/B
#   bash scripts/experiments/gpu_v15.sh 2    the persistent forward for varlen: tests, A/B (its driver
#       stays on experiment/varlen-persistent: main ships the walk as a rule, gpu_v15_varlen_fill.sh)
# Logs under $OUT; copy them to docs/logs/. Then merge what won into main, its switch on in the
# table, and run the GPU suite on it (scripts/gpu_suite.sh: eight processes).
case "$1" in
1) bash scripts/experiments/gpu_v15_varlen_bwd.sh ;;
2) bash scripts/experiments/gpu_v15_varlen_persistent.sh ;;
3) bash scripts/experiments/gpu_v15_bwd_stats.sh ;;
esac
