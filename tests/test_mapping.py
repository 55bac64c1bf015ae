"""Alert service name -> graph node mapping, enrichment and statistics."""

from __future__ import annotations

import random
import re
import string
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from alertclf.contracts import MAPPING_METHODS
from alertclf.graph import load_graph, synthetic_layered_graph
from alertclf.mapping import (
    ENRICHMENT_COLUMNS,
    MAPPING_COLUMNS,
    NEIGHBOUR_LIST_LIMIT,
    ServiceMapper,
    enrich_alerts,
    mapping_statistics,
    normalize_service_name,
    service_tokens,
)
from alertclf.settings import Settings

TOPOLOGIES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "topologies"

SIBLINGS = [
    "api-gateway",
    "web-frontend",
    "order-service",
    "order-worker",
    "order-db",
    "cart-service",
    "cart-db",
    "redis-cart",
    "payment-service",
    "payment-db",
    "user-service",
    "ledger-database",
]


def topology_nodes(name: str) -> list[str]:
    path = TOPOLOGIES / name
    if not path.is_file():
        pytest.skip(f"real topology {path} not found (needs ../shared/datasets beside the repo)")
    return list(load_graph(path))


# --- normalisation -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("payment-service", "payment-service"),
        ("PAYMENT-SERVICE", "payment-service"),
        ("Payment_Service", "payment-service"),
        ("payment.service", "payment-service"),
        ("payment service", "payment-service"),
        ("prod-payment-service", "payment-service"),
        ("production-payment-service", "payment-service"),
        ("prd-payment-service", "payment-service"),
        ("staging-payment-service", "payment-service"),
        ("stg-payment-service", "payment-service"),
        ("dev-payment-service", "payment-service"),
        ("qa-payment-service", "payment-service"),
        ("uat-payment-service", "payment-service"),
        ("payment-service-prod", "payment-service"),
        ("payment-service.prod", "payment-service"),
        ("payment_service_staging", "payment-service"),
        ("payment-service.default.svc.cluster.local", "payment-service"),
        ("payment-service.shop.svc", "payment-service"),
        ("payment-service.shop.svc.cluster.local:8080", "payment-service"),
        ("namespace/payment-service", "payment-service"),
        ("payment-service-7d9f8c6b5-x2x9k", "payment-service"),
        ("payment-service-5f7b9", "payment-service"),
        ("payment-service-a3f9e01b2c-x2x9k", "payment-service"),
        ("redis-cart-0", "redis-cart"),
        ("order-db-replica-2", "order-db"),
        ("payment-service-us-east-1", "payment-service"),
        ("payment-service-eu-west-2", "payment-service"),
        ("payment-service-us-central1", "payment-service"),
        ("payment-svc", "payment-service"),
        ("user-database", "user-db"),
        ("PROD_Payment-SVC-7d9f8c6b5-x2x9k", "payment-service"),
        ("shop/payment-service-7d9f8c6b5-x2x9k", "payment-service"),
        # a URL names its host; the path is an endpoint
        ("http://payment-service:8080/api/charge", "payment-service"),
        ("https://user@payment-service.shop.svc.cluster.local:8443/", "payment-service"),
        ("grpc://payment-service", "payment-service"),
        # a label pair pasted as the name names the service by its value
        ("job=payment-service", "payment-service"),
        ('service="payment-service"', "payment-service"),
        ('{namespace="shop", app="payment-service-7d9f8c6b5-x2x9k"}', "payment-service"),
        ("app.kubernetes.io/name=payment-service", "payment-service"),
        ("{instance=cart-0, job=payment-service}", "payment-service"),
        ("x=", "x"),
        # releases of one service
        ("frontend-v2", "frontend"),
        ("payment-service-v10", "payment-service"),
        ("payment-service-green", "payment-service"),
        # Never stripped to nothing, and real words survive.
        ("prod", "prod"),
        ("ts-travel2-service", "ts-travel2-service"),
        ("kafka", "kafka"),
        ("", ""),
        ("---", ""),
    ],
)
def test_normalize_service_name(raw, expected):
    assert normalize_service_name(raw) == expected
    assert normalize_service_name(expected) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PaymentService", ("payment", "service")),
        ("productcatalogservice", ("productcatalog", "service")),
        ("mongodb-prod", ("mongo", "db")),
        ("prod-orders-svc-7d9f8c6b5-x2x9k", ("order", "service")),
        ("ts-order-other-service", ("ts", "order", "other", "service")),
        ("redis", ("redis",)),
        ("", ()),
    ],
)
def test_service_tokens(raw, expected):
    assert service_tokens(raw) == expected


