"""The coalescing transport of `shoal serve` (server/http_protocol.py): each response one write.

`_CoalescingTransport` sits between uvicorn's httptools protocol and the socket: `write` only
collects bytes, and a callback scheduled with `loop.call_soon` hands what one turn of the event
loop wrote to the real transport in a single `write`. Getting that wrong would not fail loudly:
a response could lose its body, arrive twice, or be overtaken by the next one on a keep-alive
connection. So first unit tests against a fake transport on a real event loop (asyncio's and
uvloop's, the server's default): one turn is one write, two turns are two, `close` writes what
is pending first, writes to a closing transport are dropped quietly, and whatever the wrapper
does not define reaches the real transport. The protocol itself, in memory: the response
of the only request in flight is written as soon as it is whole, before the app returns;
with two in flight, at the end of the turn. Then a real `shoal serve` (which installs the
protocol, server/cli.py): 60 mixed requests over one keep-alive connection, a streamed NDJSON
export among them, each answer parsed and checked; and requests pipelined in one `sendall` on
a raw socket, each answered completely and in order.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
import uvloop
from uvicorn.config import Config
from uvicorn.server import ServerState

from server.http_protocol import CoalescingHttpToolsProtocol, _CoalescingTransport
from tests.api.helpers import collection_url, point_url, points_url, tenant_url
from tests.support import ServerProcess

# -- unit tests: a fake transport on a real event loop ------------------------------------------


@dataclass
class FakeTransport:
    """Records what reaches the socket side: writes (and their order against `close`)."""

    closing: bool = False
    events: list[tuple[str, bytes]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=lambda: {"peername": ("127.0.0.1", 50123)})
    reading_paused: bool = False

    @property
    def writes(self) -> list[bytes]:
        return [data for kind, data in self.events if kind == "write"]

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes), type(data)
        self.events.append(("write", data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append(("close", b""))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def pause_reading(self) -> None:
        self.reading_paused = True


LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Scenario = Callable[[_CoalescingTransport, FakeTransport], Coroutine[Any, Any, None]]


@pytest.fixture(params=[asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def run_on_loop(request: pytest.FixtureRequest) -> Callable[[Scenario], FakeTransport]:
    """Runs a scenario on a fresh loop of either kind; fails on any error the loop reported
    (an exception in the flush callback never reaches the coroutine)."""
    factory: LoopFactory = request.param

    def run(scenario: Scenario) -> FakeTransport:
        fake = FakeTransport()
        errors: list[dict[str, Any]] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _loop, context: errors.append(context))
            await scenario(_CoalescingTransport(fake, loop), fake)  # type: ignore[arg-type]
            for _ in range(3):  # let any callback still scheduled run
                await asyncio.sleep(0)

        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
        assert errors == [], errors
        return fake

    return run


def test_writes_in_one_turn_reach_the_socket_as_one_write(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        header = bytearray(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
        transport.write(header)
        header[:4] = b"XXXX"  # the caller may reuse its buffer: what was written is kept
        transport.write(b"body")
        transport.write(memoryview(b"!!"))
        transport.writelines([b"", b"tail"])
        assert fake.writes == []  # nothing before the end of the turn
        await asyncio.sleep(0)
        assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nbody!!tail"]

    fake = run_on_loop(scenario)
    assert len(fake.writes) == 1


def test_writes_in_separate_turns_are_separate_writes(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        transport.write(b"first")
        await asyncio.sleep(0)
        transport.write(b"second")
        transport.write(b"+third")
        await asyncio.sleep(0)
        transport.write(b"fourth")
        await asyncio.sleep(0)

    fake = run_on_loop(scenario)
    assert fake.writes == [b"first", b"second+third", b"fourth"]


def test_close_writes_what_is_pending_first(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        transport.write(b"bye")
        transport.close()
        assert fake.events == [("write", b"HTTP/1.1 400 Bad Request\r\n\r\nbye"), ("close", b"")]

    # The flush scheduled by the first write still runs after `close`: it must add nothing.
    fake = run_on_loop(scenario)
    assert fake.events == [("write", b"HTTP/1.1 400 Bad Request\r\n\r\nbye"), ("close", b"")]


def test_close_with_nothing_pending_only_closes(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        transport.write(b"done")
        await asyncio.sleep(0)
        transport.close()

    assert run_on_loop(scenario).events == [("write", b"done"), ("close", b"")]


def test_writes_pending_when_the_socket_closes_are_dropped(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        transport.write(b"lost")
        fake.closing = True  # e.g. the peer went away (connection_lost) within the turn
        await asyncio.sleep(0)
        assert fake.events == []
        transport.write(b"also lost")
        transport.close()  # uvicorn's connection_lost closes again: no write, no error
        assert fake.events == [("close", b"")]

    assert run_on_loop(scenario).writes == []


def test_what_the_wrapper_does_not_define_reaches_the_real_transport(run_on_loop: Any) -> None:
    async def scenario(transport: _CoalescingTransport, fake: FakeTransport) -> None:
        assert transport.get_extra_info("peername") == ("127.0.0.1", 50123)
        assert transport.get_extra_info("sslcontext", "none") == "none"
        transport.pause_reading()
        assert fake.reading_paused
        assert transport.is_closing() is False
        fake.closing = True
        assert transport.is_closing() is True
        with pytest.raises(AttributeError):
            transport.no_such_method()  # type: ignore[attr-defined]

    run_on_loop(scenario)


def _serve_in_memory(requests: int) -> tuple[list[FakeTransport], list[list[bytes]]]:
    """`requests` connections, each sending one GET in the same loop turn, to an app that
    notes, after its last `send` and before it returns, what its socket has received."""
    fakes = [FakeTransport() for _ in range(requests)]
    written_at_return: list[list[bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
        written_at_return.append(list(fakes[int(scope["path"][1:])].writes))

    async def main() -> None:
        config = Config(app=app, http=CoalescingHttpToolsProtocol, lifespan="off", access_log=False)
        config.load()
        state = ServerState()
        for i, fake in enumerate(fakes):
            protocol = CoalescingHttpToolsProtocol(config=config, server_state=state, app_state={})
            protocol.connection_made(fake)  # type: ignore[arg-type]
            protocol.data_received(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i)
        for _ in range(5):
            await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    return fakes, written_at_return


def test_a_lone_response_is_on_the_wire_before_the_app_returns() -> None:
    """The app's bookkeeping after its last `send` (metrics, the access log) does not delay
    the answer of the only request in flight."""
    [fake], [at_return] = _serve_in_memory(1)
    assert len(at_return) == 1 and at_return[0].endswith(b"\r\n\r\nok")
    assert fake.writes == at_return


def test_with_others_in_flight_a_response_waits_for_the_end_of_the_turn() -> None:
    fakes, at_return = _serve_in_memory(2)
    assert at_return == [[], []]  # both were in flight in that turn
    assert all(len(f.writes) == 1 and f.writes[0].endswith(b"\r\n\r\nok") for f in fakes)


# -- a real server --------------------------------------------------------------------------------

C = "coalesce"
DIM = 8
N_ACME = 1200  # more than one export chunk (500 points): a streamed body of several writes
N_GLOBEX = 7


@dataclass
class Dataset:
    acme: np.ndarray  # (N_ACME, DIM) float32, point `a{i}` is row i
    globex: np.ndarray


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One `shoal serve` for the module (no admin key: loopback, no authentication)."""
    process = ServerProcess(tmp_path_factory.mktemp("serve") / "data").start()
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log_path.read_text()


