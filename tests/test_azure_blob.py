"""Azure Blob input against a real Azurite: URLs, credentials, listing, errors, outages.

Nothing of the Azure SDK or of Azurite is mocked. Outages are real: the test stops the
Azurite process at a known point (the reader's ``on_step`` hook fires after each listed
page and downloaded chunk) and starts it again while the reader is retrying.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from azurite import ACCOUNT, ACCOUNT_KEY, AzuriteServer

from alertclf.graph import load_graph
from alertclf.io import azure
from alertclf.io.alerts import read_alerts
from alertclf.io.azure import (
    BlobError,
    BlobOptions,
    RetryPolicy,
    describe_location,
    is_azure_url,
    list_blob_sources,
    parse_blob_url,
    read_blob_bytes,
    redact,
)
from alertclf.io.sources import Source, list_sources
from alertclf.settings import Settings

CONTAINER = "alerts"
HEADER = "alert_id,timestamp,service,alert_name,severity"
# A wrong key that is still valid base64, so the server (not the client) refuses it.
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
FAST = BlobOptions(
    retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
    connection_timeout=2,
    read_timeout=5,
)
# Enough retry budget (about 4 s) to outlast an Azurite restart (about 1 s).
PATIENT = RetryPolicy(attempts=12, base_delay=0.05, max_delay=0.5)

slow = pytest.mark.slow
bounded = pytest.mark.timeout(60)


def csv_rows(prefix: str, n: int, bad: int = 0) -> bytes:
    """``n`` good alert rows and ``bad`` rows without a timestamp (to be rejected)."""
    lines = [HEADER]
    lines += [f"{prefix}-{i},2024-02-01T10:{i % 60:02d}:00Z,api,HighCPU,P2" for i in range(n)]
    lines += [f"{prefix}-bad-{i},,api,HighCPU,P2" for i in range(bad)]
    return ("\n".join(lines) + "\n").encode()


# Blob name -> content, uploaded once per module.
BATCH = {
    "batch/a.csv": csv_rows("a", 5),
    "batch/b.csv": csv_rows("b", 7, bad=2),
    "batch/c.csv.gz": gzip.compress(csv_rows("c", 3)),
    "batch/readme.txt": b"not an alert file",
    "batch-other/z.csv": csv_rows("z", 1),  # shares the text prefix, not the folder
}
HISTORY_DAYS = ["2024/01/28", "2024/01/30", "2024/01/31", "2024/02/01", "2024/02/02", "2024/02/03"]
HISTORY = {f"history/{d}/alerts-{i}.csv": csv_rows(d, 2) for d in HISTORY_DAYS for i in (1, 2)}
GRAPH = {
    "directed": True,
    "nodes": [{"id": "web"}, {"id": "api"}, {"id": "db"}],
    "links": [{"source": "web", "target": "api"}, {"source": "api", "target": "db"}],
}
OTHER = {
    "graphs/graph_data.json": json.dumps(GRAPH).encode(),
    "notes/readme.txt": b"no csv here",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Azure settings leak in from the machine or between tests."""
    for name in list(os.environ):
        if name.startswith(("AZURE_STORAGE_", "ALERTCLF_AZURE_")):
            monkeypatch.delenv(name)


