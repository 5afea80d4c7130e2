"""`shoal cluster` against nodes that require the admin key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from server import cluster
from tests.support import ADMIN, ADMIN_KEY, REPO, ServerProcess


def shoal_cluster(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "cluster", *args],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cluster_commands_send_the_admin_key(tmp_path: Path) -> None:
    secured = {"SHOAL_ADMIN_KEY": ADMIN_KEY}
    nodes = [ServerProcess(tmp_path / f"n{i}", env=secured).start() for i in range(2)]
    try:
        urls = ",".join(node.url for node in nodes)
        create = ["create-collection", "--nodes", urls, "--name", "docs", "--dim", "2"]
        refused = shoal_cluster(*create, env={})
        assert refused.returncode == 1 and "401 unauthorized" in refused.stdout, refused.stdout
        created = shoal_cluster(*create, env=secured)
        assert created.returncode == 0 and created.stdout.count("created") == 2, created.stdout
        key_file = tmp_path / "admin-key"
        key_file.write_text(ADMIN_KEY)
        state = shoal_cluster("status", "--nodes", urls, "--admin-key-file", str(key_file), env={})
        assert state.returncode == 0 and state.stdout.count("docs: dim 2") == 2, state.stdout

        with nodes[0].client() as client:
            points = [{"id": "a", "vector": [1.0, 0.0]}, {"id": "b", "vector": [0.0, 1.0]}]
            url = "/v1/collections/docs/tenants/acme/points"
            assert client.put(url, json={"points": points}, headers=ADMIN).status_code == 200
        report = cluster.move_tenant(
            nodes[0].url, nodes[1].url, "docs", "acme", delete_source=True, admin_key=ADMIN_KEY
        )
        assert report.ok and report.target_points == 2 and report.source_deleted, report
    finally:
        for node in nodes:
            assert node.stop() == 0
