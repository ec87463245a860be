"""What a request's gnomon fields mean: catalog references resolved for the served model and
cached, checked against it (width, layer, fingerprint, the direction's fluency bound), and
turned into intervention ops and monitor watches. Every refusal is a :class:`RequestError`
with an HTTP status and one line naming what to fix."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.stages.conditions import rule_of
from jobs.stages.refs import check_refs, is_direction_file
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


UNITS = ("separation", "resid_norm", "raw")


class Resolver:
    """Catalog references -> directions (cached per reference), ops and watches for one model.

    A version (``concept/N``) is cached for the server's life; an alias (``concept@best``) is
    resolved again after ``alias_ttl_s``, so moving an alias reaches a running server. Loaded
    directions are kept by version and content hash: an alias found still pointing at the same
    version costs one catalog query, not a download and a check (~50 ms, under the lock every
    request takes; measured with ``bench/serve_profile.py --alias-ttl``).
    ``exclusive(fn)`` runs ``fn`` where nothing else uses the model (the batcher's thread):
    measuring a fluency bound runs forward passes."""

    def __init__(self, lm: Any, tracking_uri: str | None, model: str, *, fluency: bool = True,
                 exclusive: Callable[[Callable[[], Any]], Any] | None = None, alias_ttl_s: float = 60.0) -> None:
        self.lm, self.tracking_uri, self.model = lm, tracking_uri, model
        self.fluency = fluency
        self.exclusive = exclusive or (lambda fn: fn())
        self._lock = threading.Lock()
        self._dirs: dict[str, tuple[Any, Any, float]] = {}
        self._loaded: dict[tuple[str, str], Any] = {}
        self.alias_ttl_s = alias_ttl_s
        self._bounds: dict[tuple[str, str], float] = {}
        self._catalog: Any = None

    # ---- references -------------------------------------------------------------------
    def direction(self, ref: Any, what: str = "ref") -> tuple[Any, Any]:
        """(catalog record, Direction) for a reference, checked against the served model."""
        if not isinstance(ref, str) or not ref.strip():
            raise RequestError(400, f"{what} must be a catalog reference string such as 'sentiment@best', got {ref!r}")

        if is_direction_file(ref) or ref.startswith(("/", ".", "~")):
            raise RequestError(400, f"{what} {ref!r}: the server takes catalog references (concept@alias, "
                               "concept/N), not files")
        with self._lock:
            hit = self._dirs.get(ref)
            if hit is not None and ("@" not in ref or time.monotonic() - hit[2] < self.alias_ttl_s):
                return hit[0], hit[1]
            try:
                (rec,) = check_refs([ref], self.tracking_uri, self.model)
            except GnomonError as e:
                raise RequestError(404, f"{what} {ref!r}: {_line(e)}") from None
            d = self._loaded.get((rec.ref, rec.sha256))
            if d is None:
                d = self._load(rec, f"{what} {ref!r} ({rec.ref})")
                self._loaded[(rec.ref, rec.sha256)] = d
            self._dirs[ref] = (rec, d, time.monotonic())
            return rec, d

    def _load(self, rec: Any, where: str) -> Any:
        if self._catalog is None:
            from catalog import Catalog

            self._catalog = Catalog(tracking_uri=self.tracking_uri)
        d = self._catalog.load_record(rec)
        from pipeline.steer import check_direction

        try:
            check_direction(self.lm, d)
        except GnomonError as e:
            raise RequestError(400, f"{where}: {_line(e)}") from None
        return d

    # ---- steering -------------------------------------------------------------------------
    def steer_ops(self, items: Any) -> list[Any]:
        """``steer``: a list of ``{ref, strength, unit?, when?}``; ``when`` names a condition
        (``gnomon condition fit``) that decides per request whether that item applies."""
        if items is None:
            return []
        if not isinstance(items, list):
            raise RequestError(400, "steer must be a list of {\"ref\": ..., \"strength\": ...} objects")
        from pipeline.steer import add

        ops: list[Any] = []
        for i, item in enumerate(items):
            where = f"steer[{i}]"
            if not isinstance(item, dict) or "ref" not in item:
                raise RequestError(400, f"{where} must be an object with \"ref\" and \"strength\"")
            unknown = set(item) - {"ref", "strength", "unit", "when"}
            if unknown:
                raise RequestError(400, f"{where} has unknown field(s) {sorted(unknown)}: use ref, strength, unit, when")
            s, unit = item.get("strength"), item.get("unit", "separation")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
                raise RequestError(400, f"{where}.strength must be a finite number, got {s!r}")
            if unit not in UNITS:
                raise RequestError(400, f"{where}.unit {unit!r} is not one of {', '.join(UNITS)}")
            rec, d = self.direction(item["ref"], f"{where}.ref")
            self._check_bound(rec, d, float(s), unit, where)
            try:
                step = add(self.lm, d, float(s), unit).ops
            except GnomonError as e:
                raise RequestError(400, f"{where}: {_line(e)}") from None
            if item.get("when") is not None:
                crec, cd = self.direction(item["when"], f"{where}.when")

                try:
                    step = [rule_of(crec, cd, step, name=str(item["when"]))]
                except GnomonError as e:
                    raise RequestError(400, f"{where}.when: {_line(e)}") from None
            ops.extend(step)
        return ops

    def _check_bound(self, rec: Any, d: Any, strength: float, unit: str, where: str) -> None:
        if not self.fluency or strength == 0:
            return
        key = (rec.ref, unit)
        if key not in self._bounds:
            self._bounds[key] = self.exclusive(lambda: self._measure(d, unit))
        bound = self._bounds[key]
        if abs(strength) > bound:
            raise RequestError(400, f"{where}: strength {strength:g} {unit} is past {rec.ref}'s fluency bound "
                               f"{bound:g} {unit} (next-token KL over 1 nat); use |strength| <= {bound:g}")

    def _measure(self, d: Any, unit: str) -> float:
        return fluency_bound_of(self.lm, d, unit)

    # ---- monitoring -----------------------------------------------------------------------
    def watches(self, items: Any) -> list[tuple[Any, float]]:
        """``monitor``: a list of references, or ``{ref, threshold}`` objects (threshold: the
        alarm probability, default 0.5). Returns (Watch, threshold) pairs."""
        if items is None:
            return []
        if not isinstance(items, list):
            raise RequestError(400, "monitor must be a list of catalog references")
        from pipeline.monitor import gaussian_calibration
        from pipeline.serve import Watch

        out, names = [], set()
        for i, item in enumerate(items):
            ref, thr = (item, 0.5) if not isinstance(item, dict) else (item.get("ref"), item.get("threshold", 0.5))
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0.0 < thr < 1.0:
                raise RequestError(400, f"monitor[{i}].threshold must be a probability strictly between 0 and 1")
            _rec, d = self.direction(ref, f"monitor[{i}]")
            assert isinstance(ref, str)             # direction() refused anything else
            if ref in names:
                continue
            names.add(ref)
            try:
                cal = gaussian_calibration(d)
            except GnomonError:
                cal = None
            pos = d.provenance.position if d.provenance.position in ("last", "mean") else "last"
            out.append((Watch(ref, d.layer, d.unit, pos, cal), float(thr)))
        return out


def fluency_bound_of(lm: Any, d: Any, unit: str) -> float:
    """The direction's fluency bound in ``unit`` on its concept's neutral prompts (a few
    generic ones when it has none), as ``gnomon steer`` measures it."""
    from pipeline.fluency import fluency_bound

    prompts = ["I went to the market and", "The weather today is", "Here is what I think:"]
    try:
        from pipeline.datasets import neutral_prompts

        prompts = (neutral_prompts(d.provenance.concept)[:3] or prompts) if d.provenance.concept else prompts
    except GnomonError:
        pass
    return float(fluency_bound(lm, d, prompts, unit).bound)


def _line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else type(e).__name__
