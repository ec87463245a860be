"""One thread owns the model: it takes the requests waiting when it is free and runs them as
one batch (each request's rows with their own ops and monitors, :func:`pipeline.serve.run_batch`),
so requests steering with different directions share forward passes. Batches are formed
between generations (static batching): a request that arrives mid-batch waits for the next.
Other work on the model (measuring a fluency bound) runs on the same thread between batches.

:class:`Metrics` counts what Prometheus scrapes at ``/metrics``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any


class Batcher:
    def __init__(self, lm: Any, max_batch: int = 16) -> None:
        self.lm, self.max_batch = lm, max(1, int(max_batch))
        self._q: queue.Queue[Any] = queue.Queue()
        self._held: list[Any] = []
        self._thread = threading.Thread(target=self._loop, name="gnomon-batcher", daemon=True)
        self._stop = False
        self.batches = 0
        self.rows = 0
        self._thread.start()

    def submit(self, rows: Sequence[Any]) -> None:
        """Queue one request's rows (they stay in one batch)."""
        self._q.put(("rows", list(rows)))

    def exclusive(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model's thread and wait for its result (re-raising its error)."""
        if threading.current_thread() is self._thread:
            return fn()
        fut: Future[Any] = Future()
        self._q.put(("call", (fn, fut)))
        return fut.result()

    def close(self) -> None:
        self._stop = True
        self._q.put(("stop", None))
        self._thread.join(timeout=30)

    def _fits(self, rows: list[Any], more: list[Any]) -> bool:
        every = rows + more
        if len(every) > self.max_batch:
            return False
        limit = self.lm.max_positions
        return limit is None or max(len(r.ids) for r in every) + max(r.max_new_tokens for r in every) <= limit

    def _loop(self) -> None:
        from pipeline.serve import run_batch

        while not self._stop:
            kind, item = self._held.pop(0) if self._held else self._q.get()
            if kind == "stop":
                return
            if kind == "call":
                fn, fut = item
                try:
                    fut.set_result(fn())
                except BaseException as e:  # noqa: BLE001 (handed to the waiting request)
                    fut.set_exception(e)
                continue
            rows = list(item)
            while True:                      # take what else is waiting, while it fits
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt[0] == "rows" and self._fits(rows, nxt[1]):
                    rows.extend(nxt[1])
                else:
                    self._held.append(nxt)
                    break
            self.batches += 1
            self.rows += len(rows)
            try:
                run_batch(self.lm, rows)
            except Exception as e:  # noqa: BLE001 (every waiting request hears about it)
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                for r in rows:
                    r.emit({"error": msg})


class Metrics:
    """Counters in the Prometheus text format (no client library needed)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.tokens = 0
        self.latency_sum, self.latency_n = 0.0, 0
        self.alarms: dict[str, int] = {}
        self.started = time.time()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1
            self.latency_sum += seconds
            self.latency_n += 1

    def generated(self, n: int, alarms: dict[str, int]) -> None:
        with self._lock:
            self.tokens += n
            for k, v in alarms.items():
                self.alarms[k] = self.alarms.get(k, 0) + v

    def render(self, batcher: Batcher | None = None) -> str:
        with self._lock:
            lines = ["# HELP gnomon_requests_total HTTP requests by endpoint and status.",
                     "# TYPE gnomon_requests_total counter"]
            lines += [f'gnomon_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += ["# HELP gnomon_generated_tokens_total Tokens generated.",
                      "# TYPE gnomon_generated_tokens_total counter", f"gnomon_generated_tokens_total {self.tokens}",
                      "# HELP gnomon_request_latency_seconds Request latency (whole response).",
                      "# TYPE gnomon_request_latency_seconds summary",
                      f"gnomon_request_latency_seconds_sum {self.latency_sum:.6f}",
                      f"gnomon_request_latency_seconds_count {self.latency_n}",
                      ("# HELP gnomon_monitor_alarms_total Generated tokens whose monitor probability reached "
                      "the request's threshold."), "# TYPE gnomon_monitor_alarms_total counter"]
            lines += [f'gnomon_monitor_alarms_total{{monitor="{_esc(k)}"}} {v}' for k, v in sorted(self.alarms.items())]
            if batcher is not None:
                lines += ["# TYPE gnomon_batches_total counter", f"gnomon_batches_total {batcher.batches}",
                          "# TYPE gnomon_batched_rows_total counter", f"gnomon_batched_rows_total {batcher.rows}"]
            lines += ["# TYPE gnomon_uptime_seconds gauge", f"gnomon_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
