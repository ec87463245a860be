"""The exported control vector in llama.cpp itself, at the arguments ``gnomon export-gguf``
prints (slow: the bundled SmolLM2; skipped without a llama.cpp binary).

A llama.cpp build is found as ``$GNOMON_LLAMA_CPP`` (a ``llama-completion`` or ``llama-cli``
binary) or on ``PATH``. llama.cpp runs the bundled Q4_1 weights with its own kernels while
gnomon runs their float32 dequantisation, so texts may differ in a token here and there; the
test therefore asserts what steering must do (the vector at the printed block changes the
greedy text, in the direction ``gnomon steer`` moves VADER; at gnomon's own layer number,
one block too deep, it does not act where it was fitted) and reports how many texts match.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

LAYER = 16
PROMPTS = ["I went to the market and", "The weather today is", "My neighbour's new car",
           "Yesterday, I called the bank and"]
N_NEW = 16


def llama_binary() -> str | None:
    env = os.environ.get("GNOMON_LLAMA_CPP")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, ("llama-completion", "llama-cli")) if p), None)


BINARY = llama_binary()
if BINARY is None:
    pytest.skip("no llama.cpp binary (set GNOMON_LLAMA_CPP or put llama-completion/llama-cli on PATH; "
                "llama-cpp-python has no binary wheel on this index and is not compiled here)",
                allow_module_level=True)


def llama(args: list[str], prompt: str) -> str:
    conv = ["-no-cnv"] if Path(BINARY or "").name == "llama-cli" else []
    cmd = [BINARY or "", *args, *conv, "-p", prompt, "-n", str(N_NEW), "--temp", "0", "--top-k", "1",
           "--seed", "0", "--no-warmup", "--no-display-prompt", "-c", "256"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{shlex.join(cmd)}\n{out.stderr[-2000:]}"
    return out.stdout.strip()


def test_printed_arguments_steer_like_gnomon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.cli import main
    from pipeline.collect import collect
    from pipeline.datasets import load_dataset
    from pipeline.direction import Provenance
    from pipeline.evaluate import vader_compound
    from pipeline.fit import fit_direction
    from pipeline.fluency import fluency_bound
    from pipeline.models import load_model
    from pipeline.steer import add, generate

    lm: Any = load_model("smollm2", home=tmp_path / "home")
    ds = load_dataset("sentiment")
    sets = {}
    for label in ("positive", "negative"):
        texts = ds.split_texts("train", label, lm.tokenizer, 48)
        _ids, _p, _t, a = collect(lm, [str(i) for i in range(len(texts))], texts, layers=[LAYER],
                                 positions=["last"])[LAYER].arrays()
        sets[label] = a.astype(np.float64)
    base = Provenance.minimal(hidden_size=lm.hidden_size, layer=LAYER, position="last", concept="sentiment",
                              fingerprint=lm.fingerprint, model_id="smollm2")
    d = fit_direction("mean_diff", sets["positive"], sets["negative"], base=base)
    s = fluency_bound(lm, d, PROMPTS).bound / 2            # gnomon steer's default strength
    path = d.save(tmp_path / "d.safetensors")
    gguf = tmp_path / "sentiment.gguf"
    assert main(["export-gguf", str(path), str(gguf), "--strength", f"{s:g}"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("llama.cpp: "))
    args = shlex.split(line)[2:]
    assert args[args.index("--control-vector-layer-range") + 1:][:2] == [str(LAYER - 1)] * 2

    def at(scale: str, layer_range: list[str] | None = None) -> list[str]:
        a = list(args)
        a[a.index("--control-vector-scaled") + 2] = scale
        if layer_range:
            i = a.index("--control-vector-layer-range")
            a[i + 1:i + 3] = layer_range
        return [llama(a, p) for p in PROMPTS]

    plain = [llama(args[:2], p) for p in PROMPTS]
    up, down = at("1"), at("-1")
    gn_up = generate(lm, PROMPTS, N_NEW, interventions=[add(lm, d, s)])
    gn_down = generate(lm, PROMPTS, N_NEW, interventions=[add(lm, d, -s)])
    same = sum(a.strip() == b.strip() for a, b in zip(up + down, gn_up + gn_down))
    print(f"llama.cpp texts equal to gnomon steer's: {same} of {2 * len(PROMPTS)}")
    assert up != plain and down != plain                    # the vector acts at the printed block
    gn_shift = vader_compound(gn_up).mean() - vader_compound(gn_down).mean()
    ll_shift = vader_compound(up).mean() - vader_compound(down).mean()
    assert np.sign(ll_shift) == np.sign(gn_shift) != 0, (ll_shift, gn_shift)
    # gnomon's layer number as llama.cpp's block (one too deep): block LAYER holds no vector
    assert at("1", [str(LAYER), str(LAYER)]) == plain
