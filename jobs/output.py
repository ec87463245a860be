"""What gnomon prints, and where: progress bars only on a terminal, no colour elsewhere.

A log file or a pipe gets plain lines: tqdm's carriage-return updates would pile into one
line of tens of thousands of characters, and ANSI colour codes into escape noise. Commands
ask :func:`progress_wanted` instead of deciding themselves; :func:`plain_environment` is
set once by the CLI so child processes (Ray workers) inherit it.
"""

from __future__ import annotations

import os
import sys

__all__ = ["is_terminal", "plain_environment", "progress_wanted", "quiet_libraries"]


def is_terminal() -> bool:
    return sys.stderr.isatty() and sys.stdout.isatty()


def progress_wanted(json_output: bool = False) -> bool:
    """Progress bars: on a terminal and when the output is not JSON."""
    return not json_output and is_terminal()


def plain_environment() -> None:
    """No colour when the output is not a terminal (the ``NO_COLOR`` convention, and Ray's
    coloured worker prefixes)."""
    if not is_terminal():
        os.environ.setdefault("NO_COLOR", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # library bars (transformers' "Writing model shards")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        os.environ.pop("FORCE_COLOR", None)


def quiet_libraries() -> None:
    """MLflow's own lines ("Creating initial MLflow database tables", "Updating database
    tables", "View run ... at: ...") only with ``GNOMON_VERBOSE=1``: gnomon says what it did
    itself. Set in the environment, before MLflow is imported (its import configures its
    loggers from ``MLFLOW_LOGGING_LEVEL``, overriding any level set earlier), so child
    processes (``mlflow ui``, Ray workers) inherit it; a value the user set is kept."""
    if os.environ.get("GNOMON_VERBOSE"):
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
