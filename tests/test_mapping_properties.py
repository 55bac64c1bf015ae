"""Property-based tests of the service-name normaliser and mapper (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from alertclf.contracts import MAPPING_METHODS
from alertclf.mapping import ServiceMapper, normalize_service_name, service_tokens

K8S_HASH = "bcdfghjklmnpqrstvwxz2456789"
ENV_PREFIXES = ["prod-", "production-", "prd-", "staging-", "stg-", "dev-", "qa-", "uat-"]
ENV_SUFFIXES = ["-prod", ".prod", "_staging", "-stg", "-dev", "-qa", "_uat"]
SEPARATORS = ["-", "_", ".", " "]

# Words as they appear in service names: lowercase letters with the odd digit inside.
word = st.from_regex(r"[a-z][a-z0-9]{1,9}", fullmatch=True)
# Realistic ids: words that are not themselves decorations the normaliser strips (an id
# such as "alpha-prod" or "cache-x2x9k" is legal, but "alpha" + "-prod" then names it too).
id_word = st.sampled_from(
    [
        "order",
        "cart",
        "payment",
        "user",
        "auth",
        "catalog",
        "search",
        "checkout",
        "shipping",
        "redis",
        "kafka",
        "worker",
        "db",
        "cache",
        "api",
        "gateway",
        "frontend",
        "service",
        "ledger",
        "email",
        "ts",
        "travel2",
        "node",
        "queue",
        "mysql",
        "billing",
    ]
) | word.filter(lambda w: normalize_service_name(w) == w and service_tokens(w) == (w,))
node_id = st.lists(id_word, min_size=1, max_size=4).map("-".join)
node_ids = st.lists(node_id, min_size=1, max_size=30, unique=True)
name_chars = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_. ", max_size=40
)


@given(st.text(max_size=60))
def test_normaliser_is_idempotent_on_any_text(text):
    once = normalize_service_name(text)
    assert normalize_service_name(once) == once


@given(name_chars)
def test_normaliser_is_idempotent_on_name_like_text(text):
    once = normalize_service_name(text)
    assert normalize_service_name(once) == once
    assert once == once.lower()
    assert " " not in once and "_" not in once and "." not in once


@given(name_chars)
def test_normaliser_is_case_insensitive(text):
    assert normalize_service_name(text.upper()) == normalize_service_name(text.lower())
    assert normalize_service_name(text.swapcase()) == normalize_service_name(text)


@given(st.lists(word, min_size=1, max_size=5), st.lists(st.sampled_from(SEPARATORS), min_size=4))
def test_normaliser_is_separator_insensitive(words, separators):
    # A dotted "name.namespace.svc" is a Kubernetes DNS name, not separators: leave it out.
    assume("svc" not in words)
    joined = words[0]
    for w, sep in zip(words[1:], separators, strict=False):
        joined += sep + w
    assert normalize_service_name(joined) == normalize_service_name("-".join(words))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(node_ids)
def test_every_node_maps_to_itself_exactly(nodes):
    mapper = ServiceMapper(nodes)
    for node in nodes:
        assert mapper.map_one(node) == (node, "exact", 1.0)
    frame = mapper.map_services(nodes)
    assert list(frame["mapped_service"]) == nodes


@st.composite
def decorated(draw):
    nodes = draw(node_ids)
    node = draw(st.sampled_from(nodes))
    # Decorated forms of another node must not be that node's own id either.
    keys = {normalize_service_name(n) for n in nodes}
    assume(len(keys) == len(nodes))
    kind = draw(st.sampled_from(["pod", "replicaset", "statefulset", "env", "case", "mixed"]))
    hash_ = st.text(alphabet=K8S_HASH, min_size=5, max_size=5)
    if kind == "pod":
        rs = draw(st.text(alphabet=K8S_HASH, min_size=8, max_size=10))
        name = f"{node}-{rs}-{draw(hash_)}"
    elif kind == "replicaset":
        name = f"{node}-{draw(hash_)}"
    elif kind == "statefulset":
        name = f"{node}-{draw(st.integers(0, 20))}"
    elif kind == "env":
        name = draw(st.sampled_from(ENV_PREFIXES)) + node
        if draw(st.booleans()):
            name += draw(st.sampled_from(ENV_SUFFIXES))
    elif kind == "case":
        name = draw(st.sampled_from([node.upper(), node.title(), node.swapcase()]))
    else:
        rs = draw(st.text(alphabet=K8S_HASH, min_size=9, max_size=9))
        name = draw(st.sampled_from(ENV_PREFIXES)).upper() + f"{node}-{rs}-{draw(hash_)}".upper()
        name = name.replace("-", draw(st.sampled_from(["-", "_"])))
    return nodes, node, name


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(decorated())
def test_decorated_node_ids_map_back(case):
    nodes, node, name = case
    result = ServiceMapper(nodes).map_one(name)
    assert result.mapped_service == node, (name, result)
    assert result.mapping_method in ("exact", "normalized")
    assert 0.8 <= result.mapping_confidence <= 1.0


@given(node_ids, st.text(max_size=80))
def test_any_string_gives_a_valid_answer(nodes, text):
    mapper = ServiceMapper(nodes)
    result = mapper.map_one(text)
    assert result.mapping_method in MAPPING_METHODS
    assert 0.0 <= result.mapping_confidence <= 1.0
    assert (result.mapped_service == "") == (result.mapping_method == "unmapped")
    assert result.mapped_service == "" or result.mapped_service in nodes
    if result.mapping_method == "exact":
        assert result.mapping_confidence == 1.0 and text == result.mapped_service