def points_of(prefix: str, vectors: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"id": f"{prefix}{i}", "vector": v.tolist(), "attributes": {"group": f"g{i % 4}", "n": i}}
        for i, v in enumerate(vectors)
    ]


@dataclass
class Step:
    """One request and what its answer must be."""

    name: str
    method: str
    path: str
    check: Callable[[httpx.Response], None]
    body: Any = None


def expect(status: int, response: httpx.Response) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def expect_error(status: int, code: str, starts: str = "") -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        body = expect(status, response)
        assert body["error"]["code"] == code, body
        assert body["error"]["message"].startswith(starts), body

    return check


def expect_nearest(point_id: str, k: int, with_vector: bool = False) -> Callable[..., None]:
    def check(response: httpx.Response) -> None:
        results = expect(200, response)["results"]
        assert len(results) == k, results
        assert results[0]["id"] == point_id and results[0]["owner"] == "acme", results[0]
        assert abs(results[0]["distance"]) < 1e-5, results[0]
        distances = [hit["distance"] for hit in results]
        assert distances == sorted(distances)
        assert all(("vector" in hit) == with_vector for hit in results)

    return check


def expect_point(point_id: str, vectors: np.ndarray) -> Callable[[httpx.Response], None]:
    i = int(point_id[1:])

    def check(response: httpx.Response) -> None:
        body = expect(200, response)
        assert body["id"] == point_id and body["owner"] == "acme", body
        assert body["attributes"] == {"group": f"g{i % 4}", "n": i}, body
        assert np.array_equal(np.asarray(body["vector"], dtype=np.float32), vectors[i])

    return check