@pytest.fixture
def blob_env(azurite: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    # The list_sources path takes no options: keep its retries short through the environment.
    monkeypatch.setenv("ALERTCLF_AZURE_RETRY_BASE_DELAY", "0.01")
    return azurite


@pytest.fixture(scope="module")
def seeded(azurite: str) -> BlobServiceClient:
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.create_container(CONTAINER)
    for name, data in {**BATCH, **HISTORY, **OTHER}.items():
        container.upload_blob(name, data)
    return service


def upload(server: AzuriteServer, blobs: dict[str, bytes], container: str = CONTAINER) -> None:
    service = BlobServiceClient.from_connection_string(server.connection_string)
    client = service.get_container_client(container)
    if not client.exists():
        client.create_container()
    for name, data in blobs.items():
        client.upload_blob(name, data, overwrite=True)


def read_all(sources: list[Source]) -> dict[str, bytes]:
    out = {}
    for source in sources:
        with source.open() as handle:
            out[source.name] = handle.read()
    return out


# --- pure helpers: URLs, redaction, partitions (no Azurite) ----------------------------
def test_url_forms_parse_into_account_container_and_prefix() -> None:
    short = parse_blob_url("azure://alerts/history/2024")
    assert (short.container, short.prefix, short.account_url) == ("alerts", "history/2024", None)
    assert not short.is_single_blob and short.folder == "history/2024/"

    cloud = parse_blob_url("https://myacct.blob.core.windows.net/alerts/batch/a.csv?sv=1&sig=abc")
    assert cloud.account_url == "https://myacct.blob.core.windows.net"
    assert (cloud.account_name, cloud.container, cloud.prefix) == (
        "myacct",
        "alerts",
        "batch/a.csv",
    )
    assert cloud.is_single_blob and cloud.sas_token == "sv=1&sig=abc"
    assert "sig" not in repr(cloud) and "sig" not in cloud.display()

    emulator = parse_blob_url("http://127.0.0.1:10000/devstoreaccount1/alerts/g/graph.json")
    assert emulator.account_url == "http://127.0.0.1:10000/devstoreaccount1"
    assert (emulator.container, emulator.prefix) == ("alerts", "g/graph.json")
    assert emulator.is_single_blob

    whole = parse_blob_url("azure://alerts")
    assert whole.prefix == "" and whole.folder == ""
    # A Path collapses "//"; the URL still parses.
    assert parse_blob_url(str(Path("azure://alerts/x"))).prefix == "x"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("azure://Bad_Name/x", "not a valid container name"),
        ("azure:///x", "no container"),
        ("azure://alerts/x?sig=secret", "take no query string"),
        ("https://example.com/alerts/x", "not an Azure Blob URL"),
        ("http://127.0.0.1:10000/", "no account"),
    ],
)
def test_bad_urls_fail_clearly(url: str, problem: str) -> None:
    with pytest.raises(BlobError, match=problem) as caught:
        parse_blob_url(url)
    assert "secret" not in str(caught.value)


def test_is_azure_url() -> None:
    assert is_azure_url("azure://alerts/x")
    assert is_azure_url("https://acct.blob.core.windows.net/c/x")
    assert is_azure_url("http://localhost:10000/devstoreaccount1/c/x")
    assert is_azure_url(Path("azure://alerts/x"))
    assert not is_azure_url("https://example.com/c/x")
    assert not is_azure_url("data/alerts.csv")


def test_redact_strips_keys_and_sas_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "c2VjcmV0a2V5c2VjcmV0a2V5c2VjcmV0a2V5=="
    connection = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={key};"
    assert key not in redact(connection)
    assert "AccountName=acct" in redact(connection)
    sas_connection = (
        "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=2022&sig=XyZ%2F"
    )
    assert "XyZ" not in redact(sas_connection)
    url = "https://a.blob.core.windows.net/c/x.csv?sv=2022-11-02&se=2030-01-01&sp=rl&sig=AbC%3D"
    cleaned = redact(f"failed to read {url} (status 500)")
    assert "AbC" not in cleaned and "sp=rl" not in cleaned
    assert cleaned.startswith("failed to read https://a.blob.core.windows.net/c/x.csv?")
    assert cleaned.endswith("(status 500)")
    assert "QQ" not in redact("token sv=2022&sig=QQQQ&se=x")
    assert redact("Authorization: SharedKey acct:aGVsbG8=") == "Authorization: SharedKey acct:***"
    # Values of the secret variables go wherever they appear, even unformatted.
    monkeypatch.setenv("AZURE_STORAGE_KEY", key)
    assert key not in redact(f"odd message quoting {key} bare")
    assert redact("nothing secret here") == "nothing secret here"


def test_describe_location_is_safe_to_log() -> None:
    url = "https://a.blob.core.windows.net/c/x.csv?sv=2022&sig=SeCrEt"
    assert describe_location(url) == "https://a.blob.core.windows.net/c/x.csv"
    assert describe_location("azure://alerts/history") == "azure://alerts/history"
    assert "SeCrEt" not in describe_location("https://example.com/x?sig=SeCrEt")


def test_partition_prefixes_use_whole_months_where_they_fit() -> None:
    start = datetime(2024, 1, 30, 6, tzinfo=UTC)
    end = datetime(2024, 3, 2, 1, tzinfo=UTC)
    assert azure._partition_prefixes(start, end) == [
        "2024/01/30/",
        "2024/01/31/",
        "2024/02/",
        "2024/03/01/",
        "2024/03/02/",
    ]
    year_end = azure._partition_prefixes(datetime(2024, 12, 31), datetime(2025, 1, 1))
    assert year_end == ["2024/12/31/", "2025/01/01/"]


