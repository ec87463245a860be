"""A real Ray cluster (``ray start --head``) reached with ``--ray-address`` from the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_ip() -> str:
    """The address the head advertises (Ray binds the machine's primary IP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def test_collect_on_a_started_cluster(tmp_path: Path, small_dataset: Path) -> None:
    port = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    gnomon_bin = Path(sys.executable).with_name("gnomon")
    # Ray 2.60 enables token auth and keeps the token in ~/.ray/auth_token, which any other
    # local Ray start on this machine rewrites; a loopback test cluster runs without it.
    # Ray's unix socket paths must stay under ~107 bytes: pytest's tmp_path is too deep.
    ray_tmp = tempfile.mkdtemp(prefix="gr", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}",
         "--num-cpus=2", f"--object-store-memory={256 * 1024 * 1024}", "--include-dashboard=false",
         f"--temp-dir={ray_tmp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        home = tmp_path / "home"
        cmd = [str(gnomon_bin), "collect", "--model", "tiny:llama", "--dataset", str(small_dataset),
               "--layers", "1,2", "--json", "--ray-address", f"{_node_ip()}:{port}"]
        deadline = time.time() + 120
        while True:  # the head takes a few seconds to accept drivers
            out = subprocess.run(cmd, env={**env, "GNOMON_HOME": str(home)}, capture_output=True, text=True,
                                 timeout=180)
            if out.returncode == 0 or time.time() > deadline:
                break
            time.sleep(3)
        assert out.returncode == 0, out.stderr[-2000:]
        assert '"executor": "ray"' in out.stdout
        parts = sorted((home / "activations").rglob("*.parquet"))
        assert {p.parent.name for p in parts} == {"layer=1", "layer=2"}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)