# --- the mapper --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def siblings() -> ServiceMapper:
    return ServiceMapper(SIBLINGS, min_match_score=2.0)


@pytest.mark.parametrize(
    ("name", "node", "method"),
    [
        ("order-db", "order-db", "exact"),
        ("ORDER-DB", "order-db", "normalized"),
        ("order-db-0", "order-db", "normalized"),
        ("order_db_primary", "order-db", "normalized"),
        ("order-database-7d9f8c6b5-x2x9k", "order-db", "normalized"),
        ("cart_service_prod", "cart-service", "normalized"),
        ("CartService", "cart-service", "normalized"),
        ("redis-cart-0", "redis-cart", "normalized"),
        ("redis_cart.shop.svc.cluster.local", "redis-cart", "normalized"),
        ("order-worker-7d9f8c6b5-x2x9k", "order-worker", "normalized"),
        ("ledger-db-us-east-1", "ledger-database", "normalized"),
        ("order", "order-service", "normalized"),  # a bare name is the service
        ("team-payment-service", "payment-service", "fuzzy"),
        ("payment-service-v2", "payment-service", "normalized"),
        ("http://cart-service:8080/api/cart", "cart-service", "normalized"),
        ("cart-redis", "redis-cart", "fuzzy"),
        ("service-order", "order-service", "normalized"),
        ("payment-service-blue", "payment-service", "normalized"),
        ("order-worker-container", "order-worker", "normalized"),
        # the short Kubernetes DNS form name.namespace
        ("order-db.shop", "order-db", "normalized"),
        ("Redis-Cart.payments", "redis-cart", "normalized"),
        ("order.db", "order-db", "normalized"),  # dots as separators: the whole name first
        ('{job="cart-service", namespace="shop"}', "cart-service", "normalized"),
    ],
)
def test_sibling_names_map_to_the_right_node(siblings, name, node, method):
    result = siblings.map_one(name)
    assert (result.mapped_service, result.mapping_method) == (node, method)
    assert 0 < result.mapping_confidence <= 1


@pytest.mark.parametrize(
    "name",
    [
        "legacy-billing-cron",
        "vpn-gateway",
        "node-exporter",
        "backup-agent",
        "xqzvbt-wlkmr",
        "order-exporter",  # one shared word is not enough
        "cart-worker",  # a kind the graph does not have for cart
        'job="node-exporter"',
        "billing.shop",  # a namespace after a name the graph does not have
        "",
        "   ",
        "prod",
    ],
)
def test_unknown_services_stay_unmapped(siblings, name):
    assert siblings.map_one(name) == ("", "unmapped", 0.0)


def test_a_dotted_name_is_one_name_before_it_is_name_and_namespace():
    mapper = ServiceMapper(["cart", "cartservice", "frontend"])
    assert mapper.map_one("cart.service").mapped_service == "cartservice"
    assert mapper.map_one("cart.shop").mapped_service == "cart"
    assert mapper.map_one("frontend-0.default").mapped_service == "frontend"


def test_confidence_orders_methods(siblings):
    exact = siblings.map_one("order-db").mapping_confidence
    normalized = siblings.map_one("ORDER_DB").mapping_confidence
    decorated = siblings.map_one("prod-order-db-0").mapping_confidence
    fuzzy = siblings.map_one("team-payment-service").mapping_confidence
    assert exact == 1.0 > normalized > decorated > fuzzy > 0


