#!/usr/bin/env bash
# A one-machine Ray cluster (head only) for trying --ray-address locally; stop with `ray stop`.
set -euo pipefail
ray start --head --node-ip-address=127.0.0.1 --port="${RAY_PORT:-6379}" --num-cpus="${RAY_CPUS:-2}" \
  --object-store-memory=$((512 * 1024 * 1024)) --include-dashboard=false
echo "export RAY_ADDRESS=127.0.0.1:${RAY_PORT:-6379}"
