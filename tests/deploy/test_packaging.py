"""Packaging: the Dockerfile, the compose stack, the Grafana dashboard and the Kubernetes manifests.

No Docker engine runs here, so the image is never built: the Dockerfile is linted by hadolint,
its healthcheck command is run against a real `shoal serve`, the compose file is validated by
`docker-compose config`, Prometheus' configuration and every dashboard query by promtool, and
the files are checked against each other (ports, paths, uids, labels).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.auth import InsecureListen, check_listen
from server.settings import Settings
from tests.support import ServerProcess, app_client

REPO = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "shoal.json"
DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = DEPLOY / "grafana" / "provisioning" / "dashboards" / "shoal.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEM_PACKAGES = "run `bash .ci/system-packages.sh` (as root) to install it"


def scraped_families(data_dir: Path) -> set[str]:
    """Families a real app exports after a little traffic, as its `# TYPE` lines name them."""
    with app_client(data_dir) as client:
        client.post("/v1/collections", json={"name": "c", "dim": 2})
        points = [{"id": "p", "vector": [1.0, 0.0]}]
        client.put("/v1/collections/c/tenants/t/points", json={"points": points})
        client.post("/v1/collections/c/tenants/t/query", json={"vector": [1.0, 0.0]})
        text = client.get("/metrics").text
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


# --- helpers -------------------------------------------------------------------------------


def _tool(name: str, hint: str) -> str:
    """The path of a command-line tool; a missing one fails the test (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not installed: {hint}")
    return path


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comment lines dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions(text):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` (relative, '/'-separated) is left out of the build context.

    Docker's rules, simplified: the last matching pattern wins, `!` re-includes, a pattern that
    matches a directory also matches everything under it, `**/` matches at any depth.
    """
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        candidates = prefixes
        if pattern.startswith("**/"):
            pattern = pattern[3:]
            candidates = [
                "/".join(parts[i : j + 1]) for i in range(len(parts)) for j in range(i, len(parts))
            ]
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negate
    return ignored


def _dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# Removed before looking for metric names: quoted strings (label values, regexes), grouping
# clauses (`by (le, route)` names labels) and the label names of matchers (`route=~`).
_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_PROMQL_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", flags=re.IGNORECASE
)
_PROMQL_MATCHER_NAME = re.compile(r"\b\w+\s*(?:=~|!~|!=|=)")
_METRIC_NAME = re.compile(r"(?<![\w:$])((?:shoal|process)_[A-Za-z0-9_:]*[A-Za-z0-9])")
# Sample names a histogram (or summary) family exposes besides its own name. `_total` is not
# stripped: counters are named with it in `# TYPE` lines and PromQL alike.
_SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count")


def promql_metric_names(expr: str) -> set[str]:
    """The metric families one PromQL expression reads (`shoal_*` and `process_*`)."""
    expr = _PROMQL_STRING.sub('""', expr)
    expr = _PROMQL_GROUPING.sub(" ", expr)
    expr = _PROMQL_MATCHER_NAME.sub(" ", expr)
    names = set()
    for name in _METRIC_NAME.findall(expr):
        for suffix in _SAMPLE_SUFFIXES:
            stem = name.removesuffix(suffix)
            if stem != name and stem.count("_") >= 1:
                name = stem
                break
        names.add(name)
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels (rows' nested panels too) and of the variables."""
    queries: list[str] = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
        queries.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str) and query:
            queries.append(query)
    return queries


def dashboard_metric_names(dashboard: dict[str, Any]) -> set[str]:
    """The metric families a Grafana dashboard's queries name, as `# TYPE` lines name them.

    Histogram samples count as their family (`x_bucket`, `x_sum`, `x_count` -> `x`); counters
    keep `_total`. Compare with a scrape through `unexported_metric_names`, which also accepts
    the `_total`-less family names of prometheus_client's parser.
    """
    return set().union(*map(promql_metric_names, dashboard_queries(dashboard)))


def unexported_metric_names(used: set[str], exported: set[str]) -> set[str]:
    """The names in `used` that no family in `exported` provides."""
    return {
        name
        for name in used
        if name not in exported and not (name.endswith("_total") and name[:-6] in exported)
    }


def _load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels, found = list(dashboard["panels"]), []
    while panels:
        panel = panels.pop(0)
        found.append(panel)
        panels.extend(panel.get("panels", []))
    return found


def _kubernetes(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (REPO / source).resolve()
    return mounts


# --- Dockerfile ----------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} is missing: install the dev extras (`pip install -e '.[dev]'`)")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_hnswlib_portably_and_runs_unprivileged() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    base = {"python:3.11-slim-bookworm"}
    args = dict(
        a.split("=", 1) for k, a in dockerfile_instructions(DOCKERFILE.read_text()) if k == "ARG"
    )
    for stage in stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert image in base, f"every stage on the pinned slim base, not {image}"
    builder, runtime = stages[0], stages[-1]
    assert _env(builder).get("HNSWLIB_NO_NATIVE") == "1"
    assert any(k == "RUN" and "--no-binary hnswlib" in a for k, a in builder)
    assert not any("build-essential" in a for _, a in runtime), "no compilers at run time"

    final = {k: a for k, a in runtime}  # the last of each instruction wins
    assert final["USER"].split(":")[0] == "10001"
    assert final["VOLUME"] == "/data"
    assert final["EXPOSE"] == "8080"
    assert json.loads(final["ENTRYPOINT"]) == ["shoal"]
    assert json.loads(final["CMD"]) == ["serve"]
    assert "/healthz" in final["HEALTHCHECK"]
    env = _env(runtime)
    assert env["SHOAL_DATA_DIR"] == "/data"
    assert env["SHOAL_HOST"] == "0.0.0.0"
    assert env["SHOAL_PORT"] == "8080"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert env["OPENBLAS_NUM_THREADS"] == "1"


def test_dockerfile_environment_is_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    shoal_env = {k: v for k, v in _env(runtime).items() if k.startswith("SHOAL_")}
    for name in [n for n in os.environ if n.startswith("SHOAL_")]:
        monkeypatch.delenv(name)
    for name, value in shoal_env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (str(settings.data_dir), settings.host, settings.port) == ("/data", "0.0.0.0", 8080)


def test_healthcheck_command_passes_on_a_live_server_and_fails_without_one(
    tmp_path: Path,
) -> None:
    healthcheck = dict(dockerfile_instructions(DOCKERFILE.read_text()))["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"], "python: the slim image has no curl"
    probe = [sys.executable, "-c", command[2]]

    server = ServerProcess(tmp_path / "data").start()
    try:
        env = dict(os.environ, SHOAL_PORT=str(server.port))
        ok = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        assert server.stop() == 0
    down = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    patterns = _dockerignore_patterns()
    copied = [
        arguments.split()[0]
        for keyword, arguments in dockerfile_stages(DOCKERFILE.read_text())[0]
        if keyword == "COPY" and not arguments.startswith("--from")
    ]
    assert copied, "the builder copies the sources"
    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignored(source, patterns), f"{source} is copied but ignored"
    assert not dockerignored("server/cli.py", patterns)
    for left_out in (
        ".git", ".venv", "data", ".pytest_cache", ".ruff_cache", ".hypothesis",
        "bench", "bench/results", "docs/curator-debian.png", "tests",
        "api/__pycache__", "server/__pycache__/cli.cpython-311.pyc", "shoal.egg-info",
    ):  # fmt: skip
        assert dockerignored(left_out, patterns), f"{left_out} would enter the build context"


# --- compose, Prometheus, Grafana ----------------------------------------------------------


def test_compose_file_is_valid() -> None:
    compose = _tool("docker-compose", SYSTEM_PACKAGES)
    result = subprocess.run(
        [compose, "-f", str(COMPOSE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_files_that_exist_where_the_services_read_them() -> None:
    services = _compose()["services"]
    assert {"shoal", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for target, source in _bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source} at {target}: missing"

    shoal = services["shoal"]
    assert shoal["build"] == "."
    assert any(str(v).endswith(":/data") for v in shoal["volumes"])
    assert any(str(p).endswith("8080:8080") for p in shoal["ports"])

    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus")
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_flag.split("=", 1)[1]
    assert _bind_mounts(prometheus)[config_path] == PROMETHEUS

    grafana = services["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    mounts = _bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning/datasources"] == DATASOURCE.parent
    assert mounts["/etc/grafana/provisioning/dashboards"] == DASHBOARD_PROVIDER.parent
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]
    dashboards_in_container = provider["options"]["path"]
    assert mounts[dashboards_in_container] == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/{DASHBOARD.name}"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_prometheus_scrapes_the_compose_service_every_5_seconds() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "shoal")
    assert job["scrape_interval"] == "5s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    port = _compose()["services"]["shoal"]["environment"]["SHOAL_PORT"]
    assert job["static_configs"][0]["targets"] == [f"shoal:{port}"]

    datasource = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert datasource["uid"] == "prometheus"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool", SYSTEM_PACKAGES)
    # promtool checks that the bearer token file exists: the compose secret is mounted only in
    # the container, so point a copy of the configuration at a stand-in.
    token = tmp_path / "metrics-key"
    token.write_text("stand-in\n")
    config = PROMETHEUS.read_text().replace(_METRICS_KEY_IN_PROMETHEUS, str(token))
    assert config != PROMETHEUS.read_text()
    checked = tmp_path / "prometheus.yml"
    checked.write_text(config)
    result = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


_METRICS_KEY_IN_PROMETHEUS = "/run/secrets/shoal_metrics_key"


def test_prometheus_scrapes_with_the_metrics_key_shoal_reads() -> None:
    job = next(j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"])
    assert job["authorization"] == {
        "type": "Bearer",
        "credentials_file": _METRICS_KEY_IN_PROMETHEUS,
    }
    compose = _compose()
    services = compose["services"]
    assert "shoal_metrics_key" in services["prometheus"]["secrets"]
    shoal = services["shoal"]
    assert {"shoal_admin_key", "shoal_metrics_key"} <= set(shoal["secrets"])
    env = shoal["environment"]
    assert env["SHOAL_METRICS_KEY_FILE"] == _METRICS_KEY_IN_PROMETHEUS
    assert env["SHOAL_ADMIN_KEY_FILE"] == "/run/secrets/shoal_admin_key"
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for secret in compose["secrets"].values():
        path = (REPO / secret["file"]).resolve()
        assert path.parent == DEPLOY / "secrets", "the keys live in deploy/secrets/"
        assert "/deploy/secrets/*-key" in ignored and path.name.endswith("-key"), "never committed"
    assert (DEPLOY / "secrets" / "README.md").exists(), "how to make the key files"


def test_the_image_environment_with_an_admin_key_file_is_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = dockerfile_stages(DOCKERFILE.read_text())[-1]
    for name in [n for n in os.environ if n.startswith("SHOAL_")]:
        monkeypatch.delenv(name)
    for name, value in _env(runtime).items():
        if name.startswith("SHOAL_"):
            monkeypatch.setenv(name, value)
    key = tmp_path / "admin-key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    monkeypatch.setenv("SHOAL_ADMIN_KEY_FILE", str(key))
    settings = Settings()
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "0123456789abcdef0123456789abcdef"
    assert check_listen(settings) is None, "0.0.0.0 with an admin key: no warning, no refusal"
    monkeypatch.delenv("SHOAL_ADMIN_KEY_FILE")
    with pytest.raises(InsecureListen):
        check_listen(Settings())


def test_dashboard_panels_query_the_provisioned_datasource() -> None:
    dashboard = _load_dashboard()
    assert dashboard["schemaVersion"] >= 38
    assert dashboard["uid"] and dashboard["title"]
    panels = _all_panels(dashboard)
    assert len(panels) >= 12
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["datasource"]["uid"] == "prometheus", where
        assert panel["targets"], f"{where} has no query"
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target.get("datasource", panel["datasource"])["uid"] == "prometheus", where
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where


def test_dashboard_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in _all_panels(_load_dashboard()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                other = cells.setdefault((x, y), panel["id"])
                assert other == panel["id"], f"panels {other} and {panel['id']} overlap"


def test_dashboard_names_only_metrics_a_real_scrape_exports_and_shows_every_shoal_one(
    tmp_path: Path,
) -> None:
    exported = scraped_families(tmp_path / "data")
    used = dashboard_metric_names(_load_dashboard())
    assert unexported_metric_names(used, exported) == set()
    shoal = {name for name in exported if name.startswith("shoal_")}
    assert shoal <= used, f"not on the dashboard: {shoal - used}"


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    promtool = _tool("promtool", SYSTEM_PACKAGES)
    rules = []
    for panel in _all_panels(_load_dashboard()):
        for target in panel["targets"]:
            expr = re.sub(r"\$__(?:rate_interval|interval|range)\b", "5m", target["expr"])
            expr = re.sub(r"\$\{?\w+(?::\w+)?\}?", ".*", expr)  # dashboard variables
            rules.append(
                {"record": f"dashboard:panel{panel['id']}_{target['refId']}", "expr": expr}
            )
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (route) (rate(shoal_http_requests_total[5m]))", {"shoal_http_requests_total"}),
        (
            "histogram_quantile(0.99, sum by (le, strategy) "
            "(rate(shoal_query_duration_seconds_bucket[5m])))",
            {"shoal_query_duration_seconds"},
        ),
        (
            "sum(rate(shoal_group_commit_writes_sum[1m])) / "
            "sum(rate(shoal_group_commit_writes_count[1m]))",
            {"shoal_group_commit_writes"},
        ),
        # label values, regexes and label names are not metric names
        ('shoal_points{collection=~"shoal_docs|process_x", shoal_label!="a"}', {"shoal_points"}),
        ("sum without (shoal_shard) (process_open_fds)", {"process_open_fds"}),
        (
            "max(shoal_ready) * on (instance) group_left (shoal_v) shoal_up",
            {"shoal_ready", "shoal_up"},
        ),
        # a name that only contains a suffix keeps it; dashboard variables are not names
        ('shoal_points_summary + shoal_x{c=~"$shoal_var"}', {"shoal_points_summary", "shoal_x"}),
        ("rate(process_cpu_seconds_total[$__rate_interval])", {"process_cpu_seconds_total"}),
        ("label_values(shoal_ready, instance)", {"shoal_ready"}),
        ("up + node_load1", set()),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_dashboard_metric_names_reads_panels_rows_and_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "row", "panels": [{"targets": [{"expr": "shoal_points"}]}]},
            {"targets": [{"expr": "rate(shoal_writes_total[1m])"}, {"refId": "B"}]},
        ],
        "templating": {
            "list": [
                {"type": "query", "query": {"query": "label_values(shoal_tenants, collection)"}},
                {"type": "custom", "query": "shoal_not_a_query"},
            ]
        },
    }
    assert dashboard_metric_names(dashboard) == {
        "shoal_points",
        "shoal_writes_total",
        "shoal_tenants",
    }


def test_unexported_metric_names_accepts_either_counter_family_name() -> None:
    used = {"shoal_writes_total", "shoal_points", "shoal_gone"}
    # prometheus_client's parser names a counter family without `_total`
    assert unexported_metric_names(used, {"shoal_writes", "shoal_points"}) == {"shoal_gone"}
    assert unexported_metric_names(used, {"shoal_writes_total", "shoal_points"}) == {"shoal_gone"}
    assert unexported_metric_names({"shoal_points_total"}, {"shoal_points_total_x"}) == {
        "shoal_points_total"
    }


# --- Kubernetes ----------------------------------------------------------------------------


def test_kubernetes_manifests_parse_and_kustomization_lists_them() -> None:
    kustomization = _kubernetes("kustomization.yaml")[0]
    resources = kustomization["resources"]
    files = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(resources) == files
    kinds = {doc["kind"] for name in resources for doc in _kubernetes(name)}
    assert kinds == {"StatefulSet", "Service", "ServiceMonitor"}
    assert "secret.yaml" not in resources  # created by the operator, never from the repo
    for name in resources:
        for doc in _kubernetes(name):
            assert doc["apiVersion"] and doc["metadata"]["name"], name


def _statefulset() -> dict[str, Any]:
    return _kubernetes("statefulset.yaml")[0]


def _container() -> dict[str, Any]:
    return _statefulset()["spec"]["template"]["spec"]["containers"][0]


def test_statefulset_probes_volume_and_security() -> None:
    statefulset = _statefulset()
    assert statefulset["kind"] == "StatefulSet"
    spec = statefulset["spec"]
    assert spec["replicas"] == 1, "one writer per RocksDB directory"
    pod = spec["template"]["spec"]
    assert pod["enableServiceLinks"] is False, "service links would set SHOAL_PORT=tcp://..."
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}

    probes = {
        kind: container[kind]["httpGet"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(probe["port"] in ("http", 8080) for probe in probes.values())

    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    env = {e["name"]: e for e in container["env"]}
    assert env["SHOAL_DATA_DIR"]["value"] == "/data"

    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001 and security["fsGroup"] == 10001
    user = dict(dockerfile_instructions(DOCKERFILE.read_text()))["USER"]
    assert user.split(":")[0] == str(security["runAsUser"]), "the image's user"
    if container["securityContext"].get("readOnlyRootFilesystem"):
        numba_cache = _env(dockerfile_stages(DOCKERFILE.read_text())[-1])["NUMBA_CACHE_DIR"]
        assert any(numba_cache.startswith(path + "/") for path in mounts.values())

    resources = container["resources"]
    assert str(resources["requests"]["cpu"]) == "2" and str(resources["limits"]["cpu"]) == "2"
    assert resources["requests"]["memory"] and resources["limits"]["memory"]


def test_admin_key_comes_from_the_example_secret() -> None:
    reference = next(e for e in _container()["env"] if e["name"] == "SHOAL_ADMIN_KEY")
    ref = reference["valueFrom"]["secretKeyRef"]
    (secret,) = _kubernetes("examples/secret.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == ref["name"] == "shoal-admin"
    assert ref["key"] == "admin-key" and ref["key"] in secret["stringData"]

    metrics = next(e for e in _container()["env"] if e["name"] == "SHOAL_METRICS_KEY")
    metrics_ref = metrics["valueFrom"]["secretKeyRef"]
    assert metrics_ref == {"name": "shoal-admin", "key": "metrics-key"}
    assert metrics_ref["key"] in secret["stringData"]
    (monitor,) = _kubernetes("servicemonitor.yaml")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": metrics_ref}


def test_services_and_servicemonitor_select_the_pods() -> None:
    pod_labels = _statefulset()["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in _kubernetes("service.yaml")}
    for service in services.values():
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8080, "http")]
    headless = services[_statefulset()["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    cluster_ip = [s for s in services.values() if s["spec"].get("clusterIP") != "None"]
    assert [s["spec"].get("type", "ClusterIP") for s in cluster_ip] == ["ClusterIP"]

    (monitor,) = _kubernetes("servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in services.values() if wanted.items() <= s["metadata"]["labels"].items()]
    assert selected == cluster_ip, "exactly one Service scraped, or each pod is scraped twice"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
