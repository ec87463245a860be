"""What gnomon prints, and where: progress bars only on a terminal, no colour elsewhere.

A log file or a pipe gets plain lines: tqdm's carriage-return updates would pile into one
line of tens of thousands of characters, and ANSI colour codes into escape noise. Commands
ask :func:`progress_wanted` instead of deciding themselves; :func:`plain_environment` is
set once by the CLI so child processes (Ray workers) inherit it.

Every step that can take more than a few seconds runs inside :func:`step`: on a terminal it
is a progress bar (when the step counts something) and elsewhere one line when it starts
and one when it ends, with the elapsed time, flushed at once. :func:`line_buffered` makes
``print`` reach a pipe line by line (Python block-buffers a piped stdout, so a job's lines
used to arrive only when 8 KiB had piled up: an hour of ``gnomon demo | tee`` showed one line).

>>> with step("fit sentiment", emit=print, bar=False):       # doctest: +SKIP
...     ...
[start] fit sentiment
[end] fit sentiment in 12.3s
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# lazy: tqdm (heavy; imported where used)

__all__ = ["Step", "elapsed", "is_terminal", "line_buffered", "plain_environment", "progress_wanted",
           "quiet_libraries", "step"]


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


def line_buffered() -> None:
    """Send stdout and stderr to a pipe or file line by line, not in 8 KiB blocks."""
    for stream in (sys.stdout, sys.stderr):
        if not stream.isatty() and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(line_buffering=True)
            except (ValueError, OSError):  # a stream that cannot be reconfigured (already wrapped)
                pass


def elapsed(seconds: float) -> str:
    """``12.3s``, ``4m05s``, ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Step:
    """The handle :func:`step` yields: ``update(n)`` counts done items (the bar moves),
    ``note(text)`` adds to the end line (``[end] collect sentiment in 4.1s: 480 examples``)."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self.done = 0
        self.notes: list[str] = []

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def postfix(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def note(self, text: str) -> None:
        self.notes.append(text)


@contextmanager
def step(what: str, *, total: int | None = None, unit: str = "it", bar: bool | None = None,
         emit: Callable[[str], None] | None = None) -> Iterator[Step]:
    """Run a long step visibly. ``bar`` (default: on a terminal) shows a tqdm bar when
    ``total`` is known; otherwise ``[start] what`` and ``[end] what in <elapsed>`` (or
    ``[failed] what after <elapsed>``) go to ``emit`` (default: stderr, flushed)."""
    out = emit or _stderr
    use_bar = (is_terminal() if bar is None else bar) and total is not None
    t0 = time.perf_counter()
    tq = None
    if use_bar:
        from tqdm import tqdm

        tq = tqdm(total=total, unit=unit, desc=what, dynamic_ncols=True)
    else:
        out(f"[start] {what}" + (f" ({total:,} {unit})" if total is not None else ""))
    handle = Step(tq)
    try:
        yield handle
    except BaseException:
        if tq is not None:
            tq.close()
        out(f"[failed] {what} after {elapsed(time.perf_counter() - t0)}")
        raise
    if tq is not None:
        tq.close()
    if not use_bar or handle.notes:
        tail = f": {'; '.join(handle.notes)}" if handle.notes else ""
        out(f"[end] {what} in {elapsed(time.perf_counter() - t0)}{tail}")
