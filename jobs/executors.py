"""The executors under their historical import path; they live in :mod:`jobs.engine`."""

from jobs.engine import EXECUTORS, MANY_CPUS, MIN_FANOUT, AutoExecutor, Executor, LocalExecutor, make_executor
from jobs.ray_executor import RayExecutor

__all__ = ["AutoExecutor", "Executor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS",
           "MANY_CPUS", "MIN_FANOUT"]
