"""Where ``gnomon serve``'s time goes at C concurrent clients: the batcher driven in-process
(no HTTP), unsteered vs steered (each request the next of ``--steer-refs`` at half its fluency
bound, sign alternating, as ``bench/serve.py``) vs steered + ``--monitors``, repeated.

Each client thread sends ``--per-client`` requests one after another (closed loop, as the
bench's clients) and decodes each token's text as the HTTP layer does. Forward passes are
timed with hooks on the model: decode steps (one token per row) apart from prefills (a joining
group's prompt). Per mode: tokens/s, decode steps, rows per step, prefill passes and rows,
forward time against the batcher thread's other time, tokens per request and finish reasons
(steered rows that stop at EOS earlier make tokens/s measure something else), and with
``--profile`` the batcher thread's top functions (cProfile) outside the forward passes.

    GNOMON_HOME=... python bench/serve_profile.py --model smollm2 --repeats 2
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import queue
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# bench/serve.py: the same prompts and client threads
from serve import PROMPT, run_clients


class Probe:
    """Forward-pass timers (hooks on the model) and counters for one phase."""

    def __init__(self, model: object) -> None:
        self.reset()
        self._t0 = self._c0 = 0.0
        model.register_forward_pre_hook(self._pre, with_kwargs=True)   # type: ignore[attr-defined]
        model.register_forward_hook(self._post)                       # type: ignore[attr-defined]

    def reset(self) -> None:
        self.decode_s = self.prefill_s = self.decode_cpu = 0.0
        self.steps = self.step_rows = self.prefills = self.prefill_rows = 0
        self._shape = (0, 0)

    def _pre(self, _m: object, _a: object, kw: dict) -> None:
        ids = kw.get("input_ids")
        self._shape = tuple(ids.shape) if ids is not None else (0, 0)
        self._t0, self._c0 = time.perf_counter(), time.thread_time()

    def _post(self, _m: object, _a: object, _o: object) -> None:
        dt = time.perf_counter() - self._t0
        b, t = self._shape
        if t == 1:
            self.decode_cpu += time.thread_time() - self._c0
            self.decode_s, self.steps, self.step_rows = self.decode_s + dt, self.steps + 1, self.step_rows + b
        else:
            self.prefill_s, self.prefills, self.prefill_rows = self.prefill_s + dt, self.prefills + 1, self.prefill_rows + b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steer-refs", default="sentiment@best,honesty@best,refusal@best")
    ap.add_argument("--monitors", default="honesty@best-monitor,refusal@best-monitor")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--modes", default="unsteered,steered,steered+2 monitors")
    ap.add_argument("--profile", action="store_true", help="cProfile the batcher thread per mode")
    ap.add_argument("--http", action="store_true", help="send the requests over HTTP to an in-process server "
                    "(bench/serve.py's clients) instead of submitting rows to the batcher")
    ap.add_argument("--alias-ttl", type=float, help="the server's alias re-resolution period (default: its own)")
    args = ap.parse_args()

    import pipeline.serve.continuous as cont
    from jobs.serve.resolve import Resolver
    from jobs.serve.worker import Batcher
    from pipeline.models import load_model
    from pipeline.serve import Row

    if args.alias_ttl is not None:
        Resolver.__init__.__kwdefaults__["alias_ttl_s"] = args.alias_ttl
    lm = load_model(args.model)
    tok = lm.tokenizer
    probe = Probe(lm.model)
    prof: dict[str, cProfile.Profile] = {}
    current = {"mode": ""}
    inner = cont.run_continuous

    def profiled(*a: object, **k: object) -> None:
        if not args.profile:
            return inner(*a, **k)
        p = prof.setdefault(current["mode"], cProfile.Profile())
        p.enable()
        try:
            return inner(*a, **k)
        finally:
            p.disable()

    cont.run_continuous = profiled          # before any batcher thread imports it
    batcher = Batcher(lm, args.max_batch)
    resolver = Resolver(lm, None, args.model, exclusive=batcher.exclusive)
    refs = [r for r in args.steer_refs.split(",") if r]
    monitors = [r for r in args.monitors.split(",") if r]
    steer = []
    for ref in refs:
        rec, d = resolver.direction(ref)
        resolver._check_bound(rec, d, 1e-9, "separation", ref)
        steer.append((ref, 0.5 * resolver._bounds[(rec.ref, "separation")]))
    print("steering at half each fluency bound: " + ", ".join(f"{r} +-{s:.3g}" for r, s in steer), flush=True)


    def in_process(c: int, i: int, st: list | None, mon: list | None) -> tuple[int, str]:
        """One request straight to the batcher; (tokens generated, finish reason)."""
        items = None
        if st:
            ref, s = st[(c + i) % len(st)]
            items = [{"ref": ref, "strength": s if (c + i) // len(st) % 2 == 0 else -s}]
        ops = resolver.steer_ops(items)
        watches = resolver.watches(mon)
        events: queue.Queue = queue.Queue()
        row = Row(tok(PROMPT.format(i=i, c=c))["input_ids"], args.max_tokens, ops=ops,
                  monitors=[w for w, _ in watches], emit=events.put)
        batcher.submit([row])
        n = 0
        while True:
            ev = events.get()
            if "error" in ev:
                raise SystemExit(ev["error"])
            if ev.get("done"):
                return n, ev["finish_reason"]
            if "token_id" in ev:
                n += 1
                tok.decode(row.tokens[:n], skip_special_tokens=True)          # as the HTTP layer does

    spent = {"resolve_s": 0.0}

    def timed(fn: object) -> object:
        def wrapper(*a: object, **k: object) -> object:
            t = time.perf_counter()
            try:
                return fn(*a, **k)   # type: ignore[operator]
            finally:
                spent["resolve_s"] += time.perf_counter() - t
        return wrapper

    Resolver.steer_ops = timed(Resolver.steer_ops)   # type: ignore[method-assign]
    Resolver.watches = timed(Resolver.watches)       # type: ignore[method-assign]
    request = in_process
    server = None
    if args.http:
        from bench.serve import body_of, post
        from jobs.serve.server import build, start

        server = start(*build(lm, args.model, max_batch=args.max_batch))

        def over_http(c: int, i: int, st: list | None, mon: list | None) -> tuple[int, str]:
            """The same request as bench/serve.py's clients send it."""
            body = body_of(args.model, c, i, args.max_tokens, st, mon)
            status, out = post(server.url, json.dumps(body).encode())
            if status != 200:
                raise SystemExit(f"{status}: {out}")
            return out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]

        request = over_http

    def phase(mode: str, st: list | None, mon: list | None) -> dict:
        current["mode"] = mode
        counts: list[int] = []
        reasons: Counter = Counter()
        lock = threading.Lock()

        def client(c: int) -> None:
            for i in range(args.per_client):
                n, why = request(c, i, st, mon)
                with lock:
                    counts.append(n)
                    reasons[why] += 1

        probe.reset()
        spent["resolve_s"] = 0.0
        wall, cpu = run_clients(args.clients, client)
        return {"wall": wall, "cpu": cpu, "decode_cpu": probe.decode_cpu, "tokens": sum(counts), "counts": counts, "reasons": dict(reasons),
                "decode_s": probe.decode_s, "prefill_s": probe.prefill_s, "steps": probe.steps,
                "rows_per_step": probe.step_rows / max(probe.steps, 1), "prefills": probe.prefills,
                "prefill_rows": probe.prefill_rows, "resolve_s": spent["resolve_s"]}

    modes = {"unsteered": (None, None), "steered": (steer, None), "steered+2 monitors": (steer, monitors)}
    modes = {k: v for k, v in modes.items() if k in args.modes.split(",")}
    for mode, (st, mon) in modes.items():       # warm-up: every reference resolved, its bound measured
        for i in range(len(steer) if st else 1):
            request(0, i, st, mon)
    prof.clear()
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.repeats):
        for mode, (st, mon) in modes.items():
            r = phase(mode, st, mon)
            results[mode].append(r)
            other = r["wall"] - r["decode_s"] - r["prefill_s"]
            print(f"rep {rep} {mode:19s} {r['tokens'] / r['wall']:6.1f} tok/s  wall {r['wall']:5.1f} s  "
                  f"tokens {r['tokens']} (per request min {min(r['counts'])} mean {r['tokens'] / len(r['counts']):.1f}"
                  f" {r['reasons']})  steps {r['steps']} x {r['rows_per_step']:.1f} rows  "
                  f"decode {r['decode_s']:5.1f} s ({1e3 * r['decode_s'] / max(r['steps'], 1):.0f} ms/step, "
                  f"cpu {1e3 * r['decode_cpu'] / max(r['steps'], 1):.0f} ms/step)  process cpu {r['cpu']:5.1f} s  "
                  f"prefill {r['prefills']} passes / {r['prefill_rows']} rows {r['prefill_s']:4.1f} s  "
                  f"other {other:4.1f} s (resolving {r['resolve_s']:.2f} s in request threads)  load {os.getloadavg()[0]:.2f}", flush=True)
    base = results.get("unsteered")
    if base:
        for mode in modes:
            ratios = [r["tokens"] / r["wall"] / (b["tokens"] / b["wall"]) for r, b in zip(results[mode], base)]
            print(f"{mode:19s} / unsteered tok/s: " + " ".join(f"{x:.2f}" for x in ratios))
            ratios = [b["cpu"] / r["cpu"] for r, b in zip(results[mode], base)]
            print(f"{mode:19s} / unsteered tokens per process cpu second: " + " ".join(f"{x:.2f}" for x in ratios))
    for mode, p in prof.items():
        s = io.StringIO()
        stats = pstats.Stats(p, stream=s).sort_stats("tottime")
        stats.print_stats(6)                                # the forward pass's kernels
        stats.print_stats(r"(pipeline|jobs)/", 14)          # gnomon's own code on the batcher thread
        print(f"----- batcher thread, {mode or 'warm-up'} (tottime) -----\n" + s.getvalue())
    if server is not None:
        server.stop()
    batcher.close()


if __name__ == "__main__":
    main()
