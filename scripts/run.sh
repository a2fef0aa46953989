#!/usr/bin/env bash
# The main job: `pyflashattn bench` (CPU sizes here, the papers' sweep on a GPU). Arguments go to it.
source "$(dirname "$0")/env.sh"
exec "$PY" -m pyflashattn "${@:-bench}"
