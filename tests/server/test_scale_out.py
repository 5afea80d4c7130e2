"""Scale-out by tenant: a real nginx (deploy/nginx/shoal.conf.template) in front of 3 real
`shoal serve` processes, the collection created on every node by `shoal cluster`.

300 tenants written and queried through nginx land on all 3 nodes, each on exactly one and
always the same; stopping a node fails exactly its tenants with a 502 in Shoal's error
envelope while the others keep working, and its tenants come back with it; a tenant moved to
another node by `shoal cluster move-tenant` (export, import) answers the same queries with the
same ids and distances there, grants included; a fourth node takes its share of the tenants by
`shoal cluster rebalance` (copy, switch nginx, drop the strays), which predicts nginx's choices.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from server.cluster import NginxRing, shard_key
from tests.support import REPO, ServerProcess, free_port

pytestmark = pytest.mark.slow

NGINX = Path("/usr/sbin/nginx")
NGINX_DIR = REPO / "deploy" / "nginx"
COLLECTION = "docs"
DIM = 8
N_TENANTS = 300
N_NODES = 3
EXAMPLE_SERVERS = ["10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080"]


def render(servers: list[str], listen: str) -> str:
    """deploy/nginx/shoal.conf.template with its upstream servers and listen address."""
    template = (NGINX_DIR / "shoal.conf.template").read_text()
    lines = "\n".join(f"    server {server} max_fails=0;" for server in servers)
    return template.replace("{{SERVERS}}", lines).replace("{{LISTEN}}", listen)


def _nginx_binary() -> Path:
    if not NGINX.exists():
        pytest.fail(f"{NGINX} is missing: run .ci/system-packages.sh (installs nginx-light)")
    return NGINX


def _main_conf(prefix: Path, site: Path) -> Path:
    """A minimal nginx.conf around the site file, with every path inside `prefix`."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the tmp dir
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\nevents {{ worker_connections 512; }}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {site};\n}}\n"
    )
    return conf


