"""`shoal cluster`: run collection DDL on every node of a scale-out, check them, move tenants.

In a scale-out (deploy/nginx/) every node holds every collection and a share of its tenants;
the proxy routes each (collection, tenant) to one node. So a collection is created and deleted
on every node, here, and never through the proxy (which refuses it):

    shoal cluster create-collection --nodes http://a:8080,http://b:8080 --name docs --dim 384
    shoal cluster delete-collection --nodes http://a:8080,http://b:8080 --name docs
    shoal cluster status --nodes http://a:8080,http://b:8080
    shoal cluster move-tenant --from http://a:8080 --to http://b:8080 --collection docs \\
        --tenant acme [--delete-source]
    shoal cluster rebalance --nodes http://a:8080,http://b:8080,http://c:8080 \\
        --collection docs [--copy | --drop-strays]

`rebalance` computes where nginx sends each tenant (its "home", `NginxRing`) for a server
list, and lists, copies home or drops the tenants held elsewhere: the steps of adding a node
(deploy/nginx/README.md).

On nodes with an admin key, pass it as `--admin-key-file` or in `SHOAL_ADMIN_KEY` (or
`SHOAL_ADMIN_KEY_FILE`), as for `shoal serve`: DDL, export and import are admin routes.

DDL is idempotent per node: a collection that exists with the same settings counts as created,
a missing one as deleted, so a fan-out that failed on one node is simply re-run. Each command
prints one line per node and exits 1 if any node failed.

Talks HTTP with httpx, imported on first use so that `shoal serve` does not need it.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from server.model import IndexSettings

if TYPE_CHECKING:
    import httpx

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024  # per import request; nodes accept 32 MiB by default


@dataclass
class NodeOutcome:
    node: str
    ok: bool
    detail: str


@dataclass
class NodeStatus:
    node: str
    ready: bool
    detail: str
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class MoveReport:
    ok: bool
    exported: int
    imported: int
    source_points: int | None
    target_points: int | None
    source_deleted: bool
    detail: str


# -- HTTP plumbing ------------------------------------------------------------------------


def _client(timeout_s: float, admin_key: str | None = None) -> httpx.Client:
    try:
        import httpx
    except ImportError:  # pragma: no cover - depends on the installation
        raise SystemExit("shoal cluster needs httpx: pip install httpx") from None
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
    headers = {"user-agent": "shoal-cluster"}
    if admin_key is not None:  # DDL, export and import are admin routes on secured nodes
        headers["authorization"] = f"Bearer {admin_key}"
    return httpx.Client(timeout=timeout, headers=headers)


def _url(node: str, *segments: str) -> str:
    return node.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)


def _error_text(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


def _fan_out(
    nodes: list[str],
    timeout_s: float,
    action: Callable[[httpx.Client, str], NodeOutcome],
    admin_key: str | None = None,
) -> list[NodeOutcome]:
    import httpx

    outcomes = []
    with _client(timeout_s, admin_key) as client:
        for node in nodes:
            try:
                outcomes.append(action(client, node))
            except httpx.HTTPError as exc:
                outcomes.append(NodeOutcome(node, False, f"unreachable: {exc!r}"))
    return outcomes


# -- DDL ----------------------------------------------------------------------------------


def create_collection(
    nodes: list[str],
    name: str,
    dim: int,
    metric: str = "cosine",
    schema: dict[str, str] | None = None,
    index: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    admin_key: str | None = None,
) -> list[NodeOutcome]:
    """Create the collection on every node; one that exists with the same settings is fine."""
    body = {"name": name, "dim": dim, "metric": metric, "schema": schema or {}}
    if index:
        body["index"] = index
    wanted = {
        "dim": dim,
        "metric": metric,
        "schema": schema or {},
        "index": IndexSettings().to_dict() | (index or {}),
    }

    def create(client: httpx.Client, node: str) -> NodeOutcome:
        response = client.post(_url(node, "v1", "collections"), json=body)
        if response.status_code == 201:
            return NodeOutcome(node, True, "created")
        if response.status_code != 409:
            return NodeOutcome(node, False, _error_text(response))
        existing = client.get(_url(node, "v1", "collections", name))
        if existing.status_code != 200:
            return NodeOutcome(node, False, _error_text(existing))
        config = existing.json()
        differences = [
            f"{key} {config.get(key)!r} (wanted {value!r})"
            for key, value in wanted.items()
            if key != "index" and config.get(key) != value
        ]
        index_now = config.get("index") or {}
        differences += [
            f"index.{key} {index_now.get(key)!r} (wanted {value!r})"
            for key, value in wanted["index"].items()
            if index_now.get(key) != value
        ]
        if differences:
            return NodeOutcome(node, False, "exists with other settings: " + "; ".join(differences))
        return NodeOutcome(node, True, "exists with the same settings")

    return _fan_out(nodes, timeout_s, create, admin_key)


def delete_collection(
    nodes: list[str],
    name: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    admin_key: str | None = None,
) -> list[NodeOutcome]:
    """Delete the collection on every node; a node without it counts as done."""

    def delete(client: httpx.Client, node: str) -> NodeOutcome:
        response = client.delete(_url(node, "v1", "collections", name))
        if response.status_code == 200:
            return NodeOutcome(node, True, "deleted")
        if response.status_code == 404:
            return NodeOutcome(node, True, "absent")
        return NodeOutcome(node, False, _error_text(response))

    return _fan_out(nodes, timeout_s, delete, admin_key)


def status(
    nodes: list[str], timeout_s: float = DEFAULT_TIMEOUT_S, admin_key: str | None = None
) -> list[NodeStatus]:
    """Readiness and collections (with their point and tenant counts) of every node."""
    import httpx

    statuses = []
    with _client(timeout_s, admin_key) as client:
        for node in nodes:
            try:
                ready = client.get(_url(node, "readyz"))
                if ready.status_code != 200:
                    statuses.append(NodeStatus(node, False, _error_text(ready)))
                    continue
                listed = client.get(_url(node, "v1", "collections"))
                if listed.status_code != 200:
                    statuses.append(NodeStatus(node, False, _error_text(listed)))
                    continue
                collections = {c["name"]: c for c in listed.json()["collections"]}
                statuses.append(NodeStatus(node, True, "ready", collections))
            except httpx.HTTPError as exc:
                statuses.append(NodeStatus(node, False, f"unreachable: {exc!r}"))
    return statuses


def inconsistencies(statuses: list[NodeStatus]) -> list[str]:
    """Collections missing on some ready node, or configured differently across nodes."""
    ready = [s for s in statuses if s.ready]
    names = sorted({name for s in ready for name in s.collections})
    problems = []
    for name in names:
        missing = [s.node for s in ready if name not in s.collections]
        if missing:
            problems.append(f"collection {name!r} is missing on {', '.join(missing)}")
        configs = {
            json.dumps(
                {k: s.collections[name].get(k) for k in ("dim", "metric", "schema", "index")}
            )
            for s in ready
            if name in s.collections
        }
        if len(configs) > 1:
            problems.append(f"collection {name!r} has different settings across nodes")
    return problems


# -- moving a tenant ----------------------------------------------------------------------


def _tenant_points(client: httpx.Client, node: str, collection: str, tenant: str) -> int | None:
    response = client.get(_url(node, "v1", "collections", collection, "tenants", tenant))
    if response.status_code == 404 and response.json()["error"]["message"].startswith("tenant"):
        return None
    if response.status_code != 200:
        raise RuntimeError(f"{node}: {_error_text(response)}")
    return int(response.json()["points"])


def _export(
    client: httpx.Client, node: str, collection: str, tenant: str
) -> Iterator[tuple[dict[str, Any], bytes]]:
    """(record, raw line) of every line of the export, checking it arrived complete."""
    url = _url(node, "v1", "collections", collection, "tenants", tenant, "export")
    with client.stream("GET", url) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"export from {node}: {_error_text(response)}")
        ended = False
        points = 0
        for text in response.iter_lines():
            if not text:
                continue
            record = json.loads(text)
            if record.get("type") == "point":
                points += 1
            elif record.get("type") == "end":
                if record.get("points") != points:
                    raise RuntimeError(f"export from {node}: the end line does not match")
                ended = True
            yield record, text.encode()
        if not ended:
            raise RuntimeError(f"export from {node} was cut short (no end line)")


def _digest_points(
    client: httpx.Client, node: str, collection: str, tenant: str
) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    for record, raw in _export(client, node, collection, tenant):
        if record.get("type") == "point":
            digest.update(raw + b"\n")
            count += 1
    return count, digest.hexdigest()


def move_tenant(
    source: str,
    target: str,
    collection: str,
    tenant: str,
    delete_source: bool = False,
    target_tenant: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    log: Callable[[str], None] = lambda _: None,
    admin_key: str | None = None,
) -> MoveReport:
    """Copy a tenant from `source` to `target` (export, import in requests of about
    `batch_bytes`), verify that both nodes now hold the same points (counts and a digest of
    the exported lines: vectors, attributes, grants), and only then, with `delete_source`,
    delete it on the source. Re-runnable: the import upserts."""
    import httpx

    target_tenant = target_tenant or tenant
    imported = exported = 0
    try:
        with _client(timeout_s, admin_key) as client:
            before = _tenant_points(client, target, collection, target_tenant)
            if before:
                log(f"{target} already holds {before} points of {target_tenant!r}; upserting")
            import_url = _url(
                target, "v1", "collections", collection, "tenants", target_tenant, "import"
            )
            header: dict[str, Any] = {}
            pending: list[bytes] = []
            pending_bytes = 0
            digest = hashlib.sha256()

            def flush() -> None:
                nonlocal pending, pending_bytes, imported
                head = json.dumps(header | {"points": len(pending)}).encode()
                end = json.dumps({"type": "end", "points": len(pending)}).encode()
                body = b"\n".join([head, *pending, end]) + b"\n"
                headers = {"content-type": "application/x-ndjson"}
                response = client.post(import_url, content=body, headers=headers)
                if response.status_code != 200:
                    raise RuntimeError(f"import into {target}: {_error_text(response)}")
                imported += response.json()["imported"]
                pending, pending_bytes = [], 0

            for record, raw in _export(client, source, collection, tenant):
                kind = record.get("type")
                if kind == "tenant":
                    header = record
                elif kind == "point":
                    exported += 1
                    digest.update(raw + b"\n")
                    pending.append(raw)
                    pending_bytes += len(raw) + 1
                    if pending_bytes >= batch_bytes:
                        flush()
            if pending or imported == 0:
                flush()  # an empty tenant is still created on the target
            source_points = _tenant_points(client, source, collection, tenant)
            target_count, target_digest = _digest_points(client, target, collection, target_tenant)
            target_points = _tenant_points(client, target, collection, target_tenant)
            problems = []
            if source_points != exported:
                problems.append(
                    f"the source now has {source_points} points, {exported} were exported "
                    "(written meanwhile?)"
                )
            if target_points != exported or target_count != exported:
                problems.append(f"the target has {target_points} points, {exported} exported")
            elif target_digest != digest.hexdigest():
                problems.append("the target's points differ from the exported ones")
            if problems:
                return MoveReport(
                    False, exported, imported, source_points, target_points, False,
                    "; ".join(problems) + "; the source was kept",
                )  # fmt: skip
            deleted = False
            if delete_source:
                url = _url(source, "v1", "collections", collection, "tenants", tenant)
                response = client.delete(url)
                if response.status_code != 200:
                    return MoveReport(
                        False, exported, imported, source_points, target_points, False,
                        f"copied and verified, but deleting the source failed: "
                        f"{_error_text(response)}",
                    )  # fmt: skip
                deleted = True
            detail = "copied and verified" + (", source deleted" if deleted else "")
            return MoveReport(
                True, exported, imported, source_points, target_points, deleted, detail
            )
    except (httpx.HTTPError, RuntimeError, ValueError) as exc:
        return MoveReport(False, exported, imported, None, None, False, str(exc) or repr(exc))


# -- placement: where the proxy sends each tenant -----------------------------------------


class NginxRing:
    """The node nginx's `hash $key consistent` picks for a key (ngx_http_upstream_hash_module,
    Ketama-style as in Cache::Memcached::Fast): 160 points per server and weight unit at
    crc32(host, 0, port, previous point), a key goes to the first point >= crc32(key), wrapping
    around. `servers` are spelled exactly as in the `server` lines of the upstream block."""

    def __init__(self, servers: list[str], weights: dict[str, int] | None = None):
        points: dict[int, str] = {}
        for server in servers:
            host, port = _host_port(server.encode())
            previous = 0
            for _ in range(160 * (weights or {}).get(server, 1)):
                point = zlib.crc32(host + b"\0" + port + struct.pack("<I", previous))
                points.setdefault(point, server)  # nginx keeps one of equal points
                previous = point
        self._hashes = sorted(points)
        self._servers = [points[h] for h in self._hashes]

    def server_for(self, key: str) -> str:
        index = bisect.bisect_left(self._hashes, zlib.crc32(key.encode()))
        return self._servers[index % len(self._hashes)]


def _host_port(server: bytes) -> tuple[bytes, bytes]:
    if server[:5].lower() == b"unix:":
        return server[5:], b""
    host, colon, port = server.rpartition(b":")
    if colon and port.isdigit():
        return host, port
    return server, b""


def shard_key(collection: str, tenant: str) -> str:
    """`$shoal_shard` of deploy/nginx/shoal.conf for a tenant's requests: nginx decodes the
    path and merges slashes, then takes the first segment after `/tenants/`."""
    segment = tenant.lstrip("/").split("/", 1)[0]
    if not segment:
        raise ValueError(f"tenant {tenant!r} cannot be routed by path: it is only slashes")
    return f"{collection}/{segment}"


@dataclass
class Stray:
    """A tenant with points on a node other than the one the proxy sends it to (its home)."""

    tenant: str
    node: str
    home: str
    points: int
    at_home: bool  # the home holds points of it too
    outcome: str = ""
    ok: bool = True


def _tenants(client: httpx.Client, node: str, collection: str) -> dict[str, int]:
    """Tenant -> owned points, every page."""
    found: dict[str, int] = {}
    cursor = None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        url = _url(node, "v1", "collections", collection, "tenants")
        response = client.get(url, params=params)
        if response.status_code != 200:
            raise RuntimeError(f"{node}: {_error_text(response)}")
        page = response.json()
        found.update((t["name"], t["points"]) for t in page["tenants"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def rebalance(
    nodes: list[str],
    collection: str,
    servers: list[str] | None = None,
    copy: bool = False,
    drop_strays: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    admin_key: str | None = None,
) -> list[Stray]:
    """The tenants that are not on their home node for the proxy's server list (`servers`,
    parallel to `nodes`; default: the host:port of each node URL), and what was done.

    `copy`: copy each stray to its home unless the home already has it (source kept).
    `drop_strays`: delete a stray copy where the home holds exactly the same points (by a
    digest of both exports); one that differs (written after the copy?) is kept and failed.
    Tenants without owned points (grantees, empty tenants) are left alone.
    """
    import httpx

    servers = servers or [urlsplit(node).netloc for node in nodes]
    if len(servers) != len(nodes):
        raise ValueError("--servers must name one upstream server per node, in order")
    ring = NginxRing(servers)
    node_of = dict(zip(servers, nodes, strict=True))
    strays: list[Stray] = []
    with _client(timeout_s, admin_key) as client:
        holdings = {node: _tenants(client, node, collection) for node in nodes}
        for node in nodes:
            for tenant, points in sorted(holdings[node].items()):
                home = node_of[ring.server_for(shard_key(collection, tenant))]
                if home != node and points > 0:
                    at_home = holdings[home].get(tenant, 0) > 0
                    strays.append(Stray(tenant, node, home, points, at_home))
        for stray in strays:
            try:
                if copy and not stray.at_home:
                    report = move_tenant(
                        stray.node, stray.home, collection, stray.tenant,
                        timeout_s=timeout_s, admin_key=admin_key,
                    )  # fmt: skip
                    stray.ok, stray.outcome = report.ok, f"copy: {report.detail}"
                    stray.at_home = report.ok
                elif drop_strays and stray.at_home:
                    here = _digest_points(client, stray.node, collection, stray.tenant)
                    there = _digest_points(client, stray.home, collection, stray.tenant)
                    if here != there:
                        stray.ok, stray.outcome = False, "differs from the home copy: kept"
                        continue
                    url = _url(stray.node, "v1", "collections", collection, "tenants", stray.tenant)
                    response = client.delete(url)
                    stray.ok = response.status_code == 200
                    stray.outcome = "dropped" if stray.ok else _error_text(response)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                stray.ok, stray.outcome = False, str(exc) or repr(exc)
    return strays


# -- command line -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `cluster` subcommands, on the parser `shoal cluster` was given."""
    commands = parser.add_subparsers(dest="cluster_command", required=True)

    def with_key(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--admin-key-file",
            type=Path,
            help="file holding the nodes' admin key (default: SHOAL_ADMIN_KEY or "
            "SHOAL_ADMIN_KEY_FILE; none: nodes running open)",
        )

    def with_nodes(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--nodes", required=True, help="comma-separated base URLs: http://a:8080,http://b:8080"
        )
        sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
        with_key(sub)

    create = commands.add_parser("create-collection", help="create a collection on every node")
    with_nodes(create)
    create.add_argument("--name", required=True)
    create.add_argument("--dim", type=int, required=True)
    create.add_argument("--metric", choices=["cosine", "l2", "ip"], default="cosine")
    create.add_argument("--schema", type=json.loads, default=None, help='{"field": "keyword"}')
    create.add_argument("--index", type=json.loads, default=None, help="Curator settings, JSON")
    delete = commands.add_parser("delete-collection", help="delete a collection on every node")
    with_nodes(delete)
    delete.add_argument("--name", required=True)
    state = commands.add_parser("status", help="readiness and collections of every node")
    with_nodes(state)
    move = commands.add_parser("move-tenant", help="copy a tenant to another node, verify")
    move.add_argument("--from", dest="source", required=True, help="base URL of the source")
    move.add_argument("--to", dest="target", required=True, help="base URL of the target")
    move.add_argument("--collection", required=True)
    move.add_argument("--tenant", required=True)
    move.add_argument("--target-tenant", help="name on the target (default: the same)")
    move.add_argument(
        "--delete-source", action="store_true", help="delete it on the source once verified"
    )
    move.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    move.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES)
    with_key(move)
    balance = commands.add_parser(
        "rebalance", help="list (or copy home, or drop) tenants not on the node nginx picks"
    )
    with_nodes(balance)
    balance.add_argument("--collection", required=True)
    balance.add_argument(
        "--servers",
        help="the upstream `server` lines' addresses, one per node in the same order "
        "(default: host:port of each node URL)",
    )
    mode = balance.add_mutually_exclusive_group()
    mode.add_argument("--copy", action="store_true", help="copy each stray tenant to its home")
    mode.add_argument(
        "--drop-strays", action="store_true", help="delete stray copies identical to the home's"
    )


