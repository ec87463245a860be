"""One thread owns the model and runs continuous batching over it
(:func:`pipeline.serve.continuous.run_continuous`): before every decode step, the requests that
arrived join the running batch (each request's rows with their own ops, conditions and
monitors) and finished rows leave it, so requests steering with different directions share
forward passes and none waits for another's end. Other work on the model (measuring a fluency
bound) runs on the same thread between two steps.

:class:`Metrics` counts what Prometheus scrapes at ``/metrics``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

# lazy: numpy, torch (heavy; imported where used)


class Batcher:
    def __init__(self, lm: Any, max_batch: int = 16) -> None:
        self.lm, self.max_batch = lm, max(1, int(max_batch))
        self._q: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="gnomon-batcher", daemon=True)
        self._stop = False
        self._waiting: list[list[Any]] = []
        self._handed: list[Any] = []
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

    def _run_call(self, item: Any) -> None:
        fn, fut = item
        try:
            fut.set_result(fn())
        except BaseException as e:  # noqa: BLE001 (handed to the waiting request)
            fut.set_exception(e)

    def _take(self, free: int) -> list[Any]:
        """Called between decode steps: model work queued meanwhile runs now; the requests
        waiting join while there is room (a request's rows join together; one larger than the
        batch joins an empty batch alone)."""
        while True:
            try:
                kind, item = self._q.get_nowait()
            except queue.Empty:
                break
            if kind == "call":
                self._run_call(item)
            elif kind == "rows":
                self._waiting.append(list(item))
            else:
                self._stop = True
        out: list[Any] = []
        while self._waiting and (len(out) + len(self._waiting[0]) <= free or (not out and free == self.max_batch)):
            out += self._waiting.pop(0)
        if out:
            self.batches += 1
            self.rows += len(out)
            self._handed.extend(out)
        return out

    def _loop(self) -> None:
        from pipeline.serve.continuous import run_continuous

        while not self._stop:
            if not self._waiting:
                kind, item = self._q.get()
                if kind == "stop":
                    break
                if kind == "call":
                    self._run_call(item)
                    continue
                self._waiting.append(list(item))
            self._handed = []
            try:
                run_continuous(self.lm, self._take, self.max_batch)
            except Exception as e:  # noqa: BLE001 (every request in flight hears about it; the rest go on)
                msg = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                for r in self._handed:
                    r.emit({"error": msg})
        for rows in self._waiting:
            for r in rows:
                r.emit({"error": "the server is shutting down"})


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
                lines += ["# HELP gnomon_batches_total Groups of requests that joined the running batch together.",
                          "# TYPE gnomon_batches_total counter", f"gnomon_batches_total {batcher.batches}",
                          "# HELP gnomon_batched_rows_total Rows (prompts) that joined the running batch.",
                          "# TYPE gnomon_batched_rows_total counter", f"gnomon_batched_rows_total {batcher.rows}"]
            lines += ["# TYPE gnomon_uptime_seconds gauge", f"gnomon_uptime_seconds {time.time() - self.started:.1f}"]
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
