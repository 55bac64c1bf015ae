"""Alert history, alert batches and service graphs held in Azure Blob Storage.

Three URL forms name a blob or a "folder" (a name prefix) in a container:

- ``azure://container/prefix`` — the account comes from the environment (below);
- ``https://ACCOUNT.blob.core.windows.net/container/prefix`` (a SAS query string may follow);
- ``http://127.0.0.1:10000/devstoreaccount1/container/prefix`` — path-style, as Azurite
  and other emulators serve it (any IP address or ``localhost`` host).

A prefix ending in ``.csv``, ``.csv.gz`` or ``.json`` names one blob; anything else is a
folder, listed recursively for ``*.csv``/``*.csv.gz`` blobs in name order. History may be
date-partitioned (``<prefix>/YYYY/MM/DD/*.csv``): with ``history_days`` only the
partitions inside the window are listed, one ``name_starts_with`` query per day (or per
month that lies wholly inside the window), never the whole history.

Credentials, first match wins:

1. a SAS query string in an ``https``/``http`` URL itself;
2. ``AZURE_STORAGE_CONNECTION_STRING`` (for a URL naming an account, its account must match);
3. ``AZURE_STORAGE_KEY`` (shared key) with the account of the URL, or for ``azure://`` of
   ``AZURE_STORAGE_ACCOUNT`` / ``AZURE_STORAGE_ACCOUNT_URL``;
4. ``AZURE_STORAGE_SAS_TOKEN`` with that same account.

Nothing else is assumed — not even the development storage account — so a missing
setting fails with a message that lists these variables.

Secrets (account keys, SAS signatures) never reach log lines, exception messages,
``repr()``s or source names: every message passes through :func:`redact`, and
:func:`describe_location` gives the form that is safe to log or record in MLflow.

Failures: connection errors, timeouts, throttling and 5xx answers are retried with
exponential backoff (:class:`RetryPolicy`); then one :class:`BlobError` names the location
and the cause. A missing container, an empty prefix or refused credentials fail at once.
A blob is downloaded whole into a spooled temporary file before the reader sees it, so an
interrupted download is restarted from its first byte or fails — never partial data.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import BinaryIO, TypeVar, cast
from urllib.parse import unquote, urlsplit

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient
from tqdm import tqdm

from alertclf.errors import AlertclfError
from alertclf.io.sources import CSV_SUFFIXES, Source

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENV_CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
ENV_ACCOUNT = "AZURE_STORAGE_ACCOUNT"
ENV_ACCOUNT_URL = "AZURE_STORAGE_ACCOUNT_URL"
ENV_KEY = "AZURE_STORAGE_KEY"
ENV_SAS = "AZURE_STORAGE_SAS_TOKEN"
# Operators tune retries without a code change (the alert reader reaches us through
# list_sources, which takes no options).
ENV_RETRY_ATTEMPTS = "ALERTCLF_AZURE_RETRY_ATTEMPTS"
ENV_RETRY_BASE_DELAY = "ALERTCLF_AZURE_RETRY_BASE_DELAY"

# A prefix with one of these endings names exactly one blob.
SINGLE_BLOB_SUFFIXES: tuple[str, ...] = (*CSV_SUFFIXES, ".json")
AZURE_SCHEME = "azure"
_CREDENTIAL_HELP = (
    f"set {ENV_CONNECTION_STRING}, or {ENV_ACCOUNT} (or {ENV_ACCOUNT_URL}) "
    f"with {ENV_KEY} or {ENV_SAS}, or put a SAS token in the https URL"
)
# Public-cloud and sovereign-cloud blob endpoints: <account>.blob.<suffix>.
_VIRTUAL_HOST = re.compile(
    r"^(?P<account>[a-z0-9]{3,24})\.blob\."
    r"(?:core\.windows\.net|core\.chinacloudapi\.cn|core\.usgovcloudapi\.net|"
    r"core\.cloudapi\.de|storage\.azure\.net)$",
    re.IGNORECASE,
)
_CONTAINER_NAME = re.compile(r"^(?:\$root|\$web|\$logs|[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")
_LOOPBACK_NAMES = frozenset({"localhost", "host.docker.internal", "azurite"})
# Path objects collapse "azure://x" into "azure:/x"; accept both so a Path-typed CLI option
# still works.
_SCHEME_FIX = re.compile(r"^(azure|https?):/(?=[^/])", re.IGNORECASE)


class BlobError(AlertclfError):
    """Azure Blob input that cannot be read; the message names the location (redacted)."""


# --- redaction -------------------------------------------------------------------------
_REDACTED = "***"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Connection-string fields (case-insensitive, up to the next ';' or quote/space).
    (re.compile(r"(AccountKey\s*=\s*)[^;\s'\"]+", re.IGNORECASE), r"\1" + _REDACTED),
    (re.compile(r"(SharedAccessSignature\s*=\s*)[^;\s'\"]+", re.IGNORECASE), r"\1" + _REDACTED),
    # A URL's whole query string when it carries a SAS signature: its other fields
    # (permissions, expiry, signed IP) say too much about the token to keep.
    (
        re.compile(r"(\b(?:https?|azure)://[^\s?'\"]*)\?[^\s'\"]*\bsig=[^\s'\"]*", re.IGNORECASE),
        r"\1?<SAS redacted>",
    ),
    # A bare signature anywhere else (a SAS token on its own, a log of request params).
    (re.compile(r"\b(sig=)[^&;\s'\"]+", re.IGNORECASE), r"\1" + _REDACTED),
    # "Authorization: SharedKey account:signature" as some transports echo it.
    (re.compile(r"(SharedKey(?:Lite)?\s+[^:\s]+:)[A-Za-z0-9+/=]+"), r"\1" + _REDACTED),
)
# Shorter values than this are not searched for literally: they would blank out words.
_MIN_LITERAL_SECRET = 8


def redact(text: object) -> str:
    """``text`` with account keys, SAS signatures and SAS query strings replaced by ``***``.

    Besides the patterns, the literal values of the secret environment variables are
    removed too, wherever they appear (an SDK message might quote one unformatted).
    """
    result = str(text)
    for pattern, replacement in _SECRET_PATTERNS:
        result = pattern.sub(replacement, result)
    for secret in _environment_secrets():
        result = result.replace(secret, _REDACTED)
    return result


class _RedactingFilter(logging.Filter):
    """Passes every record, with secrets taken out of its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# Libraries that log request URLs verbatim: urllib3 logs the path and query string of
