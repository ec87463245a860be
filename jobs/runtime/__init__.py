"""How jobs are scheduled: the local and Ray executors, the DAG with resume and
its TOML specs, the stage scheduler, the cluster client, stage results and
progress output. Nothing here imports Ray until an executor needs it."""
