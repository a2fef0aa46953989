# The seventeenth session's first GPU call (~1-2 minutes): the host-time probes v16 left open
# (docs/performance.md v16 items 6 and 7). Logs under $OUT; copy them to docs/logs/.
#   bash scripts/experiments/gpu_v17.sh
cd scripts/experiments && PYTHONPATH=../../src timeout 240 python3 host_probe_v17.py 2>&1 | grep -v -i warn \
    | tee $OUT/host-probe-v17.log