def _nodes(value: str) -> list[str]:
    nodes = [n.strip().rstrip("/") for n in value.split(",") if n.strip()]
    if not nodes:
        raise SystemExit("--nodes: give at least one base URL")
    return nodes


def _print_outcomes(outcomes: list[NodeOutcome]) -> int:
    width = max(len(o.node) for o in outcomes)
    for outcome in outcomes:
        mark = "ok    " if outcome.ok else "FAILED"
        print(f"{outcome.node:<{width}}  {mark}  {outcome.detail}")
    failed = sum(not o.ok for o in outcomes)
    if failed:
        print(f"{failed} of {len(outcomes)} nodes failed; fix them and re-run", file=sys.stderr)
    return 1 if failed else 0


def _admin_key(path: Path | None) -> str | None:
    """The key from --admin-key-file, else from the `SHOAL_ADMIN_KEY*` settings."""
    from server.settings import Settings

    settings = Settings(admin_key_file=path) if path is not None else Settings()
    return None if settings.admin_key is None else settings.admin_key.get_secret_value()


def run(args: argparse.Namespace) -> int:
    command = args.cluster_command
    key = _admin_key(args.admin_key_file)
    if command == "create-collection":
        outcomes = create_collection(
            _nodes(args.nodes), args.name, args.dim, args.metric, args.schema, args.index,
            args.timeout, key,
        )  # fmt: skip
        return _print_outcomes(outcomes)
    if command == "delete-collection":
        return _print_outcomes(delete_collection(_nodes(args.nodes), args.name, args.timeout, key))
    if command == "status":
        statuses = status(_nodes(args.nodes), args.timeout, key)
        for node_status in statuses:
            print(f"{node_status.node}  {node_status.detail}")
            for name, c in sorted(node_status.collections.items()):
                print(
                    f"  {name}: dim {c['dim']} {c['metric']}, "
                    f"{c['points']} points, {c['tenants']} tenants"
                )
        problems = inconsistencies(statuses)
        for problem in problems:
            print(f"INCONSISTENT: {problem}", file=sys.stderr)
        return 1 if problems or not all(s.ready for s in statuses) else 0
    if command == "rebalance":
        import httpx

        servers = _nodes(args.servers) if args.servers else None
        try:
            strays = rebalance(
                _nodes(args.nodes), args.collection, servers, args.copy, args.drop_strays,
                args.timeout, key,
            )  # fmt: skip
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            print(f"FAILED: {exc or repr(exc)}", file=sys.stderr)
            return 1
        for stray in strays:
            where = "also at home" if stray.at_home else "not at home"
            outcome = f"  {'' if stray.ok else 'FAILED: '}{stray.outcome}" if stray.outcome else ""
            print(
                f"{stray.tenant!r} on {stray.node} ({stray.points} points), "
                f"home {stray.home}, {where}{outcome}"
            )
        print(f"{len(strays)} stray tenants", file=sys.stderr)
        return 0 if all(s.ok for s in strays) else 1
    report = move_tenant(
        args.source.rstrip("/"), args.target.rstrip("/"), args.collection, args.tenant,
        args.delete_source, args.target_tenant, args.timeout, args.batch_bytes,
        log=lambda message: print(message, file=sys.stderr), admin_key=key,
    )  # fmt: skip
    line = (
        f"{'ok' if report.ok else 'FAILED'}: {report.detail} "
        f"(exported {report.exported}, imported {report.imported}, "
        f"source {report.source_points}, target {report.target_points})"
    )
    print(line, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