# every request at DEBUG, a SAS signature included. (The Azure SDK's own HTTP logging
# already masks the query.) A filter on a logger sees only that logger's own records.
_URL_LOGGERS = ("urllib3.connectionpool",)


def _guard_library_logs() -> None:
    """Install the redacting filter once, when a blob client is first made (not at import)."""
    for name in _URL_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, _RedactingFilter) for f in library.filters):
            library.addFilter(_RedactingFilter())


def _environment_secrets() -> list[str]:
    secrets: list[str] = []
    for name in (ENV_KEY, ENV_SAS):
        value = os.environ.get(name, "").strip().lstrip("?")
        if len(value) >= _MIN_LITERAL_SECRET:
            secrets.append(value)
    fields = _connection_string_fields(os.environ.get(ENV_CONNECTION_STRING, ""))
    for name in ("accountkey", "sharedaccesssignature"):
        value = fields.get(name, "")
        if len(value) >= _MIN_LITERAL_SECRET:
            secrets.append(value)
    # Longest first, so a secret containing another is removed whole.
    return sorted(set(secrets), key=len, reverse=True)


def _connection_string_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


# --- locations -------------------------------------------------------------------------
@dataclass(frozen=True)
class BlobLocation:
    """A parsed blob URL. ``sas_token`` (from the URL's query) is kept out of ``repr``."""

    scheme: str
    container: str
    prefix: str
    account_url: str | None  # None for azure:// (the account comes from the environment)
    account_name: str | None
    sas_token: str | None = field(default=None, repr=False)

    @property
    def is_single_blob(self) -> bool:
        return self.prefix.lower().endswith(SINGLE_BLOB_SUFFIXES)

    @property
    def folder(self) -> str:
        """The prefix as a folder: ``""`` (whole container) or ending in ``/``."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    def display(self, blob_name: str | None = None) -> str:
        """The URL of the location (or of one blob in it), without any query string."""
        # Folders show without their trailing "/", as users type them.
        name = (self.prefix if blob_name is None else blob_name).rstrip("/")
        base = (
            f"azure://{self.container}"
            if self.account_url is None
            else (f"{self.account_url.rstrip('/')}/{self.container}")
        )
        return redact(f"{base}/{name}" if name else base)


def is_azure_url(location: object) -> bool:
    """Whether ``location`` is a blob URL this module reads (not a local path)."""
    text = _normalise_url(location)
    if text.lower().startswith("azure://"):
        return True
    if not text.lower().startswith(("http://", "https://")):
        return False
    host = urlsplit(text).hostname or ""
    return bool(_VIRTUAL_HOST.match(host)) or _is_path_style_host(host)


def parse_blob_url(url: str) -> BlobLocation:
    """Split a blob URL into account, container and prefix; raise :class:`BlobError` if bad."""
    text = _normalise_url(url)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    safe = redact(text.split("?", 1)[0])
    sas = parts.query or None
    if scheme == AZURE_SCHEME:
        if sas:
            raise BlobError(
                f"{safe}: azure:// URLs take no query string; put a SAS token in {ENV_SAS}"
            )
        container = parts.netloc
        path = unquote(parts.path)
        account_url = account_name = None
    elif scheme in ("http", "https"):
        host = parts.hostname or ""
        segments = unquote(parts.path).lstrip("/")
        match = _VIRTUAL_HOST.match(host)
        if match:
            account_name = match.group("account").lower()
            account_url = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
        elif _is_path_style_host(host):
            # Emulator style: the account is the first path segment.
            account_name, _, segments = segments.partition("/")
            if not account_name:
                raise BlobError(f"{safe}: no account in the URL (expected /ACCOUNT/container/...)")
            account_url = f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}/{account_name}"
        else:
            raise BlobError(
                f"{safe}: not an Azure Blob URL (expected https://ACCOUNT.blob.core.windows.net/"
                "container/prefix, azure://container/prefix or an emulator URL on localhost)"
            )
        container, _, path = segments.partition("/")
        path = "/" + path
    else:
        raise BlobError(f"{safe}: not an Azure Blob URL")
    if not container:
        raise BlobError(f"{safe}: no container in the URL")
    if not _CONTAINER_NAME.match(container):
        raise BlobError(
            f"{safe}: {container!r} is not a valid container name (3-63 lower-case letters, "
            "digits and single hyphens)"
        )
    prefix = path.lstrip("/")
    return BlobLocation(scheme, container, prefix, account_url, account_name, sas)


def describe_location(url: str) -> str:
    """``url`` as it may be logged or recorded in MLflow: no query string, no secrets."""
    try:
        return parse_blob_url(url).display()
    except BlobError:
        return redact(_normalise_url(url).split("?", 1)[0])


def _normalise_url(url: object) -> str:
    return _SCHEME_FIX.sub(r"\1://", str(url).strip())


def _is_path_style_host(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- options ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures: delays base, 2·base, 4·base … ≤ max."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must not be negative")

    def delays(self) -> Iterator[float]:
        """The pauses between attempts (one fewer than ``attempts``)."""
        delay = self.base_delay
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay)
            delay *= 2


# A step report: ("page" | "chunk" | "blob", location shown in messages, 0-based index).
StepCallback = Callable[[str, str, int], None]


@dataclass(frozen=True)
class BlobOptions:
    """How blobs are fetched. Defaults suit production; tests shrink delays and sizes."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Seconds to open a connection and to wait for each read; the SDK's own defaults
    # (20 s / 60 s) would make a dead endpoint take minutes across our retries.
    connection_timeout: float = 10.0
    read_timeout: float = 60.0
    chunk_size: int = 4 << 20
    results_per_page: int = 5000
    # Blobs smaller than this stay in memory; larger ones spill to a temporary file.
    spool_max_bytes: int = 16 << 20
    # None: a progress bar when stderr is a terminal and more than one blob is read.
    progress: bool | None = None
    # Called after each listed page, downloaded chunk and completed blob: a hook for
    # progress reporting (and for tests that cut the connection at a known point).
    on_step: StepCallback | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_env(cls) -> BlobOptions:
        """Defaults, with retry attempts / base delay overridden from the environment."""
        retry = RetryPolicy()
        try:
            if os.environ.get(ENV_RETRY_ATTEMPTS):
                retry = replace(retry, attempts=int(os.environ[ENV_RETRY_ATTEMPTS]))
            if os.environ.get(ENV_RETRY_BASE_DELAY):
                retry = replace(retry, base_delay=float(os.environ[ENV_RETRY_BASE_DELAY]))
        except ValueError as err:
            raise BlobError(
                f"{ENV_RETRY_ATTEMPTS}/{ENV_RETRY_BASE_DELAY}: not a valid number ({err})"
            ) from None
        return cls(retry=retry)

    def step(self, kind: str, name: str, index: int) -> None:
        if self.on_step is not None:
            self.on_step(kind, name, index)


