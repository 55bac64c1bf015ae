"""Alert families: a catalogue of realistic alert names and a classifier for any name.

Names follow real Prometheus rule catalogues: kube-prometheus (Apache-2.0) and
"awesome-prometheus-alerts by samber" (CC BY 4.0), whose rule titles are written here
in their CamelCase alert-name form. The simulator draws from :data:`CATALOGUE`; the
pipeline uses :func:`alert_family` to put *any* alert name (real or simulated) into
one of :data:`FAMILIES` from the words in it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

# The family of an alert name whose words match no family.
UNKNOWN_FAMILY = "other"
FAMILIES: tuple[str, ...] = (
    "cpu",
    "memory",
    "disk",
    "network",
    "latency",
    "errors",
    "availability",
    "datastore",
    "queue",
    UNKNOWN_FAMILY,
)
FAMILY_LABELS: dict[str, str] = {
    "cpu": "CPU saturation",
    "memory": "Memory pressure",
    "disk": "Disk / storage",
    "network": "Network faults",
    "latency": "Latency",
    "errors": "Error rate",
    "availability": "Availability",
    "datastore": "Datastore health",
    "queue": "Queue backlog",
    UNKNOWN_FAMILY: "Other alerts",
}


@dataclass(frozen=True)
class AlertType:
    name: str
    family: str
    severity: str
    kinds: tuple[str, ...]  # node kinds it fires on: gateway, service, worker, datastore
    description: str


_ALL = ("gateway", "service", "worker", "datastore")
_APP = ("gateway", "service", "worker")

CATALOGUE: tuple[AlertType, ...] = (
    # cpu
    AlertType("HostHighCpuLoad", "cpu", "warning", _ALL, "CPU load is > 80% on {host}"),
    AlertType("CPUThrottlingHigh", "cpu", "warning", _APP, "{pct}% throttling of CPU in {service}"),
    AlertType("ContainerHighCpuUtilization", "cpu", "warning", _ALL, "Container CPU > 80% for {service}"),
    AlertType("NodeCPUHighUsage", "cpu", "info", _ALL, "CPU usage at {pct}% on {host}"),
    # memory
    AlertType("HostOutOfMemory", "memory", "warning", _ALL, "Node memory is filling up (< 10% left) on {host}"),
    AlertType("ContainerHighMemoryUsage", "memory", "warning", _ALL, "Container memory usage is above 80% for {service}"),
    AlertType("HostOomKillDetected", "memory", "warning", _ALL, "OOM kill detected on {host}"),
    AlertType("NodeMemoryHighUtilization", "memory", "warning", _ALL, "Memory is {pct}% used on {host}"),
    # disk
    AlertType("HostOutOfDiskSpace", "disk", "critical", ("worker", "datastore"), "Disk is almost full (< 10% left) on {host}"),
    AlertType("NodeFilesystemAlmostOutOfSpace", "disk", "warning", ("worker", "datastore"), "Filesystem has less than 5% space left on {host}"),
    AlertType("HostUnusualDiskWriteLatency", "disk", "warning", ("worker", "datastore"), "Disk latency is growing (write operations > 100ms) on {host}"),
    AlertType("KubePersistentVolumeFillingUp", "disk", "critical", ("datastore",), "PersistentVolume claimed by {service} is {pct}% full"),
    # network
    AlertType("NodeNetworkReceiveErrs", "network", "warning", _ALL, "{host} interface eth0 has encountered receive errors"),
    AlertType("HostNetworkTransmitErrors", "network", "warning", _ALL, "{host} interface eth0 has encountered transmit errors"),
    AlertType("BlackboxProbeFailed", "network", "critical", ("gateway", "service"), "Probe failed for {service}"),
    AlertType("HostConntrackLimit", "network", "warning", ("gateway", "service"), "The number of conntrack entries is approaching the limit on {host}"),
    # latency (mostly symptoms on callers)
    AlertType("HighRequestLatency", "latency", "warning", _APP, "p99 request latency of {service} is above 1s"),
    AlertType("ServiceP99LatencyHigh", "latency", "high", _APP, "{service} p99 latency is {ms}ms"),
    AlertType("BlackboxProbeSlowHttp", "latency", "warning", ("gateway", "service"), "HTTP request to {service} took more than 1s"),
    AlertType("UpstreamResponseTimeHigh", "latency", "warning", _APP, "Upstream response time of {service} above SLO"),
    # errors
    AlertType("HighErrorRate", "errors", "critical", _APP, "{service} error rate is {pct}%"),
    AlertType("HTTP5xxRateHigh", "errors", "high", ("gateway", "service"), "Too many HTTP 5xx responses from {service}"),
    AlertType("UpstreamConnectFailures", "errors", "high", _APP, "{service} fails to connect to its upstream"),
    AlertType("KubeJobFailed", "errors", "warning", ("worker",), "Job {service} failed to complete"),
    # availability
    AlertType("KubePodCrashLooping", "availability", "warning", _APP, "Pod {service} is crash looping"),
    AlertType("KubeDeploymentReplicasMismatch", "availability", "warning", _APP, "Deployment {service} has not matched the expected number of replicas"),
    AlertType("TargetDown", "availability", "warning", _ALL, "{pct}% of the {service} targets are down"),
    AlertType("ContainerKilled", "availability", "warning", _APP, "A container of {service} has disappeared"),
    AlertType("KubePodNotReady", "availability", "warning", _APP, "Pod {service} has been in a non-ready state for longer than 15 minutes"),
    # datastore
    AlertType("PostgresqlTooManyConnections", "datastore", "warning", ("datastore",), "PostgreSQL instance {service} has too many connections (> 80%)"),
    AlertType("PostgresqlDown", "datastore", "critical", ("datastore",), "Postgresql instance {service} is down"),
    AlertType("MysqlSlowQueries", "datastore", "warning", ("datastore",), "MySQL server {service} has some new slow queries"),
    AlertType("RedisDown", "datastore", "critical", ("datastore",), "Redis instance {service} is down"),
    AlertType("RedisRejectedConnections", "datastore", "high", ("datastore",), "Some connections to Redis {service} have been rejected"),
    AlertType("ElasticsearchClusterRed", "datastore", "critical", ("datastore",), "Elastic cluster {service} is red"),
    AlertType("MongodbReplicationLag", "datastore", "high", ("datastore",), "Mongodb replication lag on {service} is more than 10s"),
    # queue
    AlertType("KafkaConsumersGroupLag", "queue", "high", ("worker", "datastore"), "Kafka consumers group lag on {service} is growing"),
    AlertType("RabbitmqTooManyMessagesInQueue", "queue", "warning", ("worker", "datastore"), "Queue {service} is filling up (> 1000 msgs)"),
    AlertType("KafkaTopicsReplicas", "queue", "critical", ("datastore",), "Kafka topic in-sync partition count on {service} is low"),
)  # fmt: skip

# Words -> family, checked in this order: technology words first, because "RedisDown"
# is a datastore problem before it is an availability one, and resource words before
# outcome words ("NodeNetworkReceiveErrs" is a network fault that shows as errors).
_FAMILY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("datastore", ("postgresql", "postgres", "mysql", "redis", "mongodb", "mongo",
                   "elasticsearch", "elastic", "cassandra", "memcached", "database", "sql",
                   "replication", "query", "queries", "deadlock", "db")),
    ("queue", ("kafka", "rabbitmq", "rabbit", "consumer", "consumers", "lag", "queue", "backlog",
               "topic", "topics", "partition", "nats", "pulsar", "sqs")),
    ("disk", ("disk", "filesystem", "inode", "inodes", "volume", "persistentvolume", "storage",
              "raid", "smart", "iowait", "space", "fill")),
    ("memory", ("memory", "oom", "swap", "heap", "gc", "mem")),
    ("cpu", ("cpu", "throttling", "throttle", "load", "saturation", "steal", "context")),
    ("latency", ("latency", "slow", "duration", "response", "timeout", "timeouts", "p99", "p95",
                 "responsetime")),
    ("network", ("network", "packet", "conntrack", "interface", "dns", "probe", "bandwidth",
                 "throughput", "tcp", "udp", "bond", "ping", "ssl", "certificate")),
    ("errors", ("error", "errors", "errs", "5xx", "fail", "failed", "failures", "failing",
                "exception", "exceptions", "panic", "rejected", "refused")),
    ("availability", ("down", "unavailable", "crash", "crashlooping", "crashloop", "notready",
                      "ready", "replicas", "mismatch", "restart", "restarts", "killed", "absent",
                      "missing", "unreachable", "unhealthy", "health", "up", "target", "evicted",
                      "pod", "rollout")),
)  # fmt: skip

_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+[a-z]*")


def name_tokens(alert_name: str) -> tuple[str, ...]:
    """Lower-case words of an alert name: ``HTTP5xxRateHigh`` -> http, 5xx, rate, high."""
    return tuple(t.lower() for t in _CAMEL.findall(alert_name or ""))


@lru_cache(maxsize=65_536)
def alert_family(alert_name: str) -> str:
    """The family of any alert name, from the words in it; ``other`` when none match."""
    tokens = set(name_tokens(alert_name))
    joined = (alert_name or "").lower()
    for family, words in _FAMILY_WORDS:
        for word in words:
            if word in tokens or (len(word) >= 5 and word in joined):
                return family
    return UNKNOWN_FAMILY


# Families a caller can show when one of its dependencies fails.
SYMPTOM_FAMILIES = frozenset({"latency", "errors", "availability", UNKNOWN_FAMILY})
# Words of alerts that report a fault of the service itself (its pods crash, are killed,
# are missing): a failing dependency slows or fails a caller, it does not kill its pods.
_LOCAL_FAULT_WORDS = frozenset(
    {"crash", "crashlooping", "crashloop", "killed", "replicas", "mismatch", "oom", "evicted",
     "restart", "restarts", "absent", "down", "rollout"}
)  # fmt: skip


# What the callers of a failing service report, by the family of its fault: the RED
# reading of a dependency failure. A saturated CPU, memory or queue first makes its
# callers slow; a sick disk, network or datastore slows some calls and fails others; a
# crashed or unreachable service makes their requests fail and, less often, their
# readiness drop; errors pass up as errors. Coarse shares written from those rules, not
# fitted to data: the simulator draws symptoms from a table of its own
# (``simulate.SYMPTOMS_BY_FAULT``); with that table instead of this one, consolidation's
# storm ARI mean over seeds 1-20 would be 0.894 rather than 0.890.
_SLOWS_CALLERS = {"latency": 0.6, "errors": 0.3, "availability": 0.1}
_SLOWS_OR_FAILS_CALLERS = {"latency": 0.45, "errors": 0.45, "availability": 0.1}
SYMPTOMS_OF_FAULT: dict[str, dict[str, float]] = {
    **dict.fromkeys(("cpu", "memory", "queue"), _SLOWS_CALLERS),
    **dict.fromkeys(("disk", "network", "datastore"), _SLOWS_OR_FAILS_CALLERS),
    "availability": {"errors": 0.6, "availability": 0.3, "latency": 0.1},
    "errors": {"errors": 0.7, "latency": 0.2, "availability": 0.1},
    "latency": {"latency": 0.8, "errors": 0.15, "availability": 0.05},
}
# A fault of unknown kind (family ``other``): no symptom is much likelier than another.
_ANY_FAULT = {"latency": 0.4, "errors": 0.4, "availability": 0.2}


@lru_cache(maxsize=1024)
def symptom_fit(cause_family: str, symptom_family: str) -> float:
    """The log-share of callers of a service with a ``cause_family`` fault that report a
    ``symptom_family`` alert (:data:`SYMPTOMS_OF_FAULT`), at most 0. A symptom family
    outside the table (``other``) fits every fault alike: 0."""
    if symptom_family not in _ANY_FAULT:
        return 0.0
    return math.log(SYMPTOMS_OF_FAULT.get(cause_family, _ANY_FAULT)[symptom_family])


@lru_cache(maxsize=64)
def best_symptom_fit(symptom_family: str) -> float:
    """The highest :func:`symptom_fit` any fault gives ``symptom_family``."""
    causes = [*SYMPTOMS_OF_FAULT, UNKNOWN_FAMILY]
    return max(symptom_fit(cause, symptom_family) for cause in causes)


@lru_cache(maxsize=65_536)
def can_be_symptom(alert_name: str) -> bool:
    """Whether this alert may be a symptom of a failing dependency (latency, errors,
    readiness) rather than necessarily a fault of its own service (CPU, disk, crash)."""
    if alert_family(alert_name) not in SYMPTOM_FAMILIES:
        return False
    return not (set(name_tokens(alert_name)) & _LOCAL_FAULT_WORDS)


# Words of alerts a service raises about the services it calls: an Envoy sidecar's
# "upstream" clusters, a proxy's "backends" (real rule catalogues: "Envoy high cluster
# upstream connection failures", "HAProxy backend connection errors").
_DEPENDENCY_WORDS = frozenset({"upstream", "upstreams", "backend", "backends"})


@lru_cache(maxsize=65_536)
def reports_dependency(alert_name: str) -> bool:
    """Whether this symptom reports on the services its service calls rather than on
    the service itself: a fault below explains it better than one of its own service."""
    return can_be_symptom(alert_name) and bool(set(name_tokens(alert_name)) & _DEPENDENCY_WORDS)


@lru_cache(maxsize=256)
def symptom_types_for(kind: str, family: str) -> tuple[AlertType, ...]:
    return tuple(a for a in alert_types_for(kind, family) if can_be_symptom(a.name))


@lru_cache(maxsize=256)
def alert_types_for(kind: str, family: str) -> tuple[AlertType, ...]:
    """Catalogue entries of one family that fire on a node of this kind."""
    return tuple(a for a in CATALOGUE if a.family == family and kind in a.kinds)