def expect_export(ids: list[str]) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.content.endswith(b"\n")
        records = [json.loads(line) for line in response.content.splitlines()]
        assert records[0] == {
            "type": "tenant",
            "version": 1,
            "collection": C,
            "tenant": "acme",
            "dim": DIM,
            "metric": "cosine",
            "points": len(ids),
        }
        assert records[-1] == {"type": "end", "points": len(ids)}
        points = records[1:-1]
        assert all(p["type"] == "point" for p in points)
        assert [p["id"] for p in points] == sorted(ids)  # each owned point once, in id order

    return check


def expect_field(status: int, name: str, value: Any) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        body = expect(status, response)
        assert body[name] == value, body

    return check


def mixed_steps(data: Dataset) -> list[Step]:
    """60 requests: set-up, then a rotation of reads, writes, errors and exports."""
    tenant, points = tenant_url(C, "acme"), points_url(C, "acme")
    acme = points_of("a", data.acme)
    create = {"name": C, "dim": DIM, "metric": "cosine", "schema": {"group": "keyword"}}
    steps = [
        Step("create", "POST", "/v1/collections", expect_field(201, "name", C), create),
        Step("create-again", "POST", "/v1/collections", expect_error(409, "conflict"), create),
        Step(
            "bad-dim", "POST", "/v1/collections", expect_error(422, "invalid", "dim"),
            {"name": "other", "dim": 0},
        ),
    ]  # fmt: skip
    for start in range(0, N_ACME, 1000):
        batch = acme[start : start + 1000]
        steps.append(
            Step(f"upsert-{start}", "PUT", points, upserted(len(batch), 0), {"points": batch})
        )
    globex = {"points": points_of("g", data.globex)}
    steps.append(
        Step("upsert-globex", "PUT", points_url(C, "globex"), upserted(N_GLOBEX, 0), globex)
    )
    # The same points again: updates, the stored values unchanged.
    steps.append(Step("upsert-again", "PUT", points, upserted(0, 5), {"points": acme[:5]}))
    rotation: list[Callable[[int], Step]] = [
        lambda i: Step(
            f"query-a{i}", "POST", f"{tenant}/query", expect_nearest(f"a{i}", 10),
            {"vector": data.acme[i].tolist()},
        ),
        lambda i: Step(
            f"get-a{i}", "GET", point_url(C, "acme", f"a{i}") + "?with_vector=true",
            expect_point(f"a{i}", data.acme),
        ),
        lambda i: Step(
            f"missing-{i}", "GET", point_url(C, "acme", f"nope-{i}"),
            expect_error(404, "not_found"),
        ),
        lambda i: Step(
            f"wrong-dims-{i}", "POST", f"{tenant}/query",
            expect_error(422, "invalid", "vector"), {"vector": [1.0] * (DIM - 1)},
        ),
        lambda i: Step(
            f"k0-{i}", "POST", f"{tenant}/query",
            expect_error(422, "invalid", "k"), {"vector": [1.0] * DIM, "k": 0},
        ),
        lambda i: Step(
            f"big-query-a{i}", "POST", f"{tenant}/query",
            expect_nearest(f"a{i}", 200, with_vector=True),
            {"vector": data.acme[i].tolist(), "k": 200, "include": ["vector", "attributes"]},
        ),
        lambda i: Step(
            f"export-{i}", "GET", f"{tenant}/export",
            expect_export([f"a{j}" for j in range(N_ACME)]),
        ),
        lambda i: Step(
            f"unknown-collection-{i}", "POST", f"{tenant_url('ghost', 'acme')}/query",
            expect_error(404, "not_found"), {"vector": [1.0] * DIM},
        ),
        lambda i: Step(
            f"export-unknown-{i}", "GET", f"{tenant_url(C, 'nobody')}/export",
            expect_error(404, "not_found"),
        ),
        lambda i: Step(
            f"batch-{i}", "POST", f"{tenant}/query/batch", batch_nearest(f"a{i}", f"a{i + 1}"),
            {"queries": [{"vector": data.acme[i].tolist(), "k": 3},
                         {"vector": data.acme[i + 1].tolist(), "k": 1}]},
        ),
        lambda i: Step(
            f"count-{i}", "POST", f"{points}/count", expect_field(200, "count", N_ACME), {}
        ),
        lambda i: Step(
            f"collection-{i}", "GET", collection_url(C), expect_field(200, "dim", DIM)
        ),
    ]  # fmt: skip
    i = 0
    while len(steps) < 60:
        steps.append(rotation[i % len(rotation)](i * 7 % (N_ACME - 1)))
        i += 1
    return steps


