"""``gnomon serve`` under load: latency and throughput with 1/4/16 concurrent clients (unsteered,
steered with a different direction per request, steered + 2 monitors), batching against one
request at a time, then a load test of many mixed valid/invalid requests.

The servers run in-process on loopback (:func:`jobs.serve.server.start`) over one loaded model
(default: the bundled SmolLM2; ``tiny:llama`` for a smoke run) and the catalog in the home.

1. **Throughput.** For each client count C in ``--clients`` (1, 4, 16): C threads each send
   ``--per-client`` completions (``--max-tokens`` new tokens, greedy) in three modes: (a)
   unsteered; (b) steered, each request with the next of ``--steer-refs`` (different
   directions, at different layers, in one batch) at half its fluency bound, the sign
   alternating; (c) as (b) plus ``--monitors`` (two monitors read on every token). Reported per
   (C, mode): generated tokens per second over the phase's wall time, p50 and p99 request
   latency, and the 1-minute load average when the phase ended (``os.getloadavg``; the figures
   mean little when it is well above 0 before the run). (d) one request at a time: a second
   server with ``--max-batch 1`` and max(C) clients, unsteered. Ratios: (b) / (a) and (c) / (a)
   at max(C) (the issue asks >= 0.9) and (a) / (d) at max(C), the batching gain (asks >= 2).
   At max(C) the three modes run ``--repeats`` rounds, interleaved (a b c a b c ...), and a
   ratio is the median of the rounds' ratios: one phase lasts ~15 s, and on a shared 2-core
   machine the wall time of phases doing the same work varied by 10-25% (bench/serve_profile.py:
   same forward passes, same tokens, same process CPU time), so a single (a) then (b) pair
   measured the machine as much as the server. Each phase also records the process's CPU time
   (the server runs in-process), and the ratio of tokens per CPU second is printed beside.
2. **Load test.** ``--load`` requests (default 10,000) from ``--load-threads`` threads (32), one in three invalid
   (broken JSON, not an object, wrong types, unknown reference, non-numeric strength, past the
   fluency bound, ``max_tokens`` 0, a monitor that is not a list); valid ones ask for one token
   (plain, steered or monitored). Every invalid body must get a 4xx, every valid one a 200, the
   server must answer ``/health`` at the end, and the process's resident memory may grow at
   most 10% between the end of a warm-up (the first 10%) and the end.

Fluency bounds are the server's own: a request past any bound gets a 400 that names it, and the
bench reads it from there (so nothing is measured twice). Prints a markdown block for
``bench/RESULTS.md`` (``--markdown FILE`` also writes it there). Last line:
``serve_batching_gain = <ratio>``. A timing benchmark: run it alone on a quiet machine.

Run (about 6-10 minutes on 2 CPU cores with SmolLM2, most of it the load test)::

    python bench/serve.py --model smollm2 --steer-refs sentiment@best,honesty@best,refusal@best \\
        --monitors honesty@best-monitor,refusal@best-monitor
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Request {i} from client {c}: I went to the market and"


def run_clients(n: int, client: Any) -> tuple[float, float]:
    """``client(c)`` on ``n`` threads at once; the wall and process CPU seconds until all end."""
    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - c0


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read() or b"{}"
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, {"raw": raw[:200].decode(errors="replace")}


def fluency_bound(url: str, model: str, ref: str) -> float:
    """The server's fluency bound for ``ref`` (separation units), read from its 400 message."""
    status, out = post(url, json.dumps({"model": model, "prompt": "x", "max_tokens": 1,
                                        "steer": [{"ref": ref, "strength": 1e9}]}).encode())
    msg = out.get("error", {}).get("message", "")
    found = re.search(r"\|strength\| <= ([0-9.eE+-]+)", msg)
    if status != 400 or not found:
        raise SystemExit(f"could not read {ref}'s fluency bound from the server ({status}: {msg or out})")
    return float(found.group(1))