# --- public entry points ---------------------------------------------------------------
def list_blob_sources(
    url: str,
    *,
    history_days: int | None = None,
    now: datetime | None = None,
    options: BlobOptions | None = None,
) -> list[Source]:
    """The CSV blobs at ``url`` as :class:`Source` objects, sorted by blob name.

    A single-blob URL gives that blob (checked to exist). A folder gives every
    ``*.csv``/``*.csv.gz`` blob under it; with ``history_days=N`` only those in the
    ``YYYY/MM/DD/`` partitions that overlap the last N days before ``now`` (default: the
    current UTC time) — N+1 calendar days, since the window starts part-way into a day and
    rows are filtered by timestamp later. Nothing is downloaded until a source is opened.
    """
    options = options or BlobOptions.from_env()
    location = parse_blob_url(url)
    if history_days is not None and history_days < 1:
        raise ValueError(f"history_days must be at least 1, got {history_days}")
    service = _service_client(location, options)
    container = service.get_container_client(location.container)
    shown = location.display()

    if location.is_single_blob:
        if history_days is not None:
            logger.debug("%s: one blob named, history_days ignored", shown)
        blob_name = location.prefix
        _retrying(
            "checking the blob",
            shown,
            options,
            lambda: container.get_blob_client(blob_name).get_blob_properties(),
        )
        names = [blob_name]
    else:
        if history_days is None:
            prefixes = [location.folder]
        else:
            end = _as_utc(now)
            prefixes = [
                location.folder + p for p in _partition_prefixes(end - timedelta(history_days), end)
            ]
        names = sorted(
            name
            for prefix in prefixes
            for name in _list_names(container, prefix, location, options)
            if name.lower().endswith(CSV_SUFFIXES)
        )
        if not names:
            raise BlobError(_nothing_found(container, location, history_days, options))
    logger.info("%s: %d CSV blob(s) to read", shown, len(names))
    progress = _Progress(len(names), shown, options.progress)
    return [
        Source(
            name=location.display(name),
            opener=_opener(container, name, location.display(name), options, progress),
        )
        for name in names
    ]


