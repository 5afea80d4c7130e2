"""A real `shoal serve`: the loopback rule without an admin key, --insecure, the admin key
from a file, and HTTPS with a self-signed certificate made by openssl."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import ADMIN, ADMIN_KEY, REPO, ServerProcess, free_port


def serve_exit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `shoal serve` expecting it to refuse to start; its exit code and output."""
    command = [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(tmp_path / "d")]
    result = subprocess.run(
        [*command, "--port", str(free_port()), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


def test_refuses_a_non_loopback_address_without_an_admin_key(tmp_path: Path) -> None:
    code, output = serve_exit(tmp_path, "--host", "0.0.0.0")
    assert code == 2
    assert "refusing to listen on 0.0.0.0 without an admin key" in output
    assert "--insecure" in output and "SHOAL_ADMIN_KEY" in output
    assert not (tmp_path / "d").exists(), "refused before opening the store"


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--tls-cert", "/nonexistent.pem"), {}, "tls_cert and tls_key go together"),
        ((), {"SHOAL_ADMIN_KEY": "short"}, "admin_key must be at least 16 characters"),
        (("--admin-key-file", "/nonexistent/key"), {}, "admin_key_file: cannot read"),
    ],
    ids=["cert-without-key", "short-admin-key", "missing-key-file"],
)
def test_bad_security_settings_stop_the_server_with_a_message(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    code, output = serve_exit(tmp_path, *args, env=env)
    assert code == 2 and message in output, output


def test_insecure_serves_beyond_loopback_without_auth_and_says_so_loudly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--host", "0.0.0.0", "--insecure").start()
    try:
        with server.client() as client:
            assert client.post("/v1/collections", json={"name": "c", "dim": 2}).status_code == 201
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text()
    assert "INSECURE: listening on 0.0.0.0 WITHOUT AUTHENTICATION" in log


def test_insecure_can_come_from_the_environment(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data", "--host", "0.0.0.0", env={"SHOAL_INSECURE": "1"}
    ).start()
    assert server.stop() == 0
    assert "INSECURE" in server.log_path.read_text()


def test_loopback_without_a_key_runs_open_and_says_so(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    assert server.stop() == 0
    assert "no admin key: authentication is off; listening on loopback" in (
        server.log_path.read_text()
    )


def test_with_an_admin_key_it_serves_beyond_loopback_and_requires_keys(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data", "--host", "0.0.0.0", env={"SHOAL_ADMIN_KEY": ADMIN_KEY}
    ).start()
    try:
        with server.client() as client:
            assert client.get("/v1/collections").status_code == 401
            assert client.get("/v1/collections", headers=ADMIN).json() == {"collections": []}
    finally:
        assert server.stop() == 0
    assert ADMIN_KEY not in server.log_path.read_text(), "a secret never reaches the log"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (Debian package `openssl`)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_serves_https_with_the_admin_key_from_a_file(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    key_file = tmp_path / "admin-key"
    key_file.write_text(ADMIN_KEY + "\n")  # secrets mounts often end in a newline
    server = ServerProcess(
        tmp_path / "data",
        "--host", "0.0.0.0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--admin-key-file", str(key_file),
        tls_ca=cert,
    ).start()  # fmt: skip
    try:
        assert server.url.startswith("https://")
        with server.client() as client:
            assert client.get("/readyz").json() == {"status": "ready"}
            assert client.get("/v1/collections").status_code == 401
            created = client.post("/v1/collections", json={"name": "c", "dim": 2}, headers=ADMIN)
            assert created.status_code == 201
        with pytest.raises(httpx.ConnectError):  # the certificate is not trusted by default
            httpx.get(f"{server.url}/readyz", timeout=5)
        with pytest.raises(httpx.TransportError):  # and plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{server.port}/readyz", timeout=5)
    finally:
        assert server.stop() == 0
    assert "serving on https://0.0.0.0" in server.log_path.read_text()