def body_of(model: str, c: int, i: int, max_tokens: int, steer: list[tuple[str, float]] | None,
            monitors: list[str] | None) -> dict:
    body: dict = {"model": model, "prompt": PROMPT.format(i=i, c=c), "max_tokens": max_tokens}
    if steer:
        ref, s = steer[(c + i) % len(steer)]
        body["steer"] = [{"ref": ref, "strength": s if (c + i) // len(steer) % 2 == 0 else -s}]
    if monitors:
        body["monitor"] = list(monitors)
    return body


def phase(url: str, model: str, clients: int, per_client: int, max_tokens: int,
          steer: list[tuple[str, float]] | None = None, monitors: list[str] | None = None) -> dict:
    """``clients`` threads each send ``per_client`` requests; tokens/s, latencies, load."""
    tokens = [0] * clients
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(per_client):
            body = json.dumps(body_of(model, c, i, max_tokens, steer, monitors)).encode()
            t0 = time.perf_counter()
            status, out = post(url, body)
            dt = time.perf_counter() - t0
            with lock:
                if status != 200:
                    errors.append(f"{status}: {out}")
                    continue
                lat.append(dt)
                tokens[c] += out["usage"]["completion_tokens"]

    wall, cpu = run_clients(clients, client)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return {"clients": clients, "requests": len(lat), "tokens": sum(tokens), "wall_s": wall, "cpu_s": cpu,
            "lat": lat, "load1": os.getloadavg()[0], **summary(sum(tokens), wall, cpu, lat)}


def summary(tokens: int, wall: float, cpu: float, lat: list[float]) -> dict:
    import numpy as np

    return {"tok_s": tokens / wall, "tok_cpu_s": tokens / max(cpu, 1e-9), "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99))}


def pooled(rounds: list[dict]) -> dict:
    """Several rounds of one (clients, mode) as one row: tokens over wall time, latencies pooled."""
    tokens, wall, cpu = (sum(r[k] for r in rounds) for k in ("tokens", "wall_s", "cpu_s"))
    lat = [x for r in rounds for x in r["lat"]]
    return {**rounds[-1], "requests": len(lat), "tokens": tokens, "wall_s": wall, "cpu_s": cpu, "lat": lat,
            "rounds": len(rounds), **summary(tokens, wall, cpu, lat)}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_test(url: str, model: str, n: int, steer_ref: str, strength: float, threads: int = 8) -> dict:
    """``n`` mixed bodies; counts wrong statuses (a 5xx or a 200 for an invalid body, a non-200
    for a valid one) and the resident memory growth after the first tenth."""
    valid = [{"model": model, "prompt": "hello", "max_tokens": 1},
             {"model": model, "prompt": "hi", "max_tokens": 1, "steer": [{"ref": steer_ref, "strength": strength}]},
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
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    done = [0]
    marks: dict[str, int] = {}

    def worker(k: int) -> None:
        for i in range(k, n, threads):
            body, ok = bodies[i]
            status, out = post(url, body)
            with lock:
                statuses[f"{status // 100}xx"] = statuses.get(f"{status // 100}xx", 0) + 1
                if (ok and status != 200) or (not ok and not 400 <= status < 500):
                    bad.append(f"{status} for {body[:80]!r}: {out}")
                done[0] += 1
                if done[0] == max(1, n // 10):
                    marks["warm"] = rss_bytes()

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    with urllib.request.urlopen(url + "/health") as r:
        healthy = r.status == 200
    end = rss_bytes()
    return {"requests": n, "wrong_status": len(bad), "examples": bad[:5], "healthy": healthy,
            "statuses": dict(sorted(statuses.items())), "wall_s": wall,
            "rss_warm_mib": marks.get("warm", end) / 2**20, "rss_end_mib": end / 2**20,
            "rss_growth": end / marks.get("warm", end) - 1.0}


def markdown(args: argparse.Namespace, rows: list[dict], ratios: dict[str, float], load: dict | None,
             started_load: tuple[float, float, float]) -> str:
    head = (f"`python bench/serve.py --model {args.model} --steer-refs {args.steer_refs} --monitors {args.monitors} "
            f"--per-client {args.per_client} --max-tokens {args.max_tokens} --repeats {args.repeats} --load {args.load} "
            f"--load-threads {args.load_threads}` ({os.cpu_count()} CPUs, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; load average before the run "
            f"{started_load[0]:.2f} / {started_load[1]:.2f} / {started_load[2]:.2f})")
    out = [head, "",
           "| clients | mode | requests | tok/s | tok per CPU s | p50 latency (s) | p99 latency (s) | load (1 min) |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r['clients']} | {r['mode']} | {r['requests']} | {r['tok_s']:.1f} | {r['tok_cpu_s']:.1f} | "
            f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['load1']:.2f} |" for r in rows]
    out += [""] + [f"- {k}: **{v:.2f}**" for k, v in ratios.items()]
    if load:
        out.append(f"- load test: {load['requests']:,} requests in {load['wall_s']:.0f} s, statuses {load['statuses']}, "
                   f"{load['wrong_status']} with the wrong status, healthy at the end: {load['healthy']}, resident "
                   f"memory {load['rss_warm_mib']:.0f} MiB after warm-up -> {load['rss_end_mib']:.0f} MiB "
                   f"({load['rss_growth']:+.1%})")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--steer-refs", default="sentiment@best-steer,honesty@best,refusal@best",
                    help="comma-separated references the steered requests take in turn")
    ap.add_argument("--monitors", default="honesty@best-monitor,refusal@best-monitor",
                    help="comma-separated references every request of mode (c) monitors")
    ap.add_argument("--clients", default="1,4,16", help="concurrent client counts (default 1,4,16)")
    ap.add_argument("--per-client", type=int, default=4, help="requests per client per phase (default 4)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16, help="the batched server's --max-batch (default 16)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved rounds of the three modes at the largest client count (default 3)")
    ap.add_argument("--load", type=int, default=10_000, help="load-test requests (default 10,000; 0 skips it)")
    ap.add_argument("--load-threads", type=int, default=32, help="load-test client threads (default 32)")
    ap.add_argument("--markdown", type=Path, help="also write the markdown block to this file")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    started_load = os.getloadavg()
    t_start = time.perf_counter()
    import numpy as np

    from jobs.serve.server import build, start
    from pipeline.models import load_model

    refs = [r.strip() for r in args.steer_refs.split(",") if r.strip()]
    monitors = [r.strip() for r in args.monitors.split(",") if r.strip()]
    counts = [int(c) for c in args.clients.split(",")]
    lm = load_model(args.model)
    batched = start(*build(lm, args.model, max_batch=args.max_batch))
    single = start(*build(lm, args.model, max_batch=1, fluency=False))
    print(f"model {args.model}; load average before the run {started_load[0]:.2f} {started_load[1]:.2f} "
          f"{started_load[2]:.2f}", flush=True)
    rows: list[dict] = []
    ratios: dict[str, float] = {}
    load = None
    try:
        steer = [(ref, 0.5 * fluency_bound(batched.url, args.model, ref)) for ref in refs]
        print("steering at half each fluency bound: " + ", ".join(f"{r} +-{s:.3g}" for r, s in steer), flush=True)
        for url in (batched.url, single.url):                 # warm-up: references resolved and cached
            phase(url, args.model, 1, len(steer), 2, steer if url == batched.url else None,
                  monitors if url == batched.url else None)
        modes = {"unsteered": (None, None), "steered": (steer, None), "steered+2 monitors": (steer, monitors)}
        top = max(counts)
        per_round: dict[str, list[dict]] = {m: [] for m in modes}

        def say(r: dict, mode: str) -> None:
            print(f"clients={r['clients']:2d} {mode:19s} {r['tok_s']:8.1f} tok/s {r['tok_cpu_s']:6.1f} tok/CPU s  "
                  f"p50 {r['p50_s']:6.2f} s  p99 {r['p99_s']:6.2f} s  ({r['requests']} requests, load "
                  f"{r['load1']:.2f})", flush=True)

        for clients in counts:
            for _round in range(max(1, args.repeats) if clients == top else 1):   # interleaved: a b c a b c
                for mode, (st, mon) in modes.items():
                    r = phase(batched.url, args.model, clients, args.per_client, args.max_tokens, st, mon)
                    if clients == top:
                        per_round[mode].append(r)
                    else:
                        rows.append({"mode": mode, **r})
                    say(r, mode)
        rows += [{"mode": mode, **pooled(rs)} for mode, rs in per_round.items()]
        r = phase(single.url, args.model, top, args.per_client, args.max_tokens)
        rows.append({"mode": "one at a time (max batch 1)", **r})
        say(r, "one at a time")
        base = per_round["unsteered"]
        for mode in ("steered", "steered+2 monitors"):
            wall = [x["tok_s"] / b["tok_s"] for x, b in zip(per_round[mode], base)]
            cpu = [x["tok_cpu_s"] / b["tok_cpu_s"] for x, b in zip(per_round[mode], base)]
            ratios[f"{mode} / unsteered at {top} clients (median of {len(wall)} rounds: "
                   + " ".join(f"{x:.2f}" for x in wall) + ")"] = float(np.median(wall))
            ratios[f"{mode} / unsteered at {top} clients, tokens per process CPU second (median; "
                   + " ".join(f"{x:.2f}" for x in cpu) + ")"] = float(np.median(cpu))
        at = {(x["clients"], x["mode"]): x["tok_s"] for x in rows}
        ratios[f"batching gain (unsteered, batched / one at a time) at {top} clients"] = \
            at[(top, "unsteered")] / r["tok_s"]
        if args.load:
            load = load_test(batched.url, args.model, args.load, steer[0][0], steer[0][1], args.load_threads)
            print(f"load test: {load['requests']} requests in {load['wall_s']:.0f} s, statuses {load['statuses']}, "
                  f"{load['wrong_status']} with the wrong status, healthy {load['healthy']}, resident memory growth "
                  f"after warm-up {load['rss_growth']:+.1%} (load {os.getloadavg()[0]:.2f})", flush=True)
            for e in load["examples"]:
                print("  ", e)
    finally:
        batched.stop()
        single.stop()
    block = markdown(args, rows, ratios, load, started_load)
    print("\n----- markdown for bench/RESULTS.md -----\n" + block + "\n-----")
    if args.markdown:
        args.markdown.write_text(block + "\n")
    print(f"wall time {time.perf_counter() - t_start:.0f} s; load average now "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"serve_batching_gain = {ratios[next(k for k in ratios if k.startswith('batching'))]:.2f}")


if __name__ == "__main__":
    main()
