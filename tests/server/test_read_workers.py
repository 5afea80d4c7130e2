"""Read workers (`shoal serve --read-workers 1`), as real processes on a loopback port.

Every request goes on a new connection, so the kernel spreads them over the writer and the
worker (SO_REUSEPORT); which process answered is read from the access log (`pid`). Shown:
read-after-write across processes, the same answers from every process, writes and admin
calls forwarded (authentication included), rate-limited collections answered by the writer
alone, metrics summed over the processes (promtool), a worker killed with SIGKILL replaced
without a failed request, SIGTERM stopping every process and removing the run directory, and
forwarded requests keeping their target, body limit and client address.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server.test_metrics import check_metrics
from tests.server.test_serve_security import serve_exit
from tests.support import ADMIN, ADMIN_KEY, ServerProcess, bearer

DIM = 16
QUERY = "/v1/collections/docs/tenants/{tenant}/query"
POINTS = "/v1/collections/docs/tenants/{tenant}/points"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path / "data",
        "--read-workers",
        "1",
        "--durability",
        "os",
        env={"SHOAL_ADMIN_KEY": ADMIN_KEY},
    ).start(120)
    try:
        _wait_for_workers(process, 1)
        yield process
    finally:
        if process.process is not None and process.process.poll() is None:
            process.stop()


def _log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    time.sleep(0.3)  # info lines are flushed every 0.1 s
    lines = []
    for raw in server.log_path.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # every line whole: no process cut into another's
    return lines


def _worker_pids(server: ServerProcess) -> list[int]:
    started = re.compile(r"read worker \d+ started \(pid (\d+)\)")
    pids = []
    for line in _log_lines(server):
        match = started.search(line["message"])
        if match:
            pids.append(int(match.group(1)))
    return pids


def _wait_for_workers(server: ServerProcess, count: int, timeout_s: float = 60.0) -> list[int]:
    """The pids of the `count` newest workers, once each answers (its startup complete)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = _worker_pids(server)[-count:]
        ready = {
            line.get("pid") for line in _log_lines(server) if "startup complete" in line["message"]
        }
        if len(pids) == count and set(pids) <= ready:
            return pids
        time.sleep(0.1)
    raise TimeoutError(server.log_path.read_text()[-3000:])


def _served_by(server: ServerProcess, path: str) -> dict[int, int]:
    """Requests to `path` answered 200, by process id (access log)."""
    counts: dict[int, int] = {}
    for line in _log_lines(server):
        access = line.get("logger") == "shoal.access" and line.get("path") == path
        if access and line.get("status") == 200:
            counts[line["pid"]] = counts.get(line["pid"], 0) + 1
    return counts