def test_retry_delays_grow_and_are_capped() -> None:
    assert list(RetryPolicy(attempts=5, base_delay=0.5, max_delay=1.5).delays()) == [
        0.5,
        1.0,
        1.5,
        1.5,
    ]
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_no_credentials_fails_clearly() -> None:
    with pytest.raises(BlobError, match=r"^no Azure credentials for azure://alerts/x: set "):
        list_blob_sources("azure://alerts/x", options=FAST)
    with pytest.raises(BlobError, match="no Azure credentials"):
        read_blob_bytes("https://acct.blob.core.windows.net/alerts/g.json", options=FAST)


def test_connection_string_for_another_account_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = f"DefaultEndpointsProtocol=https;AccountName=other;AccountKey={ACCOUNT_KEY}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    with pytest.raises(BlobError, match="is for account 'other'") as caught:
        list_blob_sources("https://acct.blob.core.windows.net/alerts/x", options=FAST)
    assert ACCOUNT_KEY not in str(caught.value)


def test_key_that_is_not_base64_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_KEY", "not-base64-at-all!!")
    with pytest.raises(BlobError, match="not valid base64") as caught:
        list_blob_sources("https://acct.blob.core.windows.net/alerts/x", options=FAST)
    assert "not-base64-at-all" not in str(caught.value)


# --- listing and reading (Azurite) ---------------------------------------------------------
@slow
@bounded
def test_folder_lists_csv_blobs_sorted_and_reads_them(seeded, blob_env) -> None:
    sources = list_blob_sources("azure://alerts/batch", options=FAST)
    assert [s.name for s in sources] == [
        "azure://alerts/batch/a.csv",
        "azure://alerts/batch/b.csv",
        "azure://alerts/batch/c.csv.gz",
    ]
    contents = read_all(sources)
    assert contents["azure://alerts/batch/a.csv"] == BATCH["batch/a.csv"]
    assert contents["azure://alerts/batch/c.csv.gz"] == BATCH["batch/c.csv.gz"]
    # A trailing slash means the same folder.
    assert [s.name for s in list_blob_sources("azure://alerts/batch/", options=FAST)] == [
        s.name for s in sources
    ]


@slow
@bounded
def test_history_days_lists_only_recent_partitions_one_prefix_each(seeded, blob_env) -> None:
    listed: list[str] = []
    options = BlobOptions(
        retry=FAST.retry,
        on_step=lambda kind, name, i: listed.append(name) if kind == "page" else None,
    )
    now = datetime(2024, 2, 2, 6, 0)  # naive = UTC
    sources = list_blob_sources("azure://alerts/history", history_days=2, now=now, options=options)
    days = sorted({s.name.split("/history/")[1][:10] for s in sources})
    # 2 days back from 02-02 06:00 reaches into 01-31; 02-03 is in the future.
    assert days == ["2024/01/31", "2024/02/01", "2024/02/02"]
    assert len(sources) == 6
    assert listed == [f"azure://alerts/history/{d}" for d in days]  # never the whole history

    everything = list_blob_sources("azure://alerts/history", options=FAST)
    assert len(everything) == len(HISTORY)
    assert [s.name for s in everything] == sorted(s.name for s in everything)


@slow
@bounded
def test_history_without_recent_partitions_says_so(seeded, blob_env) -> None:
    with pytest.raises(BlobError, match=r"no .* blobs in the last 3 days .*YYYY/MM/DD"):
        list_blob_sources(
            "azure://alerts/history", history_days=3, now=datetime(2030, 1, 1), options=FAST
        )


@slow
@bounded
def test_single_blob_url(seeded, blob_env) -> None:
    sources = list_blob_sources("azure://alerts/batch/b.csv", history_days=5, options=FAST)
    assert [s.name for s in sources] == ["azure://alerts/batch/b.csv"]
    assert read_all(sources)["azure://alerts/batch/b.csv"] == BATCH["batch/b.csv"]
    with pytest.raises(BlobError, match=r"^azure://alerts/batch/nope\.csv: no such blob$"):
        list_blob_sources("azure://alerts/batch/nope.csv", options=FAST)


@slow
@bounded
def test_graph_from_blob(seeded, blob_env) -> None:
    url = "azure://alerts/graphs/graph_data.json"
    graph = load_graph(url, data=read_blob_bytes(url, options=FAST))
    assert sorted(graph.nodes) == ["api", "db", "web"]
    assert graph.has_edge("web", "api")
    with pytest.raises(BlobError, match="not one blob"):
        read_blob_bytes("azure://alerts", options=FAST)