def read_blob_bytes(url: str, *, options: BlobOptions | None = None) -> bytes:
    """The whole content of the one blob ``url`` names (for graphs: ``load_graph(url, data=…)``)."""
    options = options or BlobOptions.from_env()
    location = parse_blob_url(url)
    shown = location.display()
    if not location.prefix or location.prefix.endswith("/"):
        raise BlobError(f"{shown}: names a container or folder, not one blob")
    service = _service_client(location, options)
    container = service.get_container_client(location.container)
    with _download(container, location.prefix, shown, options) as handle:
        return handle.read()


# --- credentials -----------------------------------------------------------------------
def _service_client(location: BlobLocation, options: BlobOptions) -> BlobServiceClient:
    """A client for ``location``'s account with the first credentials found (module doc)."""
    shown = location.display()
    _guard_library_logs()
    kwargs: dict[str, object] = {
        # Our own retry loop is the only one: the SDK's default backoff starts at 15 s,
        # which would hide an outage for minutes and make failures unbounded in time.
        "retry_total": 0,
        "connection_timeout": options.connection_timeout,
        "read_timeout": options.read_timeout,
        "max_single_get_size": options.chunk_size,
        "max_chunk_get_size": options.chunk_size,
    }
    if location.sas_token:
        return BlobServiceClient(
            location.account_url or "", credential=location.sas_token, **kwargs
        )

    connection_string = os.environ.get(ENV_CONNECTION_STRING, "").strip()
    if connection_string:
        try:
            from_env = BlobServiceClient.from_connection_string(connection_string, **kwargs)
        except (ValueError, AzureError) as err:
            raise BlobError(
                f"{shown}: {ENV_CONNECTION_STRING} is malformed ({redact(err)})"
            ) from None
        if location.account_url is None:
            return from_env
        if (from_env.account_name or "").lower() != (location.account_name or "").lower():
            raise BlobError(
                f"{shown}: {ENV_CONNECTION_STRING} is for account {from_env.account_name!r}, "
                f"the URL names account {location.account_name!r}"
            )
        # The URL decides the endpoint; the connection string only lends its credential.
        return BlobServiceClient(location.account_url, credential=from_env.credential, **kwargs)

    account_url, account_name = location.account_url, location.account_name
    if account_url is None:
        account_url, account_name = _account_from_env(shown)
    key = os.environ.get(ENV_KEY, "").strip()
    if key:
        if not account_name:
            raise BlobError(
                f"{shown}: {ENV_KEY} is set but the account name is unknown: "
                f"set {ENV_ACCOUNT} or use a URL that names the account"
            )
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise BlobError(f"{shown}: {ENV_KEY} is not valid base64 (value not shown)") from None
        credential = {"account_name": account_name, "account_key": key}
        return BlobServiceClient(account_url, credential=credential, **kwargs)
    sas = os.environ.get(ENV_SAS, "").strip().lstrip("?")
    if sas:
        return BlobServiceClient(account_url, credential=sas, **kwargs)
    raise BlobError(f"no Azure credentials for {shown}: {_CREDENTIAL_HELP}")


