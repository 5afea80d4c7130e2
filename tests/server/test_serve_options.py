"""A real `shoal serve` with uvicorn's other event loop and HTTP parser, and bad values refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.server.test_serve_security import serve_exit
from tests.support import ServerProcess


def test_asyncio_and_h11_serve_the_same_api(tmp_path: Path) -> None:
    env = {"SHOAL_EVENT_LOOP": "asyncio", "SHOAL_HTTP_PARSER": "h11"}
    server = ServerProcess(tmp_path / "data", env=env).start()
    try:
        body = {"name": "c", "dim": 2}
        assert httpx.post(f"{server.url}/v1/collections", json=body).status_code == 201
        points = {"points": [{"id": "a", "vector": [1.0, 0.0]}]}
        url = f"{server.url}/v1/collections/c/tenants/t/points"
        assert httpx.put(url, json=points).status_code == 200
        query = httpx.post(f"{url[: -len('/points')]}/query", json={"vector": [1.0, 0.5]})
        assert [hit["id"] for hit in query.json()["results"]] == ["a"]
    finally:
        assert server.stop() == 0
    assert "event loop asyncio, HTTP parser h11" in server.log_path.read_text()


@pytest.mark.parametrize(
    ("name", "value"), [("SHOAL_EVENT_LOOP", "trio"), ("SHOAL_HTTP_PARSER", "picohttp")]
)
def test_an_unknown_loop_or_parser_stops_the_server_with_a_message(
    tmp_path: Path, name: str, value: str
) -> None:
    code, output = serve_exit(tmp_path, env={name: value})
    field = name.removeprefix("SHOAL_").lower()
    assert code == 2 and "invalid configuration" in output and field in output, output