def test_ties_are_unmapped():
    mapper = ServiceMapper(["alpha-beta-service", "beta-alpha-service"])
    assert mapper.map_one("alpha-gamma-beta-service").mapping_method == "unmapped"
    assert mapper.map_one("service-alpha-beta").mapped_service == "alpha-beta-service"  # order
    # Nodes equal after normalisation are told apart only by their exact or plain form.
    pods = ServiceMapper(["kafka-0", "kafka-1"])
    assert pods.map_one("KAFKA-1").mapped_service == "kafka-1"
    assert pods.map_one("kafka").mapping_method == "unmapped"
    assert pods.map_one("prod-kafka").mapping_method == "unmapped"


def test_min_match_score_controls_fuzzy_matches():
    strict = ServiceMapper(SIBLINGS, min_match_score=10)
    assert strict.map_one("team-payment-service").mapping_method == "unmapped"
    assert strict.map_one("prod-order-db-0").mapped_service == "order-db"  # not fuzzy
    lenient = ServiceMapper(SIBLINGS, min_match_score=1.25)
    assert lenient.map_one("payment-exporter").mapping_method == "unmapped"  # kind contradiction
    assert lenient.map_one("payment-thing").mapped_service == "payment-service"
    with pytest.raises(ValueError, match="min_match_score"):
        ServiceMapper(SIBLINGS, min_match_score=-1)


def test_graph_wide_prefixes_are_not_evidence():
    # Every train-ticket id is "ts-...-service": those words alone never decide.
    mapper = ServiceMapper(
        ["ts-order-service", "ts-order-other-service", "ts-auth-service", "ts-user-service"]
    )
    assert mapper.map_one("order-service").mapped_service == "ts-order-service"
    assert mapper.map_one("OrderOtherService").mapped_service == "ts-order-other-service"
    assert mapper.map_one("ts-ticket-service").mapping_method == "unmapped"
    assert mapper.map_one("ts-auth-mongo").mapping_method == "unmapped"


def test_compound_ids_of_online_boutique_style():
    mapper = ServiceMapper(["cartservice", "productcatalogservice", "redis-cart", "frontend"])
    assert mapper.map_one("cart-service").mapped_service == "cartservice"
    assert mapper.map_one("CartService-prod").mapped_service == "cartservice"
    assert mapper.map_one("product-catalog-svc").mapped_service == "productcatalogservice"
    assert mapper.map_one("redis-cart-master-0").mapped_service == "redis-cart"
    assert mapper.map_one("cart-db").mapping_method == "unmapped"


def test_map_services_frame(siblings):
    frame = siblings.map_services(["order-db-0", None, "order-db-0", "vpn-gateway", np.nan, ""])
    assert tuple(frame.columns) == MAPPING_COLUMNS
    assert list(frame["service"]) == ["order-db-0", "", "vpn-gateway"]
    assert list(frame["mapped_service"]) == ["order-db", "", ""]
    assert list(frame["mapping_method"]) == ["normalized", "unmapped", "unmapped"]
    assert frame["mapping_confidence"].dtype == "float64"
    assert frame["mapping_confidence"].between(0, 1).all()
    assert set(frame["mapping_method"]) <= set(MAPPING_METHODS)
    empty = siblings.map_services([])
    assert tuple(empty.columns) == MAPPING_COLUMNS and empty.empty


# --- name-variant corpus -----------------------------------------------------------------
K8S_HASH = "bcdfghjklmnpqrstvwxz2456789"
PREFIXES = ["prod-", "production-", "prd-", "staging-", "stg-", "dev-", "qa-", "uat-"]
SUFFIXES = ["-prod", ".prod", "_staging", "-stg", "-dev", "_prod", "-uat", "-production"]
REGIONS = ["-us-east-1", "-eu-west-2", "-ap-southeast-1", "-us-central1", "-eastus2"]
NAMESPACES = ["default", "shop", "payments", "platform", "ts"]
UNKNOWN = [
    "legacy-billing-cron",
    "vpn-gateway",
    "node-exporter",
    "backup-agent",
    "kube-state-metrics",
    "prometheus",
    "grafana",
    "coredns",
    "fluent-bit",
    "cert-manager",
    "istio-ingressgateway",
    "ldap-sync",
    "mail-relay",
    "jenkins-agent",
    "metrics-server",
    "kube-proxy",
    "calico-node",
    "argocd-repo-server",
    "vault",
    "consul-agent",
    "haproxy",
    "bastion-host",
    "nfs-provisioner",
    "splunk-forwarder",
    "datadog-agent",
]


