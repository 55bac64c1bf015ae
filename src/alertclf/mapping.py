"""Alert service names -> graph nodes, with the method used and a confidence.

Monitoring systems name a service differently from the dependency graph: case
(``PaymentService``), separators (``payment_service``), environments (``prod-``,
``-staging``), Kubernetes forms (``payment-service.default.svc.cluster.local``,
``shop/payment-service``), pod names (``payment-service-7d9f8c6b5-x2x9k``,
``redis-cart-0``, ``-container``), regions (``-us-east-1``), releases (``-v2``,
``-blue``), URLs (``http://payment-service:8080/charge``), label pairs pasted as the name
(``job=payment-service``, ``{namespace="shop", app="payment-service"}``), the short DNS
form ``payment-service.shop`` and abbreviations (``svc``, ``db``).

A name is tried against the graph in order; the first unambiguous hit wins:

| method | how | confidence |
|---|---|---|
| `exact` | identical to a node id | 1.0 |
| `normalized` | same key after folding case and separators | 0.98 |
| `normalized` | same ``normalize_service_name`` (decorations stripped, abbreviations expanded) | 0.95 |
| `normalized` | same with separators removed: ``cart-service`` meets ``cartservice`` | 0.90 |
| `normalized` | same core: generic words (``service``, ``api``) and graph-wide tokens dropped | 0.85 |
| `fuzzy` | token score >= ``min_match_score`` and strictly above the runner-up | <= 0.80 |
| `unmapped` | nothing above; the alert is kept, ``mapped_service`` is empty | 0.0 |

A key shared by several nodes is ambiguous and never decides; a fuzzy tie leaves the
name unmapped: a wrong mapping pulls alerts into the wrong incident, a missing one only
loses the topology features. Fuzzy confidence grows with the score and with the margin
over the runner-up.

Fuzzy score of a node for a name (both reduced to ``service_tokens``):

- the sum of the weights of the tokens they share: 1 for informative tokens, 0.5 for
  generic words and for tokens in more than half of the graph's ids (``ts`` in
  ``ts-*-service``), which identify nothing;
- plus 0.5 when every informative token of the node is in the name, 0.75 if they also
  appear in the same order (``order-payment-api-x`` is not ``payment-order-api``);
- minus 0.25 per informative node token the name lacks;
- minus 0.5 when the name has a kind word the node lacks (``db``, ``mongo``, ``worker``,
  ``gateway``, ...): ``ts-auth-mongo`` is not ``ts-auth-service``.

With the default ``min_match_score=2`` a name needs two informative tokens in common
with a node (``order-db-backup`` -> ``order-db``), or one plus the node's whole name
(``team-payment-service`` -> ``payment-service``); one shared word
(``legacy-billing-cron`` vs ``billing-service``) is not enough.
"""  # noqa: E501  (the Markdown table rows cannot be wrapped)

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from alertclf.contracts import MAPPING_METHODS
from alertclf.graph import dependants, dependencies

if TYPE_CHECKING:
    import networkx as nx

    from alertclf.settings import Settings

logger = logging.getLogger(__name__)

MAPPING_COLUMNS: tuple[str, ...] = (
    "service",
    "mapped_service",
    "mapping_method",
    "mapping_confidence",
)
ENRICHMENT_COLUMNS: tuple[str, ...] = (
    "mapped_service",
    "mapping_method",
    "mapping_confidence",
    "dependencies",
    "dependants",
)
NEIGHBOUR_SEPARATOR = "|"
# Every result row repeats its service's neighbour lists: a gateway that calls 300
# services would add ~4 KB to each of its alerts (3.5 KB per row on average on a
# 2,000-service estate) and dominate the size of the results. The first names and the
# count of the rest are what a reader uses; the graph file has the full lists.
NEIGHBOUR_LIST_LIMIT = 10


def neighbour_cell(names: list[str], limit: int = NEIGHBOUR_LIST_LIMIT) -> str:
    """``a|b|c``, or the first ``limit`` names and ``+N more`` for longer lists."""
    if len(names) <= limit:
        return NEIGHBOUR_SEPARATOR.join(names)
    return NEIGHBOUR_SEPARATOR.join([*names[:limit], f"+{len(names) - limit} more"])


