"""Screenshots of the fixed pictures (issue 28), rendered by headless Chromium from the pages
gnomon writes: ``gnomon compare`` over a tiny fleet (transfer and cosine heatmaps, the by-layer
plot, the emergence curves of a from-scratch series) and ``gnomon plot`` of a fit whose
``leace`` and ``mean_diff`` curves coincide. Tiny random models: the numbers mean nothing,
the pictures are what is checked.

``python bench/screenshots.py --out docs/img`` (needs /usr/bin/chromium; seconds). Prints the
files written; the last line is ``name = value``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def chromium() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or ""):
        if p and Path(p).exists():
            return p
    return None


def shoot(page: Path, png: Path, size: str) -> Path:
    cmd = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--allow-file-access-from-files", "--virtual-time-budget=5000", f"--screenshot={png}",
           f"--window-size={size}", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    if png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{png}: Chromium wrote no PNG")
    return png


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    args = ap.parse_args()
    if chromium() is None:   # `make bench` runs every script: say why nothing was rendered, do not fail
        print("no Chromium (apt-get install chromium): nothing to render the pages with")
        print("screenshots = []")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from jobs.cli import main as gnomon
    from jobs.runtime.engine import LocalExecutor
    from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare
    from tests.fleet_tiny import build_tiny_fleet, register_small_sentiment

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        build_tiny_fleet(home, scratch=True, bert=True)
        register_small_sentiment(home)
        cmp = run_fleet_compare(FleetCompareSpec("senti", "tiny", position="last", log=False), LocalExecutor(),
                                home, log=lambda m: None)
        report = Path(cmp["report_dir"])
        written = [shoot(report / "report.html", out / "compare-tiny-fleet.png", "1100,4200")]
        for name in ("emergence-scratch.png", "transfer-g0-w32-L{b}.png", "by-layer-g0-w32.png"):
            src = report / name.format(b=cmp["groups"][0]["best_layer"])
            if src.is_file():   # the figures themselves, as gnomon wrote them
                written.append(Path(shutil.copyfile(src, out / f"compare-{src.name}")))
        assert gnomon(["--home", str(home), "fit", "--model", "tiny:llama", "--dataset", "senti",
                       "--methods", "mean_diff,leace,logistic", "--positions", "last", "--executor", "local",
                       "--no-steer-select"]) == 0
        assert gnomon(["--home", str(home), "plot", "senti", "--out", str(Path(tmp) / "plot")]) == 0
        written.append(shoot(Path(tmp) / "plot" / "index.html", out / "plot-sweep-leace-mean_diff.png", "1000,860"))
    for p in written:
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)
    print(f"screenshots = {json.dumps([p.name for p in written])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