def _account_from_env(shown: str) -> tuple[str, str | None]:
    """(account URL, account name) for azure:// URLs without a connection string."""
    url = os.environ.get(ENV_ACCOUNT_URL, "").strip().rstrip("/")
    name = os.environ.get(ENV_ACCOUNT, "").strip() or None
    if url:
        if name is None:
            parts = urlsplit(url)
            match = _VIRTUAL_HOST.match(parts.hostname or "")
            name = match.group("account") if match else (parts.path.strip("/") or None)
        return url, name
    if name:
        return f"https://{name}.blob.core.windows.net", name
    raise BlobError(f"no Azure credentials for {shown}: {_CREDENTIAL_HELP}")


# --- listing ---------------------------------------------------------------------------
def _partition_prefixes(start: datetime, end: datetime) -> list[str]:
    """``YYYY/MM/DD/`` prefixes of the days from ``start`` to ``end``, inclusive.

    A month lying wholly inside the range is one ``YYYY/MM/`` prefix, so a year of
    history costs about a dozen listings rather than 365.
    """
    first, last = start.date(), end.date()
    prefixes: list[str] = []
    day = first
    while day <= last:
        month_end = _next_month(day) - timedelta(days=1)
        if day.day == 1 and month_end <= last:
            prefixes.append(f"{day:%Y/%m}/")
            day = month_end + timedelta(days=1)
        else:
            prefixes.append(f"{day:%Y/%m/%d}/")
            day += timedelta(days=1)
    return prefixes


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _as_utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    # A naive time is UTC, as everywhere in alertclf (DESIGN.md §2).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _list_names(
    container: ContainerClient, prefix: str, location: BlobLocation, options: BlobOptions
) -> list[str]:
    """Every blob name under ``prefix``; a failure part-way restarts this prefix's listing."""
    shown = location.display(prefix)

    def attempt() -> list[str]:
        names: list[str] = []
        pages = container.list_blobs(
            name_starts_with=prefix or None, results_per_page=options.results_per_page
        ).by_page()
        for number, page in enumerate(pages):
            names.extend(blob.name for blob in page)
            logger.debug("%s: page %d listed, %d names so far", shown, number, len(names))
            options.step("page", shown, number)
        return names

    return _retrying("listing blobs", shown, options, attempt)


