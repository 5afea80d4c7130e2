"""Metrics across processes (read workers): separate processes count into one directory and the
writer's scrape shows the exact sums, once each, with its own gauges, no `_created` samples, and
passes `promtool check metrics`; a Metrics without a directory stays in memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import Counter
from prometheus_client import values as prometheus_values
from prometheus_client.parser import text_string_to_metric_families

from server.database import Database
from server.metrics import Metrics, process_exited
from server.settings import Settings
from tests.server.test_metrics import Samples, check_metrics, value
from tests.support import REPO

QUERY = "/v1/collections/{collection}/tenants/{tenant}/query"
UPSERT = "/v1/collections/{collection}/tenants/{tenant}/points"
ENV = "PROMETHEUS_MULTIPROC_DIR"

# One reader's workload, scaled by k (argv[2]); durations are exact binary fractions so the sums
# can be compared with ==.
READER = """
import os, sys
from pathlib import Path
from server.metrics import Metrics

assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # Metrics must not need it beforehand
metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
k = int(sys.argv[2])
for _ in range(k):
    metrics.http_request("POST", "/v1/collections/{collection}/tenants/{tenant}/query", 200, 0.125)
metrics.http_request("PUT", "/v1/collections/{collection}/tenants/{tenant}/points", 200, 0.5)
metrics.queries("kept", "exact", 0.25 * k, k)
metrics.queries("gone", "curator", 0.125, 1)
metrics.write("kept", "upsert", points=10 * k)
metrics.synced(0.001, k)
print(os.getpid())
"""
SCALES = (1, 2, 3)


@pytest.fixture(autouse=True)
def restore_multiproc_env() -> Iterator[None]:
    """A file-backed Metrics sets PROMETHEUS_MULTIPROC_DIR process-wide; later tests (and the
    servers they spawn) must not inherit it."""
    saved = os.environ.get(ENV)
    yield
    if saved is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = saved


def run_readers(directory: Path, scales: tuple[int, ...] = SCALES) -> list[int]:
    """Run one process per scale at once, each counting READER's workload; their pids."""
    env = {name: val for name, val in os.environ.items() if name != ENV}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(directory), str(k)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in scales
    ]
    pids = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        pids.append(int(out))
    return pids


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def scrape(metrics: Metrics) -> tuple[str, Samples]:
    text = metrics.exposition().decode()
    return text, parse(text)


