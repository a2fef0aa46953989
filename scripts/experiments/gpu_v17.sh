# The seventeenth session's prepared GPU calls, on experiment/v17-all (main plus
# experiment/fwd-ws-3wg and experiment/dkdv-ws-causal; each experiment a switch that is off, so
# each driver times off and on). Logs under $OUT; copy them to docs/logs/.
#   bash scripts/experiments/gpu_v17.sh 1    the host-time probes v16 left open (~1-2 minutes;
#                                            docs/performance.md v16 items 6 and 7; main has it)
#   bash scripts/experiments/gpu_v17.sh 2    three consumer warpgroups in the d=64 forward
#                                            (experiment/fwd-ws-3wg; ~4 minutes)
#   bash scripts/experiments/gpu_v17.sh 3    the warp-specialized dK/dV under causal, its second
#                                            consumer's unseen steps skipped
#                                            (experiment/dkdv-ws-causal; ~4 minutes)
# Then merge what won into main (its switch on) and run the GPU suite on it
# (PYTHONPATH=src bash scripts/gpu_suite.sh).
case "$1" in
1) cd scripts/experiments && PYTHONPATH=../../src timeout 240 python3 host_probe_v17.py 2>&1 | grep -v -i warn \
       | tee $OUT/host-probe-v17.log ;;
2) bash scripts/experiments/gpu_v17_fwd_ws_consumers.sh ;;
3) bash scripts/experiments/gpu_v17_dkdv_ws_causal.sh ;;
*) echo "usage: bash scripts/experiments/gpu_v17.sh 1|2|3"; exit 2 ;;
esac
