"""Machine-readable output: strict JSON on a stdout nothing else writes to.

``--json`` output is for scripts, so it must parse: Python's ``json`` writes NaN and
infinities as ``NaN``/``Infinity`` (not JSON), and libraries print their own lines to
stdout (MLflow's "View run ... at ..." when logging to a server). :func:`dumps` writes
non-finite floats as ``null``; :func:`stdout_to_stderr` sends everything else written
to stdout, by Python or by native code at the file-descriptor level, to stderr while a
command runs, so the JSON printed afterwards is the only thing on stdout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["dumps", "finite", "stdout_to_stderr"]


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (dicts, lists and tuples walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON (``allow_nan=False`` after :func:`finite`)."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Route fd 1 and ``sys.stdout`` to stderr inside the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
