"""Column names and vocabularies of the input and output contracts (DESIGN.md §2, §3, §6)."""

from __future__ import annotations

# --- input: alerts CSV ----------------------------------------------------------------
REQUIRED_COLUMNS: tuple[str, ...] = ("timestamp", "service", "alert_name")
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "severity",
    "status",
    "host",
    "namespace",
    "cluster",
    "environment",
    "description",
    "summary",
    "labels",
)
INPUT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# Other names for contract columns that monitoring tools use (matched case-insensitively).
# The settings' column_map adds to these.
DEFAULT_COLUMN_ALIASES: dict[str, str] = {
    "alertname": "alert_name",
    "alert": "alert_name",
    "name": "alert_name",
    "startsat": "timestamp",
    "starts_at": "timestamp",
    "time": "timestamp",
    "ts": "timestamp",
    "fired_at": "timestamp",
    "id": "alert_id",
    "fingerprint": "alert_id",
    "priority": "severity",
    "level": "severity",
    "state": "status",
    "instance": "host",
    "node": "host",
    "env": "environment",
    "message": "description",
}

# Normalised severities, most severe first; the ordinal is used as a feature and for ranking.
SEVERITIES: tuple[str, ...] = ("critical", "high", "warning", "low", "info", "unknown")
SEVERITY_ORDINAL: dict[str, int] = {
    "critical": 5,
    "high": 4,
    "warning": 3,
    "low": 2,
    "info": 1,
    "unknown": 0,
}
STATUSES: tuple[str, ...] = ("firing", "resolved")

# Columns of the canonical, validated alert frame that ingestion hands to the pipeline.
# `source_file` and `source_row` (1-based data row) trace every alert back to its input.
CANONICAL_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "timestamp",
    "service",
    "alert_name",
    "severity",
    "status",
    "host",
    "namespace",
    "cluster",
    "environment",
    "description",
    "labels",
    "source_file",
    "source_row",
)
REJECT_REASON = "reject_reason"

# --- mapping --------------------------------------------------------------------------
MAPPING_METHODS: tuple[str, ...] = ("exact", "normalized", "fuzzy", "unmapped")

# --- output: results/{run_id}/ --------------------------------------------------------
FINAL_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "timestamp",
    "service",
    "alert_name",
    "severity",
    "mapped_service",
    "mapping_method",
    "mapping_confidence",
    "group_id",
    "cluster_id",
    "cluster_name",
    "cluster_confidence",
    "is_outlier",
    "is_duplicate",
    "duplicate_of",
    "importance_score",
    "cluster_rank",
)
INCIDENT_COLUMNS: tuple[str, ...] = (
    "group_id",
    "first_seen",
    "last_seen",
    "n_alerts",
    "n_unique",
    "services",
    "root_cause_service",
    "root_cause_confidence",
    "max_severity",
    "importance_score",
    "rank",
)
RESULT_FILES: tuple[str, ...] = (
    "alert_consolidation_final.csv",
    "cluster_summary.csv",
    "ranked_clusters.csv",
    "incident_groups.csv",
    "group_revisions.csv",
    "deduplicated_alerts.csv",
    "alerts_by_cluster_detailed.csv",
    "clustering_statistics.json",
    "mapping_statistics.csv",
    "rejected_alerts.csv",
    "run_metadata.json",
)
# Views of alert_consolidation_final.csv (a subset and a reordering of its rows): written
# to the results folder for readers, but not copied into MLflow's artifact store, where
# they would double the bytes every run stores (1 GiB more per million alerts).
DERIVED_RESULT_FILES: tuple[str, ...] = (
    "deduplicated_alerts.csv",
    "alerts_by_cluster_detailed.csv",
)

# --- ground truth written by the simulator ---------------------------------------------
TRUTH_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "incident_id",
    "category",
    "is_duplicate",
    "is_root",
    "root_service",
    "true_service",
)