def upserted(created: int, updated: int) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        assert expect(200, response) == {"created": created, "updated": updated}

    return check


def batch_nearest(first_id: str, second_id: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        first, second = expect(200, response)["queries"]
        assert [len(first["results"]), len(second["results"])] == [3, 1]
        assert first["results"][0]["id"] == first_id, first
        assert second["results"][0]["id"] == second_id, second

    return check


def dataset(seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        rng.standard_normal((N_ACME, DIM)).astype(np.float32),
        rng.standard_normal((N_GLOBEX, DIM)).astype(np.float32),
    )


def test_sixty_mixed_requests_on_one_keep_alive_connection(server: ServerProcess) -> None:
    steps = mixed_steps(dataset(1))
    assert len(steps) == 60 and len({s.name for s in steps}) == 60
    assert {s.name.split("-")[0] for s in steps} >= {"query", "get", "missing", "export", "batch"}
    local_addresses = set()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with server.client(limits=limits) as client:
        for step in steps:
            response = client.request(step.method, step.path, json=step.body)
            try:
                step.check(response)
            except AssertionError as exc:
                raise AssertionError(f"step {step.name}: {exc}") from exc
            assert response.headers.get("connection") != "close", step.name
            stream = response.extensions["network_stream"]
            local_addresses.add(stream.get_extra_info("client_addr"))
    # One connection served all 60: it was never closed and reopened.
    assert len(local_addresses) == 1, local_addresses


# -- pipelining on a raw socket -------------------------------------------------------------------


def raw_request(method: str, path: str, body: Any = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class ResponseReader:
    """Reads HTTP/1.1 responses with a Content-Length, one after another, off a socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; unparsed: {self.buffer[:200]!r}")
        self.buffer += chunk

    def read(self) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status, _reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert "transfer-encoding" not in headers, headers
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return RawResponse(int(status), headers, body)


def test_pipelined_requests_get_complete_answers_in_order(server: ServerProcess) -> None:
    collection = "pipelined"
    data = dataset(2)
    with server.client() as client:
        create = {"name": collection, "dim": DIM, "metric": "cosine"}
        assert client.post("/v1/collections", json=create).status_code == 201
        upsert = {"points": points_of("a", data.acme[:50])}
        assert client.put(points_url(collection, "acme"), json=upsert).status_code == 200
    tenant = tenant_url(collection, "acme")
    requests = [
        raw_request("GET", point_url(collection, "acme", "a3")),
        raw_request("POST", f"{tenant}/query", {"vector": data.acme[17].tolist(), "k": 5}),
        raw_request("GET", point_url(collection, "acme", "nope")),
        raw_request("POST", f"{tenant}/query", {"vector": [1.0] * (DIM + 1)}),
        raw_request("GET", "/healthz"),
    ]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"".join(requests))  # all of them before reading any answer
        reader = ResponseReader(sock)
        answers = [reader.read() for _ in requests]
        sock.settimeout(0.3)  # nothing more follows the last answer
        with pytest.raises(TimeoutError):
            reader._fill()
    statuses = [a.status for a in answers]
    assert statuses == [200, 200, 404, 422, 200], [(a.status, a.body[:200]) for a in answers]
    bodies = [json.loads(a.body) for a in answers]
    assert bodies[0]["id"] == "a3" and bodies[0]["attributes"] == {"group": "g3", "n": 3}
    results = bodies[1]["results"]
    assert len(results) == 5 and results[0]["id"] == "a17" and results[0]["distance"] < 1e-5
    assert bodies[2]["error"]["code"] == "not_found"
    assert bodies[3]["error"]["message"].startswith("vector")
    assert all(a.headers["x-request-id"] for a in answers)
    assert len({a.headers["x-request-id"] for a in answers}) == len(answers)