def _nothing_found(
    container: ContainerClient,
    location: BlobLocation,
    history_days: int | None,
    options: BlobOptions,
) -> str:
    """The message for a listing without CSV blobs: say which of the likely reasons it is."""
    shown = location.display(location.folder)
    if not _any_blob(container, location, options):
        return f"{shown}: no blobs under this prefix (is the path right?)"
    if history_days is None:
        return f"{shown}: blobs exist under this prefix, but none ends in .csv or .csv.gz"
    return (
        f"{shown}: no *.csv or *.csv.gz blobs in the last {history_days} days "
        f"(expected date partitions {location.folder}YYYY/MM/DD/)"
    )


def _any_blob(container: ContainerClient, location: BlobLocation, options: BlobOptions) -> bool:
    """Whether any blob at all lies under the folder: one page of one name tells."""
    prefix = location.folder

    def first_page() -> bool:
        pages = container.list_blobs(name_starts_with=prefix or None, results_per_page=1)
        return any(True for page in pages.by_page() for _ in page)

    return _retrying("listing blobs", location.display(prefix), options, first_page)


# --- downloading -----------------------------------------------------------------------
class _Progress:
    """One tqdm bar over the blobs of a listing, advanced as each download completes."""

    def __init__(self, total: int, description: str, enabled: bool | None) -> None:
        self.total = total
        self.description = description
        # disable=None is tqdm's "only on a terminal".
        self.disable: bool | None = None if enabled is None else not enabled
        self.bar: tqdm | None = None
        self.done = 0

    def advance(self, nbytes: int) -> None:
        self.done += 1
        if self.total < 2 and self.disable is not False:
            return
        if self.bar is None:
            self.bar = tqdm(
                total=self.total, unit="blob", desc=self.description, disable=self.disable
            )
        self.bar.update(1)
        self.bar.set_postfix_str(f"{nbytes / 1e6:.1f} MB", refresh=False)
        if self.done >= self.total:
            self.bar.close()


def _opener(
    container: ContainerClient,
    blob_name: str,
    shown: str,
    options: BlobOptions,
    progress: _Progress,
) -> Callable[[], BinaryIO]:
    def open_blob() -> BinaryIO:
        handle = _download(container, blob_name, shown, options)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        progress.advance(size)
        return handle

    return open_blob


class _IncompleteDownload(Exception):
    """Fewer bytes arrived than the blob has: a transient failure, retried from the start."""


