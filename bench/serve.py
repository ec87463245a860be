"""``gnomon serve`` under load: throughput with 1/4/16 concurrent clients, steered vs unsteered,
batched vs sequential, then a load test of many mixed valid/invalid requests.

The server runs in-process on loopback (:func:`jobs.serve.server.start`) over the model given
(default: the bundled SmolLM2; ``tiny:llama`` for a smoke run) and the catalog in the home.

1. **Throughput.** For each client count C in 1, 4, 16: C threads each send R completions
   (``max_tokens`` new tokens, greedy); tokens per second over the wall time, unsteered and
   steered (``--steer-ref`` at half its fluency bound, a different sign per client so rows of
   one batch carry different directions). Reported: steered / unsteered per C (the issue asks
   >= 0.9) and C=16 / C=1 unsteered (batching against one request at a time; asks >= 2).
2. **Load test.** ``--load`` requests (default 10,000) from 8 threads, one in three invalid
   (broken JSON, unknown reference, bad strength, past the fluency bound, max_tokens 0,
   wrong types): every invalid body must get a 4xx, every valid one a 200, the server must
   answer ``/health`` at the end, and its resident memory may grow at most 10% between the
   end of a warm-up (the first 10%) and the end.

Run: ``python bench/serve.py [--model smollm2] [--steer-ref sentiment@best-steer]``. A timing
benchmark: run it on a quiet machine. Last line: ``serve_batching_gain = <ratio>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def throughput(url: str, model: str, clients: int, per_client: int, max_tokens: int,
               steer: tuple[str, float] | None) -> float:
    """Generated tokens per second with ``clients`` concurrent senders."""
    tokens = [0] * clients

    def client(c: int) -> None:
        for i in range(per_client):
            body: dict = {"model": model, "prompt": f"Request {i} from client {c}: I went to the market and",
                          "max_tokens": max_tokens}
            if steer:
                body["steer"] = [{"ref": steer[0], "strength": steer[1] * (1 if c % 2 == 0 else -1)}]
            status, out = post(url, json.dumps(body).encode())
            assert status == 200, out
            tokens[c] += out["usage"]["completion_tokens"]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(tokens) / (time.perf_counter() - t0)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_test(url: str, model: str, n: int, steer_ref: str, strength: float) -> dict:
    valid = [{"model": model, "prompt": "hello", "max_tokens": 1},
             {"model": model, "prompt": "hi", "max_tokens": 2, "steer": [{"ref": steer_ref, "strength": strength}]},
             {"model": model, "prompt": "so", "max_tokens": 1, "monitor": [steer_ref]}]
    invalid = [b"{broken", b"[]", json.dumps({"prompt": 5}).encode(),
               json.dumps({"prompt": "x", "steer": [{"ref": "no-such-concept@best", "strength": 1}]}).encode(),
               json.dumps({"prompt": "x", "steer": [{"ref": steer_ref, "strength": "big"}]}).encode(),
               json.dumps({"prompt": "x", "steer": [{"ref": steer_ref, "strength": 1e9}]}).encode(),
               json.dumps({"prompt": "x", "max_tokens": 0}).encode(),
               json.dumps({"prompt": "x", "monitor": "not-a-list"}).encode()]
    bodies = [(json.dumps(valid[i % 3]).encode(), True) if i % 3 else (invalid[(i // 3) % len(invalid)], False)
              for i in range(n)]
    bad: list[str] = []
    lock = threading.Lock()
    done = [0]
    marks: dict[str, int] = {}

    def worker(k: int) -> None:
        for i in range(k, n, 8):
            body, ok = bodies[i]
            status, out = post(url, body)
            if (ok and status != 200) or (not ok and not 400 <= status < 500):
                with lock:
                    bad.append(f"{status} for {body[:80]!r}: {out}")
            with lock:
                done[0] += 1
                if done[0] == n // 10:
                    marks["warm"] = rss_bytes()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with urllib.request.urlopen(url + "/health") as r:
        healthy = r.status == 200
    end = rss_bytes()
    return {"requests": n, "wrong_status": len(bad), "examples": bad[:5], "healthy": healthy,
            "rss_growth": end / marks.get("warm", end) - 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steer-ref", default="sentiment@best-steer")
    ap.add_argument("--per-client", type=int, default=8, help="requests per client (default 8)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--load", type=int, default=10_000, help="load-test requests (default 10,000; 0 skips it)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    from jobs.serve.resolve import Resolver, fluency_bound_of
    from jobs.serve.server import build, start
    from pipeline.models import load_model

    lm = load_model(args.model)
    app, batcher = build(lm, args.model)
    running = start(app, batcher)
    _rec, d = Resolver(lm, None, args.model, fluency=False).direction(args.steer_ref)
    strength = 0.5 * fluency_bound_of(lm, d, "separation")
    print(f"model {args.model}; steering with {args.steer_ref} at +-{strength:.3g} separations (half its bound)")
    rates = {}
    try:
        for clients in (1, 4, 16):
            plain = throughput(running.url, args.model, clients, args.per_client, args.max_tokens, None)
            steered = throughput(running.url, args.model, clients, args.per_client, args.max_tokens,
                                 (args.steer_ref, strength))
            rates[clients] = plain
            print(f"clients={clients:2d}: unsteered {plain:8.1f} tok/s, steered {steered:8.1f} tok/s, "
                  f"steered/unsteered = {steered / plain:.2f}")
        if args.load:
            res = load_test(running.url, args.model, args.load, args.steer_ref, strength)
            print(f"load test: {res['requests']} requests, {res['wrong_status']} with the wrong status, healthy "
                  f"{res['healthy']}, resident memory growth after warm-up {res['rss_growth']:+.1%}")
            for e in res["examples"]:
                print("  ", e)
    finally:
        running.stop()
    print(f"serve_batching_gain = {rates[16] / rates[1]:.2f}")


if __name__ == "__main__":
    main()