@slow
@bounded
def test_read_alerts_through_list_sources_dispatch(seeded, blob_env) -> None:
    batch = read_alerts("azure://alerts/batch", Settings())
    assert batch.files == [
        "azure://alerts/batch/a.csv",
        "azure://alerts/batch/b.csv",
        "azure://alerts/batch/c.csv.gz",
    ]
    assert batch.rows_read == 5 + 9 + 3
    assert (batch.rows_accepted, batch.rows_rejected) == (15, 2)
    assert batch.rows_accepted + batch.rows_rejected == batch.rows_read
    assert set(batch.rejected["source_file"]) == {"azure://alerts/batch/b.csv"}
    # A Path-typed option collapses "//": the dispatch still recognises the URL.
    assert len(list_sources(Path("azure://alerts/batch"))) == 3


@slow
@bounded
def test_http_emulator_url_with_connection_string_or_key(
    seeded, azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{azurite_server.blob_endpoint}/{CONTAINER}/batch"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string)
    by_connection = list_blob_sources(url, options=FAST)
    assert [s.name for s in by_connection] == [
        f"{azurite_server.blob_endpoint}/alerts/batch/{n}" for n in ("a.csv", "b.csv", "c.csv.gz")
    ]
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_KEY", ACCOUNT_KEY)
    by_key = list_blob_sources(url, options=FAST)
    assert read_all(by_key) == read_all(by_connection)
    # azure:// with the account given by URL + key (no connection string).
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", azurite_server.blob_endpoint)
    assert len(list_blob_sources("azure://alerts/batch", options=FAST)) == 3
    graph_url = f"{azurite_server.blob_endpoint}/{CONTAINER}/graphs/graph_data.json"
    assert json.loads(read_blob_bytes(graph_url, options=FAST)) == GRAPH


@slow
@bounded
def test_sas_token_in_url_or_environment_never_shows(
    seeded, azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    sas = generate_container_sas(
        ACCOUNT,
        CONTAINER,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime(2099, 1, 1, tzinfo=UTC),
    )
    signature = sas.split("sig=")[1].split("&")[0]
    base = f"{azurite_server.blob_endpoint}/{CONTAINER}/batch"
    caplog.set_level(logging.DEBUG, logger="alertclf")
    sources = list_blob_sources(f"{base}?{sas}", options=FAST)
    assert len(read_all(sources)) == 3
    assert all("sig" not in s.name and signature not in repr(s) for s in sources)
    assert describe_location(f"{base}?{sas}") == base

    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    assert len(list_blob_sources(base, options=FAST)) == 3
    with pytest.raises(BlobError, match="no such blob") as caught:
        read_blob_bytes(f"{base}/missing.json?{sas}", options=FAST)
    assert signature not in str(caught.value)
    assert signature not in caplog.text


# --- clear, immediate failures -------------------------------------------------------------
# With these options a retried failure would take over 10 s: "immediate" is measurable.
SLOW_RETRIES = BlobOptions(retry=RetryPolicy(attempts=3, base_delay=5.0))


@slow
@bounded
def test_missing_container_fails_at_once(seeded, blob_env) -> None:
    started = time.monotonic()
    with pytest.raises(BlobError) as caught:
        list_blob_sources("azure://no-such-container/batch", options=SLOW_RETRIES)
    assert str(caught.value) == "azure://no-such-container/batch: the container does not exist"
    assert time.monotonic() - started < 3


@slow
@bounded
def test_missing_prefix_or_no_csv_fails_at_once(seeded, blob_env) -> None:
    started = time.monotonic()
    with pytest.raises(BlobError, match=r"^azure://alerts/nothing-here: no blobs under this"):
        list_blob_sources("azure://alerts/nothing-here", options=SLOW_RETRIES)
    with pytest.raises(BlobError, match=r"blobs exist under this prefix, but none ends in \.csv"):
        list_blob_sources("azure://alerts/notes", options=SLOW_RETRIES)
    assert time.monotonic() - started < 3


@slow
@bounded
def test_wrong_key_fails_at_once_without_showing_the_key(
    seeded, azurite_server: AzuriteServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="alertclf")
    wrong = azurite_server.connection_string.replace(ACCOUNT_KEY, WRONG_KEY)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    started = time.monotonic()
    with pytest.raises(BlobError, match="Azure refused the credentials") as caught:
        list_blob_sources("azure://alerts/batch", options=SLOW_RETRIES)
    message = str(caught.value)
    assert message.startswith("azure://alerts/batch: Azure refused the credentials (403")
    assert WRONG_KEY not in message and ACCOUNT_KEY not in message
    assert WRONG_KEY not in caplog.text

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_KEY", WRONG_KEY)
    url = f"{azurite_server.blob_endpoint}/{CONTAINER}/graphs/graph_data.json"
    with pytest.raises(BlobError, match="refused the credentials") as caught:
        read_blob_bytes(url, options=SLOW_RETRIES)
    assert WRONG_KEY not in str(caught.value)
    assert time.monotonic() - started < 3


# --- outages: retried, or one bounded failure ------------------------------------------------
class CutOnce:
    """An ``on_step`` hook that stops Azurite at the first matching step, then restarts it."""

    def __init__(self, server: AzuriteServer, kind: str, index: int, restart_after: float | None):
        self.server, self.kind, self.index = server, kind, index
        self.restart_after = restart_after
        self.steps: list[tuple[str, int]] = []
        self.cut = False
        self.restarter = None

    def __call__(self, kind: str, name: str, index: int) -> None:
        self.steps.append((kind, index))
        if not self.cut and (kind, index) == (self.kind, self.index):
            self.cut = True
            self.server.stop()
            if self.restart_after is not None:
                self.restarter = self.server.restart_later(self.restart_after)

    def join(self) -> None:
        if self.restarter is not None:
            self.restarter.join(30)


@pytest.fixture
def healthy_afterwards(azurite_server: AzuriteServer) -> Iterator[AzuriteServer]:
    """Whatever happens in the test, the shared server runs again for the next one."""
    yield azurite_server
    azurite_server.start()


@slow
@bounded
def test_outage_mid_listing_is_retried(seeded, blob_env, healthy_afterwards, caplog) -> None:
    upload(healthy_afterwards, {f"paged/{i:02d}.csv": csv_rows(f"p{i}", 1) for i in range(6)})
    cut = CutOnce(healthy_afterwards, "page", 0, restart_after=0.2)
    options = BlobOptions(retry=PATIENT, results_per_page=2, connection_timeout=2, on_step=cut)
    with caplog.at_level(logging.WARNING, logger="alertclf.io.azure"):
        sources = list_blob_sources("azure://alerts/paged", options=options)
    cut.join()
    assert [s.name.rsplit("/", 1)[1] for s in sources] == [f"{i:02d}.csv" for i in range(6)]
    assert cut.cut and "listing blobs failed" in caplog.text and "retry 1 of 11" in caplog.text
    # The listing restarted from its first page after the outage.
    assert cut.steps.count(("page", 0)) == 2


@slow
@bounded
def test_outage_mid_download_restarts_the_blob(
    seeded, blob_env, healthy_afterwards, caplog
) -> None:
    data = os.urandom(256 * 1024)
    upload(healthy_afterwards, {"big/large.csv": data})
    cut = CutOnce(healthy_afterwards, "chunk", 1, restart_after=0.2)
    options = BlobOptions(retry=PATIENT, chunk_size=64 * 1024, connection_timeout=2, on_step=cut)
    (source,) = list_blob_sources("azure://alerts/big", options=options)
    with caplog.at_level(logging.WARNING, logger="alertclf.io.azure"), source.open() as handle:
        got = handle.read()
    cut.join()
    assert got == data  # whole and in order: nothing from the broken attempt
    assert "downloading failed" in caplog.text
    assert cut.steps.count(("chunk", 0)) == 2  # the retry started from the first byte
    assert cut.steps[-1] == ("blob", 0)


@slow
@bounded
def test_azurite_gone_for_good_fails_clearly_in_bounded_time(fresh_azurite, monkeypatch) -> None:
    upload(fresh_azurite, {"gone/a.csv": os.urandom(200 * 1024)})
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", fresh_azurite.connection_string)
    cut = CutOnce(fresh_azurite, "chunk", 0, restart_after=None)
    options = BlobOptions(
        retry=RetryPolicy(attempts=3, base_delay=0.1), chunk_size=64 * 1024, on_step=cut
    )
    (source,) = list_blob_sources("azure://alerts/gone", options=options)

    started = time.monotonic()
    with pytest.raises(BlobError) as caught:
        source.open()
    message = str(caught.value)
    assert message.startswith("azure://alerts/gone/a.csv: downloading failed after 3 attempt(s): ")
    assert "ServiceRequestError" in message and "refused" in message.lower()
    assert ACCOUNT_KEY not in message
    with pytest.raises(BlobError, match="listing blobs failed after 3 attempt"):
        list_blob_sources("azure://alerts/gone", options=options)
    assert time.monotonic() - started < 8


@slow
@bounded
def test_progress_bar_when_asked(seeded, blob_env, capsys) -> None:
    options = BlobOptions(retry=FAST.retry, progress=True)
    read_all(list_blob_sources("azure://alerts/batch", options=options))
    assert "3/3" in capsys.readouterr().err
