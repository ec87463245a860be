"""Steering overhead: greedy generation tokens/s unsteered vs steered at 1 and 20 layers,
with gnomon's hooks and with steering-vectors' ``SteeringVector.apply``, side by side.

Every condition runs the same decode loop (``pipeline.steer.greedy``: KV cache, explicit
position ids), so the only difference is the hooks. Conditions are interleaved within each
repeat (the machine is shared and drifts); the median over repeats is reported, in wall time
and in process CPU time (all threads).

    python bench/steer.py [--prompts 8] [--new-tokens 32] [--repeats 3]

Last line: ``steer_slowdown_20_layers = <gnomon 20-layer time / unsteered time>``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

PROMPTS = [
    "The weather this morning was", "My favourite way to spend a weekend is",
    "The history of the printing press", "Here is a short recipe for soup:",
    "The most important lesson I learned at school", "In the year 2050, cities will",
    "A good friend is someone who", "The train left the station and",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default); 1 is steadier on a busy machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from steering_vectors import SteeringVector

    from pipeline.direction import Direction, Provenance
    from pipeline.models import load_model
    from pipeline.steer import add, apply, encode_prompts, greedy, mix

    lm = load_model(args.model)
    d_model, n_blocks = lm.hidden_size, lm.num_layers
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    enc = encode_prompts(lm, prompts)
    gen = torch.Generator().manual_seed(0)

    def direction(layer: int) -> Direction:
        prov = Provenance.minimal(d_model, layer=layer, model_id=lm.model_id, fingerprint=lm.fingerprint)
        return Direction(vector=torch.randn(d_model, generator=gen), provenance=prov, resid_norm=10.0)

    one = [n_blocks // 2]
    twenty = list(range(max(1, n_blocks // 2 - 10), max(1, n_blocks // 2 - 10) + 20))
    assert len(twenty) == 20 and max(twenty) <= n_blocks, f"model has only {n_blocks} blocks"
    dirs = {layer: direction(layer) for layer in set(one + twenty)}
    strength = 0.05  # multiples of the residual norm: visible but not degenerate; speed does not depend on it

    def sv(layers: list[int]) -> Any:
        # steering-vectors numbers decoder blocks from 0: gnomon layer L = block L-1's output.
        acts = {layer - 1: dirs[layer].unit * strength * dirs[layer].resid_norm for layer in layers}
        return SteeringVector(layer_activations=acts, layer_type="decoder_block").apply(lm.model)

    conditions: dict[str, Callable[[], Any]] = {
        "unsteered": contextlib.nullcontext,
        "gnomon 1 layer": lambda: apply(add(lm, dirs[one[0]], strength, unit="resid_norm")),
        "gnomon 20 layers": lambda: apply(mix(lm, [(dirs[layer], strength) for layer in twenty],
                                              unit="resid_norm")),
        "steering-vectors 1 layer": lambda: sv(one),
        "steering-vectors 20 layers": lambda: sv(twenty),
    }

    def run(make: Callable[[], Any]) -> tuple[float, float, int]:
        with make():
            w0, c0 = time.perf_counter(), time.process_time()
            out = greedy(lm, enc, args.new_tokens)
            return time.perf_counter() - w0, time.process_time() - c0, out.new_ids.numel()

    for make in conditions.values():  # warm-up (allocator, kernels)
        run(make)
    wall: dict[str, list[float]] = {k: [] for k in conditions}
    cpu: dict[str, list[float]] = {k: [] for k in conditions}
    ntok: dict[str, int] = {}
    load0 = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, make in conditions.items():
            w, c, n = run(make)
            wall[name].append(w)
            cpu[name].append(c)
            ntok[name] = n

    print(f"model {lm.model_id} ({n_blocks} blocks, d={d_model}), {lm.device}, torch threads "
          f"{torch.get_num_threads()}; {len(prompts)} prompts x {args.new_tokens} new tokens, "
          f"median of {args.repeats}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"1 layer = layer {one[0]}; 20 layers = layers {twenty[0]}..{twenty[-1]}")
    base_w, base_c = statistics.median(wall["unsteered"]), statistics.median(cpu["unsteered"])
    print(f"{'condition':<28}{'wall s':>8}{'tok/s':>8}{'cpu s':>8}{'wall x':>8}{'cpu x':>8}")
    for name in conditions:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<28}{w:8.3f}{ntok[name] / w:8.1f}{c:8.3f}{w / base_w:8.3f}{c / base_c:8.3f}")
    slow = statistics.median(wall["gnomon 20 layers"]) / base_w
    print(f"steer_slowdown_20_layers = {slow:.3f}")


if __name__ == "__main__":
    main()
