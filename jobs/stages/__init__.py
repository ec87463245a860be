"""What a job does: collect, fit, evaluate, report, drift, evasion and fleet
stages, the per-shard work and the catalog references they share."""