# Confidence per key level (see the module docstring); fuzzy stays below all of them.
_LEVEL_CONFIDENCE = (0.98, 0.95, 0.90, 0.85)
FUZZY_MAX_CONFIDENCE = 0.8

# --- vocabularies -----------------------------------------------------------------------
_ENV_TOKENS = frozenset(
    {
        "prod", "production", "prd", "staging", "stage", "stg", "dev", "develop",
        "development", "qa", "uat", "preprod", "nonprod", "sandbox",
    }
)  # fmt: skip
# Trailing words that name an instance of a service rather than another service.
_INSTANCE_TOKENS = frozenset(
    {
        "replica", "replicas", "primary", "secondary", "master", "slave", "leader",
        "follower", "canary", "standby", "pod", "deployment", "deploy", "statefulset", "sts",
        "blue", "green", "container",
    }
)  # fmt: skip
_ABBREVIATIONS = {"svc": "service", "srv": "service", "database": "db", "gw": "gateway"}
# Words that say what kind of thing a node is, not which one: weak evidence on their own.
_GENERIC_TOKENS = frozenset(
    {"service", "app", "application", "server", "api", "backend", "ms", "microservice"}
)
# Words that say a name is a datastore, worker, gateway or exporter: a name that has one
# the node lacks is another thing (ts-auth-mongo is not ts-auth-service).
_KIND_TOKENS = frozenset(
    {
        "db", "mongo", "mongodb", "redis", "mysql", "postgres", "postgresql", "mariadb",
        "cache", "memcached", "queue", "kafka", "rabbitmq", "elasticsearch", "cassandra",
        "worker", "consumer", "cron", "cronjob", "job", "gateway", "frontend", "proxy",
        "exporter",
    }
)  # fmt: skip
# Suffixes that split compound ids ("cartservice" -> cart + service, "mongodb" -> mongo + db).
_COMPOUND_SUFFIXES = (
    "service", "server", "gateway", "frontend", "backend", "consumer", "worker", "cache",
    "queue", "proxy", "svc", "api", "db",
)  # fmt: skip