def _hash(rng: random.Random, length: int, chars: str = K8S_HASH) -> str:
    return "".join(rng.choice(chars) for _ in range(length))


def _camel(node: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_.]", node))


def _abbreviate(node: str) -> str:
    return re.sub(r"\bdb\b", "database", re.sub(r"service\b", "svc", node))


def name_variants(node: str, rng: random.Random) -> list[str]:
    """How monitoring tools spell ``node``: the kinds listed in DESIGN.md §2, and a few more."""
    ns = rng.choice(NAMESPACES)
    pod = f"{node}-{_hash(rng, rng.choice([8, 9, 10]))}-{_hash(rng, 5)}"
    variants = [
        node,
        node.upper(),
        _camel(node),
        node.title(),
        node.replace("-", "_"),
        node.replace("-", "."),
        node.replace("-", " "),
        node.upper().replace("-", "_"),
        rng.choice(PREFIXES) + node,
        node + rng.choice(SUFFIXES),
        f"{node}.{ns}.svc.cluster.local",
        f"{node}.{ns}.svc",
        f"{ns}/{node}",
        pod,
        f"{node}-{_hash(rng, 5)}",
        f"{node}-{rng.randint(0, 5)}",
        f"{node}-replica-{rng.randint(0, 3)}",
        node + rng.choice(REGIONS),
        _abbreviate(node),
        f"{node}-{_hash(rng, 10, '0123456789abcdef')}-{_hash(rng, 5)}",
        rng.choice(PREFIXES) + pod,
        f"{ns}/{pod}",
        (node + rng.choice(SUFFIXES)).upper(),
        _camel(node) + rng.choice(SUFFIXES),
        rng.choice(PREFIXES) + node.replace("-", "_") + rng.choice(REGIONS),
        _abbreviate(node).replace("-", "_") + "-prod",
        f"{node}-{rng.randint(0, 3)}.{ns}.svc.cluster.local",
        # beyond the listed kinds: canaries, team prefixes, versions
        f"{node}-canary",
        f"team-{node}-v2",
        f"{node}.{ns}",
        f"{node}-container",
        f"job={node}",
        f'{{namespace="{ns}", service="{pod}"}}',
    ]
    compound = re.fullmatch(r"([a-z]+?)(service)", node)
    if compound:  # online-boutique style "cartservice"
        stem = compound.group(1)
        variants += [f"{stem}-service", f"{stem}_svc", f"{stem.capitalize()}Service-prod"]
    return variants


def unknown_variants(rng: random.Random, n_random: int = 150) -> list[str]:
    names = list(UNKNOWN)
    for _ in range(n_random):
        words = [
            "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))
            for _ in range(rng.randint(1, 3))
        ]
        names.append("-".join(words))
    out = []
    for name in names:
        out += [
            name,
            rng.choice(PREFIXES) + name,
            f"{name}-{_hash(rng, 9)}-{_hash(rng, 5)}",
            name.upper().replace("-", "_"),
        ]
    return out