def test_the_writers_scrape_sums_every_process_once(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    pids = run_readers(directory)
    assert len(set(pids)) == len(SCALES)

    writer = Metrics(multiprocess_dir=directory)
    for _ in range(10):
        writer.http_request("POST", QUERY, 200, 0.125)
    writer.write("kept", "upsert", points=4)
    text, samples = scrape(writer)

    check_metrics(text)
    assert "_created" not in text
    readers = sum(SCALES)

    requests = "shoal_http_requests_total"
    assert value(samples, requests, method="POST", route=QUERY, status="200") == readers + 10
    assert value(samples, requests, method="PUT", route=UPSERT, status="200") == len(SCALES)
    duration = "shoal_http_request_duration_seconds"
    post = {"method": "POST", "route": QUERY}
    assert value(samples, f"{duration}_count", **post) == readers + 10
    assert value(samples, f"{duration}_sum", **post) == (readers + 10) * 0.125
    assert value(samples, f"{duration}_bucket", le="0.1", **post) == 0
    assert value(samples, f"{duration}_bucket", le="0.25", **post) == readers + 10
    assert value(samples, f"{duration}_bucket", le="+Inf", **post) == readers + 10
    assert value(samples, f"{duration}_bucket", le="0.25", method="PUT", route=UPSERT) == 0
    assert value(samples, f"{duration}_bucket", le="0.5", method="PUT", route=UPSERT) == 3

    assert value(samples, "shoal_queries_total", collection="kept", strategy="exact") == readers
    assert value(samples, "shoal_queries_total", collection="gone", strategy="curator") == 3
    assert value(samples, "shoal_query_duration_seconds_count", strategy="exact") == readers
    assert value(samples, "shoal_query_duration_seconds_sum", strategy="exact") == readers * 0.25
    assert value(samples, "shoal_query_duration_seconds_count", strategy="curator") == 3
    assert value(samples, "shoal_query_duration_seconds_sum", strategy="curator") == 3 * 0.125

    assert value(samples, "shoal_writes_total", collection="kept", operation="upsert") == 4
    assert value(samples, "shoal_write_batch_points_count") == 4
    assert value(samples, "shoal_write_batch_points_sum") == 10 * readers + 4
    assert value(samples, "shoal_write_batch_points_bucket", le="5.0") == 1
    assert value(samples, "shoal_write_batch_points_bucket", le="10.0") == 2
    assert value(samples, "shoal_write_batch_points_bucket", le="25.0") == 3
    assert value(samples, "shoal_write_batch_points_bucket", le="50.0") == 4
    assert value(samples, "shoal_wal_sync_duration_seconds_count") == len(SCALES)
    assert value(samples, "shoal_group_commit_writes_count") == len(SCALES)
    assert value(samples, "shoal_group_commit_writes_sum") == readers

    # Process figures are the writer's own: one series each, no per-process label.
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_start_time_seconds") > 0
    assert not any("pid" in dict(labels) for _, labels in samples)

    # A reader's exit keeps its counts in the sums (they must not go backwards), and only a live
    # gauge's file is removed.
    live_gauge = directory / f"gauge_livesum_{pids[0]}-0.db"
    live_gauge.touch()
    for pid in pids:
        process_exited(directory, pid)
    assert not live_gauge.exists()
    after_text, after = scrape(writer)
    check_metrics(after_text)
    shoal = {key: v for key, v in samples.items() if key[0].startswith("shoal_")}
    assert {key: v for key, v in after.items() if key[0].startswith("shoal_")} == shoal


def test_state_gauges_are_the_writers_and_dropped_collections_leave_the_scrape(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    writer = Metrics(multiprocess_dir=directory)
    database = Database(Settings(data_dir=tmp_path / "data"), writer)
    writer.watch(database)
    database.open()
    try:
        database.create_collection("kept", 2, "l2")
        database.create_collection("gone", 2, "l2")
        run_readers(directory)
        writer.queries("gone", "curator", 0.125, 2)
        text, samples = scrape(writer)
        check_metrics(text)
        assert value(samples, "shoal_queries_total", collection="gone", strategy="curator") == 5
        assert value(samples, "shoal_ready") == 1
        assert value(samples, "shoal_points", collection="kept") == 0
        assert ("shoal_points", frozenset({("collection", "gone")})) in samples

        database.delete_collection("gone")  # the readers' files still hold their counts
        text, samples = scrape(writer)
        check_metrics(text)
        assert not any(("collection", "gone") in labels for _, labels in samples)
        assert value(samples, "shoal_queries_total", collection="kept", strategy="exact") == 6
        # Histograms without a collection label keep every observation.
        assert value(samples, "shoal_query_duration_seconds_count", strategy="curator") == 5

        # Created again, the collection resumes from its totals: no counter goes backwards.
        database.create_collection("gone", 2, "l2")
        writer.queries("gone", "curator", 0.125, 1)
        _, samples = scrape(writer)
        assert value(samples, "shoal_queries_total", collection="gone", strategy="curator") == 6
    finally:
        database.close()


def test_a_metrics_without_a_directory_stays_in_memory(tmp_path: Path) -> None:
    stock = prometheus_values.ValueClass
    directory = tmp_path / "metrics"
    directory.mkdir()
    before = Metrics()
    filed = Metrics(multiprocess_dir=directory)
    filed.http_request("GET", "/filed", 200, 0.1)
    filed.write("c", "upsert", 3)
    after = Metrics()
    for plain in (before, after):
        plain.http_request("GET", "/plain", 200, 0.1)
        plain.write("c", "upsert", 5)

    assert prometheus_values.ValueClass is stock
    built_later = Counter("unrelated", "Built by other code after both.", ["x"], registry=None)
    assert type(built_later.labels("y")._value) is stock
    for plain in (before, after):
        assert type(plain.http_requests.labels("GET", "/plain", "200")._value) is (
            prometheus_values.MutexValue
        )
        assert type(plain.http_duration.labels("GET", "/plain")._sum) is (
            prometheus_values.MutexValue
        )
        assert type(plain.write_batch._sum) is prometheus_values.MutexValue
    assert filed.http_requests.labels("GET", "/filed", "200")._value._multiprocess
    assert filed.write_batch._sum._multiprocess

    # The files hold the file-backed Metrics' series only, and each scrape shows its own.
    names = {path.name for path in directory.iterdir()}
    [file_set] = {name.rsplit("-", 1)[1] for name in names}  # "<n>.db": one Metrics' files
    assert names == {f"counter_{os.getpid()}-{file_set}", f"histogram_{os.getpid()}-{file_set}"}
    _, filed_samples = scrape(filed)
    requests = "shoal_http_requests_total"
    assert value(filed_samples, requests, method="GET", route="/filed", status="200") == 1
    assert value(filed_samples, requests, method="GET", route="/plain", status="200") == 0
    assert value(filed_samples, "shoal_write_batch_points_sum") == 3
    for plain in (before, after):
        text, samples = scrape(plain)
        check_metrics(text)
        assert value(samples, requests, method="GET", route="/plain", status="200") == 1
        assert value(samples, requests, method="GET", route="/filed", status="200") == 0
        assert value(samples, "shoal_write_batch_points_sum") == 5
        # Unchanged single-process behaviour: a family with no series yet is still declared.
        assert "# TYPE shoal_queries_total counter" in text


def test_series_built_in_threads_each_get_their_own_backing(tmp_path: Path) -> None:
    """The value class is a process-wide global in prometheus_client: builds racing from many
    threads must still give each Metrics its own kind of value."""
    stock = prometheus_values.ValueClass
    directory = tmp_path / "metrics"
    directory.mkdir()
    plain = Metrics()
    filed = Metrics(multiprocess_dir=directory)
    series = 200

    start = threading.Barrier(8)

    def count(metrics: Metrics, thread: int) -> None:
        start.wait()
        for i in range(series):
            metrics.http_request("GET", f"/r{thread}/{i}", 200, 0.01)

    threads = [
        threading.Thread(target=count, args=(metrics, n))
        for n in range(4)
        for metrics in (plain, filed)
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: inside the swap too
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)

    assert prometheus_values.ValueClass is stock
    for n in range(4):
        for i in range(series):
            labels = ("GET", f"/r{n}/{i}", "200")
            assert type(plain.http_requests.labels(*labels)._value) is (
                prometheus_values.MutexValue
            )
            assert filed.http_requests.labels(*labels)._value._multiprocess
    _, samples = scrape(filed)
    assert sum(v for (name, _), v in samples.items() if name == "shoal_http_requests_total") == (
        4 * series
    )