# Kubernetes pod-template/pod hashes use this alphabet (no vowels, no 0/1/3).
_K8S_HASH_CHARS = frozenset("bcdfghjklmnpqrstvwxz2456789")
_HEX_CHARS = frozenset("0123456789abcdef")
_DIRECTIONS = r"(?:north|south|east|west|central|northeast|northwest|southeast|southwest)"
_REGION = (
    r"(?:(?:us|eu|ap|sa|ca|me|af|il|mx|cn|uk|in|jp|kr|au|europe|asia|australia"
    r"|northamerica|southamerica|africa)(?:-gov)?-" + _DIRECTIONS + r"(?:-?\d{1,2})?"
    r"|(?:east|west|north|south|central|northcentral|southcentral|westcentral)"
    r"(?:us|eu|europe|asia|uk)\d?"
    r"|(?:us|uk)(?:east|west|north|south|central)\d?)"
)
_REGION_SUFFIX = re.compile(r"-" + _REGION + r"$")
_REGION_PREFIX = re.compile(r"^" + _REGION + r"-(?![0-9])")  # all of "eu-west-1-", not "eu-west-"
_K8S_DNS = re.compile(r"^([^.]+)\.[^.]+\.svc(?:\..*)?$")
_PORT = re.compile(r":\d+$")
# Label pairs pasted as the name: job=cart, service="cart", {app="cart", namespace="shop"}.
_LABEL_PAIR = r'\s*([a-z_][a-z0-9_./\-]*)\s*=~?\s*"?([^",{}=]*)"?\s*'
_LABEL_PAIRS = re.compile(r"^\{?" + _LABEL_PAIR + r"(?:," + _LABEL_PAIR + r")*,?\}?$")
_ONE_LABEL_PAIR = re.compile(_LABEL_PAIR)
# The labels that name the service, most specific first (Prometheus, Kubernetes, OTel).
_SERVICE_LABELS = (
    "service", "service_name", "service.name", "app.kubernetes.io/name", "app", "k8s_app",
    "job", "deployment", "workload", "container", "name",
)  # fmt: skip
# scheme://[user@]host[:port][/path...]: group 1 is host[:port]
_URL = re.compile(r"^[a-z][a-z0-9+.\-]*://(?:[^@/?#]*@)?([^/?#]+)")
# A release suffix (``frontend-v2``): the same service, another version of it.
_VERSION = re.compile(r"v\d{1,3}")
_SEPARATORS = re.compile(r"[\W_]+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


# --- normalisation ----------------------------------------------------------------------
def normalize_service_name(name: str) -> str:
    """Canonical form of a name: ``PROD_Payment-SVC-7d9f8c6b5-x2x9k`` -> ``payment-service``.

    Folds case and separators (``-``, ``_``, ``.``, spaces, ...), takes the service out of
    Kubernetes forms (``ns/name``, ``name.ns.svc[.cluster.local]``, ``:port``) and URLs
    (``http://name:8080/path``), expands abbreviations (``svc`` -> ``service``,
    ``database`` -> ``db``) and strips environment prefixes/suffixes, pod and replica
    suffixes, ordinals, release suffixes (``v2``, ``blue``) and region suffixes, but never
    strips a name down to nothing. Pure and idempotent; case- and separator-insensitive
    (except that a Kubernetes DNS name is recognised by its dots).
    """
    return "-".join(_name_tokens(name, camel=False))


def service_tokens(name: str) -> tuple[str, ...]:
    """Tokens for fuzzy matching: normalised words, camelCase and compound ids split.

    ``"PaymentService-prod"`` -> ``("payment", "service")``; ``"productcatalogservice"``
    -> ``("productcatalog", "service")``; plurals reduced (``orders`` -> ``order``).
    Environment words and hashes are dropped wherever they occur. Order is kept,
    duplicates removed.
    """
    tokens: list[str] = []
    for token in _name_tokens(name, camel=True):
        for part in _split_compound(token):
            part = _ABBREVIATIONS.get(part, part)
            if part in _ENV_TOKENS or _is_hash(part, need_digit=True):
                continue
            tokens.append(_singular(part))
    return tuple(dict.fromkeys(tokens))


def _singular(token: str) -> str:
    # "orders-service" and "order-service" are one service; crude on purpose, and applied
    # to graph ids and alert names alike, so a wrong stem still matches its own word.
    if len(token) >= 4 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def _name_tokens(name: str, *, camel: bool) -> list[str]:
    # NFKC and casefold are not idempotent together for a few exotic characters; repeating
    # until nothing changes makes the whole normaliser idempotent by construction.
    text = str(name)
    tokens = _name_tokens_once(text, camel=camel)
    for _ in range(3):
        again = _name_tokens_once("-".join(tokens), camel=False)
        if again == tokens:
            break
        tokens = again
    return tokens


def _name_tokens_once(text: str, *, camel: bool) -> list[str]:
    text = unicodedata.normalize("NFKC", text).strip()
    if camel:
        text = _CAMEL.sub("-", text)
    text = _service_part(unicodedata.normalize("NFKC", text.casefold()))
    tokens = [_ABBREVIATIONS.get(t, t) for t in _SEPARATORS.split(text) if t]
    return _strip_decorations(tokens)


def _service_part(text: str) -> str:
    """The part of a case-folded name that names the service: the host of a URL
    (``http://cart:8080/api``, whose last path segment names an endpoint, not a
    service), the last segment of ``namespace/name``, without a ``:port`` or a
    Kubernetes DNS name's namespace and domain."""
    url = _URL.match(text.strip())
    if url:
        text = url.group(1)
    elif "=" in text and _LABEL_PAIRS.match(text):
        text = _label_value(text)
    if "/" in text:  # namespace/name, pod/name, cluster/namespace/name
        parts = [p for p in text.split("/") if p.strip()]
        text = parts[-1] if parts else ""
    text = _PORT.sub("", text.strip())
    match = _K8S_DNS.match(text)
    return match.group(1) if match else text


def _label_value(text: str) -> str:
    """The service in ``job=cart`` or ``{service="cart", namespace="shop"}``: the value of
    the first label of ``_SERVICE_LABELS`` present, else of the first label with one."""
    pairs = {key: value.strip() for key, value in _ONE_LABEL_PAIR.findall(text.strip("{} "))}
    for key in _SERVICE_LABELS:
        if pairs.get(key):
            return pairs[key]
    return next((value for value in pairs.values() if value), text)


def _strip_decorations(tokens: list[str]) -> list[str]:
    """Drop environment, instance, pod, ordinal, release and region decorations at the
    ends."""
    steps = list(_strip_steps(tokens))
    return steps[-1]


def _strip_steps(tokens: list[str]) -> Iterator[list[str]]:
    """The tokens before and after each decoration removed, one removal at a time: a
    graph id may itself end in what looks like a decoration (``edge-gateway-13``,
    ``kafka-2``), so the mapper looks for a node at every step, not only at the end."""
    yield tokens
    while len(tokens) > 1:
        joined = "-".join(tokens)
        match = _REGION_SUFFIX.search(joined) or _REGION_PREFIX.search(joined)
        if match and match.group(0).strip("-") != joined:
            rest = joined[: match.start()] if match.end() == len(joined) else joined[match.end() :]
            if rest:
                tokens = rest.split("-")
                yield tokens
                continue
        last = tokens[-1]
        if (
            last in _ENV_TOKENS
            or last in _INSTANCE_TOKENS
            or (last.isascii() and last.isdigit())
            or _VERSION.fullmatch(last)
            or _is_hash(last, need_digit=False)
        ):
            tokens = tokens[:-1]
        elif tokens[0] in _ENV_TOKENS:
            tokens = tokens[1:]
        else:
            break
        yield tokens


def decoration_stages(name: str) -> list[str]:
    """``name`` in canonical separators after each decoration removed (see
    :func:`_strip_steps`), the whole name first; then the same with leading environment
    words removed first."""
    tokens = [t for t in _SEPARATORS.split(_service_part(_folded(name))) if t]
    stages = _stage_names(tokens)
    # Environment prefixes too, before any suffix: prod-edge-gateway-13.
    start = 0
    while start < len(tokens) - 1 and tokens[start] in _ENV_TOKENS:
        start += 1
    if start:
        stages += _stage_names(tokens[start:])
    return list(dict.fromkeys(stages))


def first_label_stages(name: str) -> list[str]:
    """The decoration stages of the first DNS label of a dotted name (``cart-0.shop`` ->
    ``cart-0``, ``cart``), or none: ``cart.shop`` is cart in namespace shop, the short
    form of ``cart.shop.svc``."""
    labels = [label for label in _service_part(_folded(name)).split(".") if label.strip()]
    if len(labels) < 2:
        return []
    return _stage_names([t for t in _SEPARATORS.split(labels[0]) if t])


def _stage_names(tokens: list[str]) -> list[str]:
    return ["-".join(step) for step in _strip_steps(tokens)]


def _folded(name: object) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", str(name)).casefold())


def _is_hash(token: str, *, need_digit: bool) -> bool:
    """Kubernetes pod/replicaset hash (``7d9f8c6b5``, ``x2x9k``) or a hex hash (``5f7b9``).

    Tokens of 5 to 16 characters only; shorter ones (``v2``, ``s3``) are words.
    """
    if not 5 <= len(token) <= 16 or not token.isascii():
        return False
    has_digit = any(c.isdigit() for c in token)
    if need_digit and not has_digit:
        return False
    chars = set(token)
    if len(token) <= 10 and chars <= _K8S_HASH_CHARS:
        return True
    return has_digit and chars <= _HEX_CHARS


def _split_compound(token: str) -> list[str]:
    for suffix in _COMPOUND_SUFFIXES:
        stem = token[: -len(suffix)]
        if token.endswith(suffix) and len(stem) >= 2 and any(c.isalpha() for c in stem):
            return [*_split_compound(stem), suffix]
    return [token]


def _plain_key(name: str) -> str:
    # Case and separators only: tells apart graph nodes that differ just by a decoration
    # (kafka-0 vs kafka-1, order-db vs order-db-replica).
    return "-".join(t for t in _SEPARATORS.split(_folded(name)) if t)


class MappingResult(NamedTuple):
    mapped_service: str
    mapping_method: str
    mapping_confidence: float


_UNMAPPED = MappingResult("", "unmapped", 0.0)


# --- the mapper -------------------------------------------------------------------------
class ServiceMapper:
    """Maps alert service names onto one graph's node ids; build once per graph.

    The index (keys and token postings of every node) is built here; ``map_services``
    memoises per name, so a scheduler that maps the same few thousand names every 15
    minutes does the work once.
    """

    def __init__(self, node_ids: Iterable[Hashable], min_match_score: float = 2.0) -> None:
        if min_match_score < 0:
            raise ValueError(f"min_match_score must be >= 0, got {min_match_score}")
        self.min_match_score = float(min_match_score)
        self.node_ids: tuple[str, ...] = tuple(dict.fromkeys(str(n) for n in node_ids))
        self._exact = frozenset(self.node_ids)
        self._sequences = [service_tokens(node) for node in self.node_ids]
        self._tokens = [frozenset(tokens) for tokens in self._sequences]
        n = len(self.node_ids)
        df = Counter(t for tokens in self._tokens for t in tokens)
        # A token in most node ids ("ts" in train-ticket) identifies nothing.
        self._common = frozenset(t for t, c in df.items() if n >= 4 and c > n / 2)
        # Case- and separator-folded ids that name exactly one node.
        plain: dict[str, list[str]] = {}
        for node in self.node_ids:
            plain.setdefault(_plain_key(node), []).append(node)
        self._plain_nodes = {k: v[0] for k, v in plain.items() if len(v) == 1}
        self._levels: list[dict[str, list[str]]] = [{}, {}, {}, {}]
        for node, tokens in zip(self.node_ids, self._sequences, strict=True):
            for level, key in enumerate(self._keys(node, tokens)):
                if key:
                    self._levels[level].setdefault(key, []).append(node)
        self._postings: dict[str, list[int]] = {}
        self._informative: list[frozenset[str]] = []
        for i, tokens in enumerate(self._tokens):
            informative = frozenset(t for t in tokens if self._weight(t) == 1.0)
            self._informative.append(informative)
            for token in informative:
                self._postings.setdefault(token, []).append(i)
        self._memo: dict[str, MappingResult] = {}

    def _keys(self, name: str, tokens: tuple[str, ...]) -> tuple[str, str, str, str]:
        normalized = normalize_service_name(name)
        # The core drops generic words and this graph's ubiquitous ones: "order" meets
        # "order-service", and "ts-order-service" too where every id starts with "ts-".
        core = "".join(t for t in tokens if t not in _GENERIC_TOKENS and t not in self._common)
        return (_plain_key(name), normalized, normalized.replace("-", ""), core)

    def _weight(self, token: str) -> float:
        return 0.5 if token in _GENERIC_TOKENS or token in self._common else 1.0

    # -- single names ----------------------------------------------------------------
    def map_one(self, name: object) -> MappingResult:
        """Map one name (``None``/NaN count as the empty name, which maps to nothing)."""
        text = _as_name(name)
        hit = self._memo.get(text)
        if hit is None:
            hit = self._map(text)
            if len(self._memo) > 1_000_000:  # a runaway stream of random names
                self._memo.clear()
            self._memo[text] = hit
        return hit

    def _map(self, name: str) -> MappingResult:
        if name in self._exact:
            return MappingResult(name, "exact", 1.0)
        if not name.strip():
            return _UNMAPPED
        # A node reached by removing decorations one at a time, before they eat into
        # the id itself (edge-gateway-13-7d9f8c6b5-x2x9k -> edge-gateway-13, not -1x).
        for number, stage in enumerate(decoration_stages(name)):
            node = self._plain_nodes.get(stage)
            if node is not None:
                level = 0 if number == 0 else 1  # folding only, or decorations removed
                return MappingResult(node, "normalized", _LEVEL_CONFIDENCE[level])
        tokens = service_tokens(name)
        for level, key in enumerate(self._keys(name, tokens)):
            nodes = self._levels[level].get(key) if key else None
            if nodes and len(nodes) == 1:
                return MappingResult(nodes[0], "normalized", _LEVEL_CONFIDENCE[level])
        # After every key of the whole name: "cart.service" is one name with dots for
        # separators and meets "cartservice" above, even where a node "cart" exists.
        for stage in first_label_stages(name):
            node = self._plain_nodes.get(stage)
            if node is not None:
                return MappingResult(node, "normalized", _LEVEL_CONFIDENCE[1])
        return self._fuzzy(name, tokens)

    def _fuzzy(self, name: str, sequence: tuple[str, ...]) -> MappingResult:
        tokens = frozenset(sequence)
        candidates: set[int] = set()
        for token in tokens:
            candidates.update(self._postings.get(token, ()))
        if not candidates:
            return _UNMAPPED
        scored = sorted(
            ((self._score(tokens, sequence, i), self.node_ids[i]) for i in candidates),
            key=lambda pair: (-pair[0], pair[1]),
        )
        best, node = scored[0]
        second = max(scored[1][0], 0.0) if len(scored) > 1 else 0.0
        if best <= 0 or best < self.min_match_score or best <= second:
            if best >= self.min_match_score and best == second:
                logger.debug("ambiguous fuzzy match for %r: %s", name, scored[:3])
            return _UNMAPPED
        margin = (best - second) / best
        confidence = FUZZY_MAX_CONFIDENCE * best / (best + 1.0) * (0.5 + 0.5 * margin)
        return MappingResult(node, "fuzzy", round(confidence, 4))

    def _score(self, tokens: frozenset[str], sequence: tuple[str, ...], i: int) -> float:
        node_tokens = self._tokens[i]
        informative = self._informative[i]
        shared = sum(self._weight(t) for t in tokens & node_tokens)
        missing = len(informative - tokens)
        bonus = 0.5 if informative and not missing else 0.0
        if bonus and _contains_run(sequence, self._sequences[i]):
            # The node's name appears verbatim inside the alert's name: tells
            # order-payment-api-x from payment-order-api.
            bonus += 0.25
        contradiction = 0.5 if any(t in _KIND_TOKENS for t in tokens - node_tokens) else 0.0
        return shared + bonus - 0.25 * missing - contradiction

    # -- batches ---------------------------------------------------------------------
    def map_services(self, services: Iterable[object]) -> pd.DataFrame:
        """One row per distinct name (first-seen order): ``MAPPING_COLUMNS``."""
        names = list(dict.fromkeys(_as_name(s) for s in services))
        results = [self.map_one(name) for name in names]
        return pd.DataFrame(
            {
                "service": pd.array(names, dtype="str"),
                "mapped_service": pd.array([r.mapped_service for r in results], dtype="str"),
                "mapping_method": pd.array([r.mapping_method for r in results], dtype="str"),
                "mapping_confidence": np.array(
                    [r.mapping_confidence for r in results], dtype="float64"
                ),
            },
            columns=list(MAPPING_COLUMNS),
        )


def _contains_run(sequence: tuple[str, ...], run: tuple[str, ...]) -> bool:
    k = len(run)
    return any(sequence[j : j + k] == run for j in range(len(sequence) - k + 1))


def _as_name(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


# --- alerts -----------------------------------------------------------------------------
def enrich_alerts(
    alerts: pd.DataFrame,
    G: nx.DiGraph,
    settings: Settings,
    mapper: ServiceMapper | None = None,
) -> pd.DataFrame:
    """Add ``ENRICHMENT_COLUMNS`` to every alert; unmapped alerts are kept.

    Maps each distinct ``service`` once and broadcasts the results with integer codes,
    so cost grows with the number of distinct names, not of alerts. ``dependencies`` and
    ``dependants`` are the mapped node's direct callees and callers joined with ``|``.
    """
    if "service" not in alerts.columns:
        raise ValueError(
            f"enrich_alerts: the alerts have no 'service' column (columns: {list(alerts.columns)})"
        )
    if mapper is None:
        mapper = ServiceMapper(G.nodes, settings.min_match_score)
    elif mapper.min_match_score != settings.min_match_score:
        logger.debug(
            "enrich_alerts: using the given mapper's min_match_score=%s (settings say %s)",
            mapper.min_match_score,
            settings.min_match_score,
        )

    codes, uniques = pd.factorize(alerts["service"], use_na_sentinel=True)
    results = [mapper.map_one(name) for name in uniques] + [_UNMAPPED]  # last: missing names
    codes = np.where(codes < 0, len(results) - 1, codes)

    mapped = [r.mapped_service for r in results]
    neighbours: dict[str, tuple[str, str]] = {}
    for node in set(mapped):
        if node:
            neighbours[node] = (
                neighbour_cell(dependencies(G, node)),
                neighbour_cell(dependants(G, node)),
            )
    none = ("", "")

    def broadcast(values: list[str]) -> pd.Series:
        # take() on the small per-name array keeps the work (and the str dtype) vectorised.
        return pd.Series(pd.array(values, dtype="str").take(codes), index=alerts.index)

    out = alerts.copy(deep=False)
    out["mapped_service"] = broadcast(mapped)
    out["mapping_method"] = broadcast([r.mapping_method for r in results])
    out["mapping_confidence"] = pd.Series(
        np.array([r.mapping_confidence for r in results], dtype="float64")[codes],
        index=alerts.index,
    )
    out["dependencies"] = broadcast([neighbours.get(m, none)[0] for m in mapped])
    out["dependants"] = broadcast([neighbours.get(m, none)[1] for m in mapped])

    methods = Counter(r.mapping_method for r in results[:-1])
    unmapped = [str(u) for u, r in zip(uniques, results, strict=False) if not r.mapped_service]
    logger.info(
        "mapped %d of %d distinct services onto the graph (%s)",
        len(uniques) - len(unmapped),
        len(uniques),
        ", ".join(f"{m}={methods.get(m, 0)}" for m in MAPPING_METHODS),
    )
    if unmapped:
        logger.info("unmapped services (first 10): %s", ", ".join(unmapped[:10]))
    return out


def mapping_statistics(enriched: pd.DataFrame) -> pd.DataFrame:
    """Per mapping method and in total: alerts, share, distinct services, mean confidence.

    Every method of ``contracts.MAPPING_METHODS`` has a row (zeros when unused), then a
    ``total`` row, so the file has the same shape on every run.
    """
    needed = ["service", "mapping_method", "mapping_confidence"]
    missing = [c for c in needed if c not in enriched.columns]
    if missing:
        raise ValueError(f"mapping_statistics: missing column(s) {missing}; run enrich_alerts")
    total = len(enriched)
    grouped = enriched.groupby("mapping_method", sort=False, observed=True).agg(
        alerts=("mapping_method", "size"),
        distinct_services=("service", "nunique"),
        mean_confidence=("mapping_confidence", "mean"),
    )
    rows = []
    for method in MAPPING_METHODS:
        if method in grouped.index:
            row = grouped.loc[method]
            alerts, distinct, mean = (
                int(row["alerts"]),
                int(row["distinct_services"]),
                float(row["mean_confidence"]),
            )
        else:
            alerts, distinct, mean = 0, 0, 0.0
        rows.append((method, alerts, alerts / total if total else 0.0, distinct, mean))
    rows.append(
        (
            "total",
            total,
            1.0 if total else 0.0,
            int(enriched["service"].nunique()),
            float(enriched["mapping_confidence"].mean()) if total else 0.0,
        )
    )
    frame = pd.DataFrame(
        rows,
        columns=["mapping_method", "alerts", "share", "distinct_services", "mean_confidence"],
    )
    frame["mapping_method"] = frame["mapping_method"].astype("str")
    return frame