def _download(
    container: ContainerClient, blob_name: str, shown: str, options: BlobOptions
) -> BinaryIO:
    """The blob in a spooled temporary file, positioned at 0; retried whole on failure."""
    blob = container.get_blob_client(blob_name)

    def attempt() -> BinaryIO:
        # Not a with-block: on success the open spool is handed to the caller, who closes it.
        spool = tempfile.SpooledTemporaryFile(max_size=options.spool_max_bytes, mode="w+b")  # noqa: SIM115
        try:
            # max_concurrency=1 fetches chunk by chunk, so at most one chunk is in memory
            # besides the spool; the SDK pins later chunks to the first one's ETag, so a blob
            # rewritten mid-download fails (and is retried) instead of mixing versions.
            downloader = blob.download_blob(max_concurrency=1)
            for number, chunk in enumerate(downloader.chunks()):
                spool.write(chunk)
                logger.debug("%s: chunk %d, %d bytes", shown, number, len(chunk))
                options.step("chunk", shown, number)
            if spool.tell() != downloader.size:
                raise _IncompleteDownload(f"got {spool.tell()} of {downloader.size} bytes")
            spool.seek(0)
            return cast(BinaryIO, spool)
        except BaseException:
            spool.close()  # never hand out a partial blob
            raise

    handle = _retrying("downloading", shown, options, attempt)
    options.step("blob", shown, 0)
    return handle


# --- retries and error messages ----------------------------------------------------------
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _retrying(what: str, shown: str, options: BlobOptions, call: Callable[[], T]) -> T:
    """``call()``, retried on transient failures; any failure ends as one :class:`BlobError`."""
    delays = options.retry.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as err:  # classified below; bugs (non-Azure errors) re-raise as-is
            if not _is_transient(err):
                fatal = _fatal_message(err, shown)
                if fatal is None:
                    raise
                logger.debug("%s: %s failed: %s", shown, what, redact(err))
                raise BlobError(fatal) from None
            delay = next(delays, None)
            cause = _short_cause(err)
            if delay is None:
                raise BlobError(
                    f"{shown}: {what} failed after {attempt} attempt(s): {cause}"
                ) from None
            logger.warning(
                "%s: %s failed (%s); retry %d of %d in %.2f s",
                shown,
                what,
                cause,
                attempt,
                options.retry.attempts - 1,
                delay,
            )
            time.sleep(delay)


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, ClientAuthenticationError):
        return False  # includes local signing failures (a key that is not base64)
    if isinstance(err, ServiceRequestError | ServiceResponseError | _IncompleteDownload):
        return True  # refused, reset, timed out, DNS failure
    if isinstance(err, HttpResponseError):
        status = err.status_code
        # No status: the body broke off (the SDK wraps IncompleteRead/DecodeError so).
        return status is None or status in _TRANSIENT_STATUS or status >= 500
    return isinstance(err, ConnectionError | TimeoutError)


def _error_code(err: HttpResponseError) -> str:
    code = getattr(err, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _fatal_message(err: BaseException, shown: str) -> str | None:
    """One clear line for a failure that retrying cannot fix; None for non-Azure errors."""
    if isinstance(err, ClientAuthenticationError) and err.status_code is None:
        return f"{shown}: the Azure credentials are unusable ({_short_cause(err)})"
    if isinstance(err, HttpResponseError):
        status, code = err.status_code, _error_code(err)
        if status in (401, 403) or isinstance(err, ClientAuthenticationError):
            return (
                f"{shown}: Azure refused the credentials ({status} {code or 'Forbidden'}); "
                f"check {ENV_CONNECTION_STRING} / {ENV_KEY} / the SAS token and its permissions"
            )
        if code == "ContainerNotFound":
            return f"{shown}: the container does not exist"
        if code == "BlobNotFound" or (isinstance(err, ResourceNotFoundError) and not code):
            return f"{shown}: no such blob"
        return f"{shown}: Azure answered {status} {code or ''}: {_short_cause(err)}"
    if isinstance(err, AzureError):
        return f"{shown}: {_short_cause(err)}"
    return None


def _short_cause(err: BaseException) -> str:
    """The first line of an error's message, redacted; SDK messages run to XML bodies."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(err).__name__
    return redact(f"{type(err).__name__}: {first}")


__all__ = [
    "BlobError",
    "BlobLocation",
    "BlobOptions",
    "RetryPolicy",
    "describe_location",
    "is_azure_url",
    "list_blob_sources",
    "parse_blob_url",
    "read_blob_bytes",
    "redact",
]