def _call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on its own connection, so the kernel picks the process anew."""
    with server.client() as client:
        return client.request(method, path, headers=kwargs.pop("headers", ADMIN), **kwargs)


def _create(server: ServerProcess, **extra: Any) -> None:
    body = {"name": "docs", "dim": DIM, "metric": "cosine", "schema": {"n": "integer"}, **extra}
    response = _call(server, "POST", "/v1/collections", json=body)
    assert response.status_code == 201, response.text


def test_a_write_is_in_every_later_answer_whichever_process_answers(
    server: ServerProcess,
) -> None:
    _create(server)
    rng = np.random.default_rng(1)
    for i in range(150):
        vector = rng.standard_normal(DIM).astype(np.float32).tolist()
        point = {"id": f"p{i}", "vector": vector, "attributes": {"n": i}}
        written = _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": [point]})
        assert written.status_code == 200, written.text
        found = _call(server, "POST", QUERY.format(tenant="acme"), json={"vector": vector, "k": 1})
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["id"] == f"p{i}", f"write {i} not seen"
        # A patch, then a filtered query that only the patched value matches.
        patched = _call(
            server, "PATCH", POINTS.format(tenant="acme") + f"/p{i}", json={"attributes": {"n": -i}}
        )
        assert patched.status_code == 200, patched.text
        body = {"vector": vector, "k": 1, "filter": {"n": -i}}
        found = _call(server, "POST", QUERY.format(tenant="acme"), json=body)
        assert [h["id"] for h in found.json()["results"]] == [f"p{i}"]
    served = _served_by(server, QUERY.format(tenant="acme"))
    assert server.process is not None
    assert server.process.pid in served and len(served) == 2, served  # both processes answered
    assert sum(served.values()) == 300


def test_every_process_gives_the_same_answers(server: ServerProcess) -> None:
    _create(server)
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((8, DIM))
    tenants = [f"t{i}" for i in range(6)]
    for t, tenant in enumerate(tenants):
        points = []
        for i in range(300):
            vector = centers[(t + i) % 8] + 0.3 * rng.standard_normal(DIM)
            shared = [tenants[(t + 1) % 6]] if i % 10 == 0 else []
            attributes = {"n": i % 7}
            points.append(
                {"id": f"{tenant}-{i}", "vector": vector.tolist(), "attributes": attributes,
                 "shared_with": shared}
            )  # fmt: skip
        response = _call(server, "PUT", POINTS.format(tenant=tenant), json={"points": points})
        assert response.status_code == 200, response.text
    for q in range(25):
        tenant = tenants[q % 6]
        body: dict[str, Any] = {
            "vector": (centers[q % 8] + 0.2 * rng.standard_normal(DIM)).tolist()
        }
        body |= {"k": 10, "filter": {"n": {"$lt": 4}}} if q % 2 else {"k": 10}
        answers = {
            json.dumps(_call(server, "POST", QUERY.format(tenant=tenant), json=body).json())
            for _ in range(6)
        }
        assert len(answers) == 1, answers
    served = {pid for path in (QUERY.format(tenant=t) for t in tenants)
              for pid in _served_by(server, path)}  # fmt: skip
    assert len(served) == 2, served


def test_writes_and_admin_calls_are_forwarded_with_their_keys(server: ServerProcess) -> None:
    _create(server)
    keys, ids = [], []
    for _ in range(8):
        created = _call(
            server,
            "POST",
            "/v1/keys",
            json={"collection": "docs", "tenant": "acme", "role": "write"},
        )
        assert created.status_code == 201, created.text
        keys.append(created.json()["key"])
        ids.append(created.json()["id"])
    for i, key in enumerate(keys):
        point = {"id": f"k{i}", "vector": [1.0] * DIM}
        written = _call(
            server,
            "PUT",
            POINTS.format(tenant="acme"),
            json={"points": [point]},
            headers=bearer(key),
        )
        assert written.status_code == 200, written.text
        # The key minted through any process opens the query on any process at once.
        found = _call(
            server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM, "k": 20},
            headers=bearer(key),
        )  # fmt: skip
        assert found.status_code == 200, found.text
        assert len(found.json()["results"]) == i + 1
        # ... and not another tenant's data, wherever it lands.
        other = _call(
            server, "POST", QUERY.format(tenant="globex"), json={"vector": [1.0] * DIM},
            headers=bearer(key),
        )  # fmt: skip
        assert other.status_code == 404, other.text
    for _ in range(10):
        anonymous = _call(
            server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM}, headers={}
        )
        assert anonymous.status_code == 401
        bad = _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": []})
        assert bad.status_code == 422 and "points" in bad.json()["error"]["message"]
    revoked = _call(server, "DELETE", f"/v1/keys/{ids[0]}")
    assert revoked.status_code == 200, revoked.text
    for _ in range(6):  # refused at once by every process
        refused = _call(
            server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM},
            headers=bearer(keys[0]),
        )  # fmt: skip
        assert refused.status_code == 401
    listed = _call(server, "GET", "/v1/collections/docs")
    assert listed.status_code == 200 and listed.json()["points"] == 8


def test_queries_of_a_rate_limited_collection_are_answered_by_the_writer(
    server: ServerProcess,
) -> None:
    _create(server)
    point = {"id": "a", "vector": [1.0] * DIM}
    assert _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": [point]}).is_success
    quota = {"quotas": {"query_rate": 2, "query_burst": 5}}
    response = _call(server, "PATCH", "/v1/collections/docs/tenants/acme", json=quota)
    assert response.status_code == 200, response.text
    started = time.monotonic()
    statuses = [
        _call(server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM}).status_code
        for _ in range(20)
    ]
    elapsed = time.monotonic() - started
    allowed = 5 + int(2 * elapsed) + 1
    assert statuses.count(200) <= allowed, (statuses, elapsed)  # one bucket, not one a process
    assert statuses.count(429) >= 20 - allowed
    assert server.process is not None
    assert set(_served_by(server, QUERY.format(tenant="acme"))) == {server.process.pid}


def test_metrics_sum_every_process(server: ServerProcess) -> None:
    _create(server)
    point = {"id": "a", "vector": [1.0] * DIM}
    assert _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": [point]}).is_success
    for _ in range(40):
        assert _call(server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM})
    assert len(_served_by(server, QUERY.format(tenant="acme"))) == 2
    text = _call(server, "GET", "/metrics").text
    check_metrics(text)
    counted = re.search(r'shoal_queries_total\{collection="docs",strategy="exact"\} (\S+)', text)
    assert counted is not None and float(counted.group(1)) == 40.0


def test_a_killed_worker_is_replaced_and_no_request_fails(server: ServerProcess) -> None:
    _create(server)
    point = {"id": "a", "vector": [1.0] * DIM}
    assert _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": [point]}).is_success
    (victim,) = _wait_for_workers(server, 1)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # meanwhile: new connections reach the living
        response = _call(server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM})
        assert response.status_code == 200, response.text
    (replacement,) = _wait_for_workers(server, 1)
    assert replacement != victim
    for i in range(60):  # the new worker follows writes made before and after it started
        point = {"id": f"b{i}", "vector": [float(i + 2)] + [1.0] * (DIM - 1)}
        assert _call(server, "PUT", POINTS.format(tenant="acme"), json={"points": [point]})
        found = _call(
            server, "POST", QUERY.format(tenant="acme"), json={"vector": [1.0] * DIM, "k": 100}
        )
        assert len(found.json()["results"]) == i + 2
    assert replacement in _served_by(server, QUERY.format(tenant="acme"))


def _run_dirs(writer_pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"shoal-run-{writer_pid}-*"))


def test_sigterm_stops_every_process_and_removes_the_run_directory(
    server: ServerProcess,
) -> None:
    (worker,) = _wait_for_workers(server, 1)
    assert server.process is not None
    [run_dir] = _run_dirs(server.process.pid)
    assert (run_dir / "writer.sock").exists()
    assert server.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert not run_dir.exists()


def _raw(server: ServerProcess, request: bytes) -> bytes:
    """One request as bytes on its own connection (httpx would normalize the path)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_forwarded_requests_keep_their_target_limits_and_client_address(
    server: ServerProcess,
) -> None:
    _create(server)
    auth = f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
    for _ in range(8):
        # The target byte for byte: a dot segment is no route here, as on one process.
        answer = _raw(server, b"GET /v1/collections/docs/../../v1/keys HTTP/1.1\r\nHost: x\r\n"
                      + auth + b"Connection: close\r\n\r\n")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert answer.lower().count(b"\r\ndate:") == 1  # the writer's, not repeated
        # A declared body over the limit: 413 at once, from whichever process.
        big = b"PUT " + POINTS.format(tenant="acme").encode() + b" HTTP/1.1\r\nHost: x\r\n"
        big += auth + b"Content-Type: application/json\r\nContent-Length: 99999999\r\n"
        answer = _raw(server, big + b"Connection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # The audit log names the client, not the workers' socket.
        refused = _call(server, "GET", "/v1/collections", headers=bearer("sk_nope.nope"))
        assert refused.status_code == 401
    failures = [line for line in _log_lines(server) if line.get("audit") == "auth_failed"]
    assert len(failures) == 8
    assert {line.get("client") for line in failures} == {"127.0.0.1"}
    # A client cannot claim another address: the header counts only from the workers.
    spoofed = _call(
        server, "GET", "/v1/collections", headers={"X-Shoal-Client": "10.1.2.3:4", **bearer("x")}
    )
    assert spoofed.status_code == 401
    failures = [line for line in _log_lines(server) if line.get("audit") == "auth_failed"]
    assert failures[-1].get("client") == "127.0.0.1"


def test_a_second_server_on_the_port_is_refused_not_shared(
    server: ServerProcess, tmp_path: Path
) -> None:
    """SO_REUSEPORT would let another server of the same user split the connections."""
    second = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(tmp_path / "other"),
         "--port", str(server.port), "--read-workers", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1, second.stderr
    assert "cannot listen" in second.stderr


def test_workers_stop_when_the_writer_is_killed(server: ServerProcess, tmp_path: Path) -> None:
    """kill -9 of the writer: no worker lives on as an orphan serving stale reads (the
    kernel's parent-death signal), and nothing answers on the port any more."""
    (worker,) = _wait_for_workers(server, 1)
    server.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"read worker {worker} outlived its writer")
    with pytest.raises(httpx.TransportError):
        _call(server, "GET", "/healthz")
    # Its run directory stays behind; the next writer with workers removes it.
    assert server.process is not None
    [left] = _run_dirs(server.process.pid)
    after = ServerProcess(
        tmp_path / "data", "--read-workers", "1", env={"SHOAL_ADMIN_KEY": ADMIN_KEY}
    ).start(120)
    try:
        assert not left.exists()
    finally:
        after.stop()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--read-workers", "-1"), {}, "read_workers"),
        (("--read-workers", "65"), {}, "read_workers"),
        ((), {"SHOAL_READ_WORKERS": "two"}, "read_workers"),
        (("--read-workers", "1"), {"SHOAL_LEAN_LANE": "false"}, "lean lane"),
    ],
)
def test_bad_read_worker_settings_stop_the_server_with_a_message(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    code, output = serve_exit(tmp_path, *args, env=env)
    assert code == 2 and message in output, output