def nginx_test(prefix: Path, site_text: str) -> subprocess.CompletedProcess[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "shoal.conf"
    site.write_text(site_text)
    conf = _main_conf(prefix, site)
    args = [str(_nginx_binary()), "-t", "-p", str(prefix), "-c", str(conf)]
    args += ["-g", f"pid {prefix / 'nginx.pid'}; error_log stderr;"]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


@contextmanager
def nginx(prefix: Path, servers: list[str]) -> Iterator[str]:
    """nginx in the foreground on a free loopback port; yields its base URL."""
    binary = _nginx_binary()
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = prefix / "shoal.conf"
    site.write_text(render(servers, f"127.0.0.1:{port}"))
    conf = _main_conf(prefix, site)
    log_path = prefix / "nginx.log"
    args = [str(binary), "-p", str(prefix), "-c", str(conf)]
    args += ["-g", f"daemon off; pid {prefix / 'nginx.pid'}; error_log stderr;"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"nginx exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                httpx.get(f"{url}/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nginx did not listen:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def shoal_cluster(*args: str) -> subprocess.CompletedProcess[str]:
    """`shoal cluster ...` as a user runs it."""
    command = [sys.executable, "-m", "server.cli", "cluster", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def seg(name: str) -> str:
    return quote(name, safe="")


def tenant_path(tenant: str, collection: str = COLLECTION) -> str:
    return f"/v1/collections/{collection}/tenants/{seg(tenant)}"


@dataclass
class Corpus:
    tenants: list[str]
    vectors: dict[str, np.ndarray]  # tenant -> (n, DIM) float32
    grants: dict[str, list[str]]  # tenant -> shared_with of each of its points

    def ids(self, tenant: str) -> list[str]:
        return [f"p{i}" for i in range(len(self.vectors[tenant]))]


def make_corpus(seed: int = 6) -> Corpus:
    rng = np.random.default_rng(seed)
    styles = ["org-{}", "user{}@example.com", "team+{}", "dept/{}", "acme {}", "ü-{}"]
    tenants = [styles[i % len(styles)].format(i) for i in range(N_TENANTS)]
    vectors = {
        t: rng.standard_normal((int(rng.integers(3, 7)), DIM)).astype(np.float32) for t in tenants
    }
    # Grantees outside the routed tenants: a grant only works within the owner's node.
    grants = {t: [f"auditor-{i % 7}"] if i % 5 == 0 else [] for i, t in enumerate(tenants)}
    return Corpus(tenants, vectors, grants)


def query_body(vector: np.ndarray, exact: bool = True) -> dict[str, Any]:
    return {"vector": vector.tolist(), "k": 10, "include": [], "exact": exact}


def expect_correct(corpus: Corpus, tenant: str, response: httpx.Response) -> None:
    assert response.status_code == 200, (tenant, response.status_code, response.text)
    vectors = corpus.vectors[tenant]
    query = vectors[0].astype(np.float64)
    distances = np.sqrt(((vectors.astype(np.float64) - query) ** 2).sum(axis=1))
    order = np.argsort(distances, kind="stable")
    results = response.json()["results"]
    assert [r["id"] for r in results] == [f"p{i}" for i in order], tenant
    np.testing.assert_allclose([r["distance"] for r in results], distances[order], atol=1e-4)


@dataclass
class Cluster:
    base: Path
    nodes: list[ServerProcess]
    proxy: str
    corpus: Corpus
    owner: dict[str, int]  # tenant -> index of the node holding it, found by asking each node

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _nginx_binary()
    base = tmp_path_factory.mktemp("scale-out")
    nodes = [
        ServerProcess(base / f"node{i}" / "data", "--durability", "os") for i in range(N_NODES)
    ]
    for node in nodes:
        node.data_dir.parent.mkdir(parents=True)
    try:
        for node in nodes:
            node.start()
        created = shoal_cluster(
            "create-collection", "--nodes", ",".join(n.url for n in nodes),
            "--name", COLLECTION, "--dim", str(DIM), "--metric", "l2",
            "--schema", '{"kind": "keyword"}',
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        assert created.stdout.count("created") == N_NODES, created.stdout
        with nginx(base / "nginx", [f"127.0.0.1:{n.port}" for n in nodes]) as proxy:
            yield Cluster(base, nodes, proxy, make_corpus(), {})
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.stop()


def test_tenants_spread_over_the_nodes_and_stay_on_theirs(cluster: Cluster) -> None:
    corpus = cluster.corpus
    with httpx.Client(base_url=cluster.proxy, timeout=30) as proxy:
        for tenant in corpus.tenants:
            points = [
                {
                    "id": f"p{i}",
                    "vector": vector.tolist(),
                    "attributes": {"kind": f"k{i % 3}"},
                    "shared_with": corpus.grants[tenant],
                }
                for i, vector in enumerate(corpus.vectors[tenant])
            ]
            response = proxy.put(f"{tenant_path(tenant)}/points", json={"points": points})
            assert response.status_code == 200, (tenant, response.text)
        upstream_of = {}
        for tenant in corpus.tenants:
            response = proxy.post(
                f"{tenant_path(tenant)}/query", json=query_body(corpus.vectors[tenant][0])
            )
            expect_correct(corpus, tenant, response)
            upstream_of[tenant] = response.headers["x-shoal-upstream"]

    # Ask every node directly: each tenant is on exactly one.
    clients = [node.client() for node in cluster.nodes]
    try:
        for tenant in corpus.tenants:
            statuses = [c.get(tenant_path(tenant)).status_code for c in clients]
            assert sorted(statuses) == [200] + [404] * (N_NODES - 1), (tenant, statuses)
            cluster.owner[tenant] = owner = statuses.index(200)
            info = clients[owner].get(tenant_path(tenant)).json()
            assert info["points"] == len(corpus.vectors[tenant]), (tenant, info)
    finally:
        for c in clients:
            c.close()
    shares = [sum(owner == i for owner in cluster.owner.values()) for i in range(N_NODES)]
    assert all(share > N_TENANTS // 10 for share in shares), shares
    # nginx said which node answered; it is the node that holds the tenant, and the one
    # `shoal cluster rebalance` computes from the server list.
    ring = NginxRing([f"127.0.0.1:{node.port}" for node in cluster.nodes])
    for tenant, upstream in upstream_of.items():
        assert upstream == f"127.0.0.1:{cluster.nodes[cluster.owner[tenant]].port}", tenant
        assert ring.server_for(shard_key(COLLECTION, tenant)) == upstream, tenant

    # Asked again, every tenant reaches the same node: its data is still found.
    with httpx.Client(base_url=cluster.proxy, timeout=30) as proxy:
        for tenant in corpus.tenants:
            response = proxy.post(
                f"{tenant_path(tenant)}/query",
                json=query_body(corpus.vectors[tenant][0], exact=False),
            )
            expect_correct(corpus, tenant, response)
            assert response.headers["x-shoal-upstream"] == upstream_of[tenant]


def test_a_stopped_node_fails_only_its_tenants_until_it_is_back(cluster: Cluster) -> None:
    if not cluster.owner:
        pytest.skip("needs the placement found by the previous test")
    corpus = cluster.corpus
    down = 1
    node = cluster.nodes[down]
    assert node.stop() == 0
    try:
        with httpx.Client(base_url=cluster.proxy, timeout=30) as proxy:
            failed = 0
            for tenant in corpus.tenants:
                response = proxy.post(
                    f"{tenant_path(tenant)}/query", json=query_body(corpus.vectors[tenant][0]),
                    headers={"X-Request-ID": f"req-{failed}"},
                )  # fmt: skip
                if cluster.owner[tenant] == down:
                    failed += 1
                    assert response.status_code == 502, (tenant, response.text)
                    assert response.headers["content-type"] == "application/json"
                    assert response.json() == {
                        "error": {
                            "code": "unavailable",
                            "message": "the node for this tenant is unreachable",
                        }
                    }
                    assert response.headers["x-request-id"] == f"req-{failed - 1}"
                    assert response.headers["x-shoal-upstream"] == f"127.0.0.1:{node.port}"
                else:
                    expect_correct(corpus, tenant, response)
            assert failed == sum(owner == down for owner in cluster.owner.values()) > 0
            # Requests without a tenant go to any node that is up.
            assert all(proxy.get("/healthz").status_code == 200 for _ in range(20))
    finally:
        restarted = ServerProcess(node.data_dir, "--durability", "os", port=node.port)
        cluster.nodes[down] = restarted.start()
    with httpx.Client(base_url=cluster.proxy, timeout=30) as proxy:
        for tenant in corpus.tenants:
            response = proxy.post(
                f"{tenant_path(tenant)}/query", json=query_body(corpus.vectors[tenant][0])
            )
            expect_correct(corpus, tenant, response)


def _points(client: httpx.Client, tenant: str) -> dict[str, dict[str, Any]]:
    body = {"limit": 1000, "with_vector": True}
    response = client.post(f"{tenant_path(tenant)}/points/scroll", json=body)
    assert response.status_code == 200, response.text
    return {p["id"]: p for p in response.json()["points"]}


def test_a_moved_tenant_answers_identically_on_its_new_node(cluster: Cluster) -> None:
    if not cluster.owner:
        pytest.skip("needs the placement found by the first test")
    corpus = cluster.corpus
    tenant = next(t for t in corpus.tenants if corpus.grants[t] and "/" in t)
    source = cluster.nodes[cluster.owner[tenant]]
    target = cluster.nodes[(cluster.owner[tenant] + 1) % N_NODES]
    moved = shoal_cluster(
        "move-tenant", "--from", source.url, "--to", target.url,
        "--collection", COLLECTION, "--tenant", tenant,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "copied and verified" in moved.stdout

    rng = np.random.default_rng(7)
    queries = [*corpus.vectors[tenant], *rng.standard_normal((20, DIM)).astype(np.float32)]
    with source.client() as old, target.client() as new:
        for vector in queries:
            body = {"vector": vector.tolist(), "k": 10, "exact": True, "include": ["attributes"]}
            a = old.post(f"{tenant_path(tenant)}/query", json=body)
            b = new.post(f"{tenant_path(tenant)}/query", json=body)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.json()["results"] == b.json()["results"]  # ids, distances, attributes
        before, after = _points(old, tenant), _points(new, tenant)
        assert before == after  # vectors (as JSON floats of float32), attributes, grants
        assert all(p["shared_with"] == corpus.grants[tenant] for p in after.values())
        grantee = corpus.grants[tenant][0]
        shared = new.get(f"{tenant_path(grantee)}/points/p0", params={"owner": tenant})
        assert shared.status_code == 200, shared.text

        # Re-running is harmless; with --delete-source the source copy goes once verified.
        again = shoal_cluster(
            "move-tenant", "--from", source.url, "--to", target.url,
            "--collection", COLLECTION, "--tenant", tenant, "--delete-source",
        )  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr
        assert old.get(tenant_path(tenant)).status_code == 404
        assert _points(new, tenant) == after


def test_ddl_fans_out_through_shoal_cluster_not_the_proxy(cluster: Cluster) -> None:
    nodes = ",".join(cluster.urls)
    same = shoal_cluster(
        "create-collection", "--nodes", nodes, "--name", COLLECTION, "--dim", str(DIM),
        "--metric", "l2", "--schema", '{"kind": "keyword"}',
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.count("exists with the same settings") == N_NODES
    other = shoal_cluster(
        "create-collection", "--nodes", nodes, "--name", COLLECTION, "--dim", "16"
    )
    assert other.returncode == 1
    assert other.stdout.count("FAILED") == N_NODES and "dim 8 (wanted 16)" in other.stdout

    scratch = shoal_cluster(
        "create-collection", "--nodes", nodes, "--name", "scratch", "--dim", "4"
    )
    assert scratch.returncode == 0, scratch.stdout + scratch.stderr
    state = shoal_cluster("status", "--nodes", nodes)
    assert state.returncode == 0, state.stdout + state.stderr
    assert state.stdout.count("scratch: dim 4 cosine") == N_NODES

    with httpx.Client(base_url=cluster.proxy, timeout=30) as proxy:
        refused = proxy.post("/v1/collections", json={"name": "partial", "dim": 4})
        assert refused.status_code == 405
        assert refused.json()["error"]["code"] == "method_not_allowed"
        assert "shoal cluster" in refused.json()["error"]["message"]
        assert proxy.delete("/v1/collections/scratch").status_code == 405
        assert proxy.get("/v1/collections/scratch").status_code == 200

    deleted = shoal_cluster("delete-collection", "--nodes", nodes, "--name", "scratch")
    assert deleted.returncode == 0 and deleted.stdout.count("deleted") == N_NODES, deleted.stdout
    again = shoal_cluster("delete-collection", "--nodes", nodes, "--name", "scratch")
    assert again.returncode == 0 and again.stdout.count("absent") == N_NODES, again.stdout

    unreachable = f"http://127.0.0.1:{free_port()}"
    partial = shoal_cluster("delete-collection", "--nodes", f"{nodes},{unreachable}", "--name", "x")
    assert partial.returncode == 1
    assert f"{unreachable}  FAILED  unreachable" in partial.stdout


def test_a_new_node_takes_its_share_by_rebalance(cluster: Cluster) -> None:
    if not cluster.owner:
        pytest.skip("needs the tenants written by the first test")
    corpus = cluster.corpus
    fourth = ServerProcess(cluster.base / "node3" / "data", "--durability", "os")
    fourth.data_dir.parent.mkdir(parents=True)
    cluster.nodes.append(fourth.start())  # the fixture stops it
    nodes = ",".join(cluster.urls)
    created = shoal_cluster(
        "create-collection", "--nodes", nodes, "--name", COLLECTION, "--dim", str(DIM),
        "--metric", "l2", "--schema", '{"kind": "keyword"}',
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr

    plan = shoal_cluster("rebalance", "--nodes", nodes, "--collection", COLLECTION)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    to_new = plan.stdout.count(f"home {fourth.url}, not at home")
    assert to_new > N_TENANTS // 10, plan.stdout
    assert plan.stdout.count("\n") >= to_new  # plus the tenant moved by hand, maybe
    copied = shoal_cluster("rebalance", "--nodes", nodes, "--collection", COLLECTION, "--copy")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert copied.stdout.count("copy: copied and verified") == plan.stdout.count("\n")

    # Switch the proxy to the 4 nodes, then drop the copies it no longer routes to.
    servers = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
    with nginx(cluster.base / "nginx-4", servers) as proxy_url:
        dropped = shoal_cluster(
            "rebalance", "--nodes", nodes, "--collection", COLLECTION, "--drop-strays"
        )
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
        assert dropped.stdout.count("dropped") == plan.stdout.count("\n")
        done = shoal_cluster("rebalance", "--nodes", nodes, "--collection", COLLECTION)
        assert done.returncode == 0 and done.stdout == "", done.stdout

        clients = [node.client() for node in cluster.nodes]
        try:
            with httpx.Client(base_url=proxy_url, timeout=30) as proxy:
                for tenant in corpus.tenants:
                    response = proxy.post(
                        f"{tenant_path(tenant)}/query", json=query_body(corpus.vectors[tenant][0])
                    )
                    expect_correct(corpus, tenant, response)
                    statuses = [c.get(tenant_path(tenant)).status_code for c in clients]
                    assert sorted(statuses) == [200] + [404] * 3, (tenant, statuses)
                    owner = cluster.nodes[statuses.index(200)]
                    assert response.headers["x-shoal-upstream"] == f"127.0.0.1:{owner.port}"
            listed = clients[3].get(f"/v1/collections/{COLLECTION}/tenants?limit=1000")
            on_new = listed.json()["tenants"]
            assert sum(t["points"] > 0 for t in on_new) == to_new
        finally:
            for c in clients:
                c.close()


def test_the_example_conf_is_the_template_rendered_and_nginx_accepts_it(tmp_path: Path) -> None:
    example = (NGINX_DIR / "shoal.conf").read_text()
    assert example == render(EXAMPLE_SERVERS, "8080")
    checked = nginx_test(tmp_path, example)
    assert checked.returncode == 0, checked.stderr
