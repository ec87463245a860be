"""``infra/testbed/services.py``: the catalog's services on one machine (issue 23) -
PostgreSQL, an S3 server and ``mlflow server`` backed by both. A direction registered through
them lands as a row in PostgreSQL and a file in the bucket; ``gnomon catalog ls`` lists it
with only the printed variables; ``down`` stops every process by id, from another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "testbed"))
from services import CREDENTIALS, needs  # noqa: E402

from tests.test_catalog_server import _free_port  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.skipif(needs() is not None, reason=f"services: {needs()}")]
SCRIPT = ROOT / "infra" / "testbed" / "services.py"


def test_services_up_register_list_down(tmp_path: Path) -> None:
    ports = [str(_free_port()) for _ in range(3)]
    root = tmp_path / "svc"
    cmd = [sys.executable, str(SCRIPT), "--root", str(root), "--pg-port", ports[0], "--s3-port", ports[1],
           "--mlflow-port", ports[2]]
    try:
        up = subprocess.run([*cmd[:2], "up", *cmd[2:]], capture_output=True, text=True, timeout=300, check=False)
        assert up.returncode == 0, up.stderr[-2000:]
        env = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
                   if line.startswith("export "))
        assert env["MLFLOW_TRACKING_URI"].endswith(f":{ports[2]}") and env["GNOMON_HOME"].startswith("s3://")
        client = {**os.environ, **env, "GNOMON_HOME": str(tmp_path / "client-home"), "PYTHONPATH": str(ROOT)}
        code = ("import torch\nfrom catalog import Catalog\nfrom pipeline.direction import Direction, Provenance\n"
                "p = Provenance(model_id='m', revision='main', fingerprint='0a1b2c3d4e5f6a7b', hidden_size=4, layer=1,"
                " concept='mood', positive='a', negative='b', method='mean_diff', dataset='d',"
                " dataset_hash='9f2c1e7a5b3d4c6e', split_sizes={'train': 8, 'val': 4})\n"
                "d = Direction(vector=torch.ones(4), provenance=p, pos_mean=1.0, neg_mean=-1.0, spread=0.3,"
                " resid_norm=2.0, metrics={'val_auroc': 0.9})\n"
                "print(Catalog().register(d).source)\n")
        reg = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=client, timeout=300,
                             check=False)
        assert reg.returncode == 0, reg.stderr[-2000:]
        assert reg.stdout.strip().splitlines()[-1].startswith("mlflow-artifacts:")
        ls = subprocess.run([sys.executable, "-m", "jobs.cli", "catalog", "ls", "--json"], capture_output=True,
                            text=True, env=client, cwd=ROOT, timeout=60, check=False)
        assert ls.returncode == 0, ls.stderr
        assert [r["concept"] for r in json.loads(ls.stdout)] == ["mood"]
        import boto3

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="gnomon").get("Contents", [])]
        assert sum(k.endswith(".safetensors") for k in keys) == 1       # the file is in the bucket
        psql = subprocess.run(["env", "PGPASSWORD=gnomon", "psql", "-h", "127.0.0.1", "-p", ports[0], "-U", "gnomon",
                               "-d", "mlflow", "-tAc", "SELECT count(*) FROM model_versions"],
                              capture_output=True, text=True, check=False)
        assert psql.stdout.strip() == "1", psql.stderr                     # the version is a PostgreSQL row
        pids = json.loads((root / "pids.json").read_text())
        assert set(pids) == {"postgres", "s3", "mlflow"}
    finally:
        subprocess.run([*cmd[:2], "down", *cmd[2:]], capture_output=True, text=True, timeout=120, check=False)
    assert not [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()]
    assert not (root / "pids.json").exists()
