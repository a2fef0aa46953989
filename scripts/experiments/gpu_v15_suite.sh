# v15, after merging the padded statistics (hopper_bwd_stats) and varlen in the Gluon backward
# (hopper_bwd_varlen), both on: first whether a step synchronizes with the GPU and its host
# time (host_sync_check.py), then the GPU suite in eight pytest processes on the new table.
#   bash scripts/experiments/gpu_v15_suite.sh      (logs under $OUT: copy to docs/logs/)
export PYTHONPATH=src
timeout 90 python3 scripts/experiments/host_sync_check.py 2>&1 | grep -v -i warn | tee $OUT/host-sync-v15.log
bash scripts/gpu_suite.sh
