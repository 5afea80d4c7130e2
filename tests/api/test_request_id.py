"""Request ids: taken from `X-Request-ID` when safe, else generated; echoed; in the log lines."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.logs import REQUEST_ID, JsonFormatter
from tests.support import app_client

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """JSON lines of the `shoal` loggers (access log included) at INFO, as the server writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("shoal")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_clients_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "edge-7.Ab_c-0"})
    assert response.headers["x-request-id"] == "edge-7.Ab_c-0"


def test_a_request_id_is_generated_when_the_client_sends_none(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "sent",
    ["has space", "semi;colon", "x" * 129, "é", "a/b", "<script>"],
)
def test_an_unsafe_request_id_is_replaced(client: TestClient, sent: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": sent.encode()})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_a_request_id_of_128_characters_is_kept(client: TestClient) -> None:
    sent = "a" * 128
    assert client.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"] == sent


def test_error_responses_carry_the_request_id(tmp_path: Path) -> None:
    with app_client(tmp_path / "data", max_request_bytes=1024) as client:
        headers = {"X-Request-ID": "err-1"}
        unmatched = client.get("/no/such/route", headers=headers)
        too_large = client.post("/v1/collections", content=b"x" * 2000, headers=headers)
        bad_path = client.get("/v1/collections/a%1Fb", headers=headers)
        invalid = client.post("/v1/collections", json={"name": "c", "dim": 0}, headers=headers)
    for response, status in [(unmatched, 404), (too_large, 413), (bad_path, 422), (invalid, 422)]:
        assert response.status_code == status, response.text
        assert response.headers["x-request-id"] == "err-1"


def test_log_lines_written_while_serving_carry_the_request_id(
    client: TestClient, log_lines: io.StringIO
) -> None:
    body = {"name": "docs", "dim": 4, "metric": "cosine"}
    response = client.post("/v1/collections", json=body, headers={"X-Request-ID": "req-42"})
    assert response.status_code == 201
    records = _records(log_lines)
    # Logged by the Database in a worker thread, then by the middleware.
    created = [r for r in records if r["logger"] == "shoal.database"]
    assert created and created[0]["request_id"] == "req-42"
    [access] = [r for r in records if r["logger"] == "shoal.access"]
    assert access["request_id"] == "req-42"
    assert access["method"] == "POST"
    assert access["path"] == "/v1/collections"
    assert access["status"] == 201
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] > 0
    assert access["level"] == "info"


def test_the_access_line_shows_the_path_as_sent(client: TestClient, log_lines: io.StringIO) -> None:
    client.get("/v1/collections/docs/tenants/a%2Fb", params={"x": "1"})
    [access] = [r for r in _records(log_lines) if r["logger"] == "shoal.access"]
    assert access["path"] == "/v1/collections/docs/tenants/a%2Fb?x=1"
    assert access["status"] == 404


def test_json_lines_hold_extra_fields_and_the_traceback() -> None:
    logger = logging.getLogger("test.logs")
    record = logger.makeRecord(
        "test.logs", logging.ERROR, __file__, 1, "failed %s", ("x",), None, extra={"batch": 3}
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    token = REQUEST_ID.set("r-1")
    try:
        line = JsonFormatter().format(record)
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed x"
    assert entry["level"] == "error"
    assert entry["logger"] == "test.logs"
    assert entry["request_id"] == "r-1"
    assert entry["batch"] == 3
    assert "ValueError: boom" in entry["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


def test_lines_outside_a_request_have_no_request_id() -> None:
    record = logging.getLogger("t").makeRecord("t", logging.INFO, __file__, 1, "hi", (), None)
    assert "request_id" not in json.loads(JsonFormatter().format(record))