def mapping_rates(nodes: list[str], seed: int = 0) -> tuple[float, float, list, list]:
    """(share of in-graph alerts mapped to their node, share of unknown ones mapped at all)."""
    rng = random.Random(seed)
    mapper = ServiceMapper(nodes, min_match_score=Settings().min_match_score)
    known = [(variant, node) for node in nodes for variant in name_variants(node, rng)]
    unknown = unknown_variants(rng)
    # Alerts, not names: the same variant repeats with a skewed frequency.
    weights = [rng.choice([1, 1, 1, 2, 5, 20]) for _ in known]
    frame = mapper.map_services([v for v, _ in known] + unknown).set_index("service")
    misses = [
        (v, n, frame.loc[v, "mapped_service"])
        for v, n in known
        if frame.loc[v, "mapped_service"] != n
    ]
    hits = sum(
        w for (v, n), w in zip(known, weights, strict=True) if frame.loc[v, "mapped_service"] == n
    )
    wrong = [u for u in unknown if frame.loc[u, "mapped_service"] != ""]
    return hits / sum(weights), len(wrong) / len(unknown), misses, wrong


def assert_rates(nodes: list[str]) -> None:
    hit, false_positive, misses, wrong = mapping_rates(nodes)
    assert hit >= 0.98, f"only {hit:.1%} mapped correctly; e.g. {misses[:10]}"
    assert false_positive < 0.05, f"{false_positive:.1%} unknown names mapped: {wrong[:10]}"


def test_rates_on_a_layered_graph_with_siblings():
    nodes = list(synthetic_layered_graph(200, seed=3)) + SIBLINGS
    nodes = list(dict.fromkeys(nodes))
    assert {"order-service", "order-worker", "order-db", "redis-cart"} <= set(nodes)
    # Distinct services, not one spelled twice (user-db and user-database would be).
    assert len({normalize_service_name(n) for n in nodes}) == len(nodes)
    assert_rates(nodes)


@pytest.mark.parametrize("topology", ["online-boutique.json", "train-ticket.json"])
def test_rates_on_real_topologies(topology):
    assert_rates(topology_nodes(topology))


# --- enrichment --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shop() -> nx.DiGraph:
    G = nx.DiGraph()
    G.add_edges_from(
        [
            ("api-gateway", "order-service"),
            ("api-gateway", "cart-service"),
            ("order-service", "order-db"),
            ("order-service", "cart-service"),
            ("cart-service", "redis-cart"),
        ]
    )
    return G


def alerts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "alert_id": ["a1", "a2", "a3", "a4", "a5"],
            "service": ["order-service", "ORDER_SERVICE-prod", "vpn-gateway", None, "redis-cart-0"],
            "alert_name": ["HighCPU"] * 5,
        },
        index=[10, 11, 12, 13, 14],
    )


def test_enrich_alerts_adds_columns_and_keeps_every_alert(shop):
    alerts = alerts_frame()
    before = alerts.copy()
    out = enrich_alerts(alerts, shop, Settings())
    pd.testing.assert_frame_equal(alerts, before)  # pure: the input is untouched
    assert list(out.columns) == [*alerts.columns, *ENRICHMENT_COLUMNS]
    assert list(out.index) == list(alerts.index)
    assert list(out["mapped_service"]) == [
        "order-service",
        "order-service",
        "",
        "",
        "redis-cart",
    ]
    assert list(out["mapping_method"]) == [
        "exact",
        "normalized",
        "unmapped",
        "unmapped",
        "normalized",
    ]
    assert out.loc[10, "dependencies"] == "cart-service|order-db"
    assert out.loc[10, "dependants"] == "api-gateway"
    assert out.loc[14, "dependencies"] == ""
    assert out.loc[14, "dependants"] == "cart-service"
    assert out.loc[12, ["dependencies", "dependants"]].tolist() == ["", ""]
    assert out["mapping_confidence"].tolist()[2:4] == [0.0, 0.0]
    for column in ("mapped_service", "mapping_method", "dependencies", "dependants"):
        assert out[column].dtype == "str"
        assert not out[column].isna().any()


def test_long_neighbour_lists_keep_the_first_names_and_count_the_rest():
    # A gateway calling 25 services: its alerts carry 10 names and "+15 more", not 25.
    G = nx.DiGraph([("gateway", f"svc-{i:02d}") for i in range(25)])
    alerts = pd.DataFrame({"service": ["gateway", "svc-03"]})
    out = enrich_alerts(alerts, G, Settings())
    listed = out.loc[0, "dependencies"].split("|")
    assert listed == [*(f"svc-{i:02d}" for i in range(NEIGHBOUR_LIST_LIMIT)), "+15 more"]
    assert out.loc[1, "dependants"] == "gateway"


