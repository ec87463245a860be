#!/usr/bin/env bash
# A single-host MLflow tracking server for the gnomon catalog: SQLite + local artifacts.
# Usage: ./run-local.sh [DATA_DIR] [PORT]   (defaults: ./mlflow-data 5000)
set -euo pipefail
data="${1:-./mlflow-data}"
port="${2:-5000}"
mkdir -p "$data/artifacts"
data="$(cd "$data" && pwd)"
# exec: the server replaces this shell, so Ctrl-C / SIGTERM reach it (and its workers).
exec mlflow server \
  --backend-store-uri "sqlite:///$data/mlflow.db" \
  --artifacts-destination "$data/artifacts" \
  --host "${MLFLOW_HOST:-127.0.0.1}" \
  --port "$port" \
  --workers "${MLFLOW_WORKERS:-2}"