def test_enrich_alerts_reuses_a_mapper_and_rejects_frames_without_service(shop):
    mapper = ServiceMapper(shop.nodes)
    out = enrich_alerts(alerts_frame(), shop, Settings(), mapper=mapper)
    assert out["mapped_service"].iloc[1] == "order-service"
    with pytest.raises(ValueError, match="no 'service' column"):
        enrich_alerts(pd.DataFrame({"svc": ["a"]}), shop, Settings())
    empty = enrich_alerts(alerts_frame().iloc[:0], shop, Settings())
    assert empty.empty and set(ENRICHMENT_COLUMNS) <= set(empty.columns)


def test_mapping_statistics(shop):
    out = enrich_alerts(alerts_frame(), shop, Settings())
    stats = mapping_statistics(out)
    assert list(stats["mapping_method"]) == [*MAPPING_METHODS, "total"]
    by = stats.set_index("mapping_method")
    assert by.loc["exact", "alerts"] == 1
    assert by.loc["normalized", "alerts"] == 2
    assert by.loc["fuzzy", "alerts"] == 0 and by.loc["fuzzy", "mean_confidence"] == 0
    assert by.loc["unmapped", "alerts"] == 2
    assert by.loc["unmapped", "distinct_services"] == 1  # None is not a service name
    assert by.loc["total", "alerts"] == 5
    assert by.loc["total", "share"] == 1.0
    assert by.loc[list(MAPPING_METHODS), "share"].sum() == pytest.approx(1.0)
    assert by.loc["normalized", "mean_confidence"] == pytest.approx(
        out.loc[out.mapping_method == "normalized", "mapping_confidence"].mean()
    )
    empty = mapping_statistics(out.iloc[:0])
    assert empty["alerts"].sum() == 0 and len(empty) == len(MAPPING_METHODS) + 1
    with pytest.raises(ValueError, match="mapping_method"):
        mapping_statistics(alerts_frame())


def test_a_million_alerts_enrich():
    # How fast: benchmarks/bench.py (parts that must scale on their own).
    G = synthetic_layered_graph(5000, seed=7)
    rng = random.Random(1)
    nodes = list(G)
    names = list(dict.fromkeys(rng.choice(name_variants(n, rng)) for n in nodes))[:4500]
    names += [f"unknown-thing-{i}" for i in range(5000 - len(names))]
    picks = np.random.default_rng(0).integers(0, len(names), 1_000_000)
    alerts = pd.DataFrame(
        {
            "service": pd.array(np.array(names, dtype=object)[picks], dtype="str"),
            "alert_name": "HighCPUUsage",
        }
    )
    out = enrich_alerts(alerts, G, Settings())
    assert len(out) == 1_000_000
    assert out["service"].nunique() == 5000
    stats = mapping_statistics(out).set_index("mapping_method")
    assert stats.loc["unmapped", "distinct_services"] >= 500


def test_node_ids_ending_in_numbers_survive_decoration_stripping():
    # A graph id may end in what looks like an ordinal: the pod and environment forms of
    # edge-gateway-13 must not be stripped down to the ambiguous "edge-gateway".
    mapper = ServiceMapper(["edge-gateway-10", "edge-gateway-11", "edge-gateway-13", "kafka-0"])
    for name in (
        "edge-gateway-13-8zkwhj7c8q-c4clj",
        "prod-edge-gateway-13",
        "edge-gateway-13_production",
        "edge-gateway-13.prod.svc.cluster.local",
        "EDGE_GATEWAY_13",
    ):
        assert mapper.map_one(name).mapped_service == "edge-gateway-13", name
    # Stripping still maps other replicas of a one-node statefulset to it.
    assert mapper.map_one("kafka-0").mapping_method == "exact"
    assert mapper.map_one("kafka-7").mapped_service == "kafka-0"
