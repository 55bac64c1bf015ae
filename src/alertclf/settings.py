"""One typed settings object for every stage, flow and command.

Defaults live here and nowhere else. A YAML file (``--config``) and command-line
flags override them; every value is validated on the way in, and a bad one is
refused with a message that names the option and what it accepts.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alertclf.errors import AlertclfError

Algorithm = Literal["kmeans", "dbscan", "agglomerative", "hdbscan", "auto"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
Engine = Literal["local", "spark"]


class SettingsError(AlertclfError, ValueError):
    """A setting is unknown, ill-typed or out of range; the message says which and why."""


# Until an estate's propagation lag is learned (see alertclf.timing): the simulator's
# per-hop lags are 0.5-3 minutes, and 2 minutes keeps every bound consolidation had
# before the lag was learned.
DEFAULT_PROPAGATION_LAG_MINUTES = 2.0


class Settings(BaseModel):
    """Every tunable of alertclf, with the seed's constants as defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- the seed's constants -------------------------------------------------------
    time_window_minutes: int = Field(
        15,
        ge=1,
        le=1440,
        description="Window that links alerts into one incident and one dedup episode.",
    )
    min_match_score: float = Field(
        2.0,
        ge=0,
        le=100,
        description="Least fuzzy token score to map an alert service onto a graph node.",
    )
    min_clustering_samples: int = Field(
        10, ge=2, le=1_000_000, description="Fewest alerts a model may be trained on."
    )
    pca_variance_threshold: float = Field(
        0.95, gt=0, le=1, description="Share of variance PCA keeps."
    )
    outlier_contamination: float = Field(
        0.05, gt=0, le=0.5, description="Expected outlier share for IsolationForest."
    )

    # --- ingestion ------------------------------------------------------------------
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Extra input column names -> contract names, e.g. {alertname: alert_name}.",
    )
    max_field_chars: int = Field(
        10_000, ge=64, le=10_000_000, description="Longer text fields are truncated (and counted)."
    )

    # --- consolidation --------------------------------------------------------------
    group_max_hops: int = Field(
        4,
        ge=0,
        le=50,
        description="Farthest caller (in dependency hops) a symptom may be from its root.",
    )
    group_max_span_minutes: int = Field(
        240, ge=1, le=10_080, description="Longest an incident group may keep growing."
    )
    # Consolidation alone, true mapping, storm ARI mean over 60 runs (seeds 1-20, 3
    # topologies): 0 -> 0.875, 1 -> 0.883, 2 -> 0.890. Where symptom kinds do not depend
    # on the fault (the simulator with one symptom table for every fault): 0.869, 0.865,
    # 0.855. Set 0 when your callers' alerts say nothing about what failed below them.
    symptom_fit_minutes: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "Recency (minutes) a symptom's kind is worth per e-fold of fit with one "
            "incident's kind of fault over another's; 0 ignores the kind."
        ),
    )

    # How long a fault takes to show on its callers' alerts (per hop: propagation, rule
    # evaluation, ``for:`` clauses). Unset, retrain learns it from the history
    # (alertclf.timing) and the model carries it to classify.
    propagation_lag_minutes: float | None = Field(
        None,
        gt=0,
        le=120,
        description=(
            "Typical minutes from a service's trouble to its callers' symptom alerts; "
            f"unset: learned from history at retrain ({DEFAULT_PROPAGATION_LAG_MINUTES:g} "
            "until a model has learned it)."
        ),
    )

    # How late a failing service's own first alert can come after its callers' first
    # symptoms (a resource rule with ``for: 5m`` under callers that alert at once).
    # Unset, retrain learns it where causes come late (alertclf.timing); re-rooting a
    # group of symptoms then waits that long for its cause.
    cause_lateness_minutes: float | None = Field(
        None,
        gt=0,
        le=120,
        description=(
            "Minutes a service's own fault alert may come after its callers' first "
            "symptoms; unset: learned from history at retrain where causes come late, "
            "else none."
        ),
    )

    # The share of symptom series that stop more than a firing before their group's root
    # does (alertclf.regroup). Unset, retrain learns it from the history; where it is
    # under 5% (symptoms end with their cause), a series that stops while its root goes
    # on is split off the group.
    early_end_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Share of symptom series that stop more than a firing before their group's "
            "root; unset: learned from history at retrain. Under 0.05, a series that "
            "stops while its root goes on is split off its group."
        ),
    )

    # Which alert families showed on symptom series under each family of their group's
    # root, counted in the history (alertclf.regroup.symptom_families). Unset, retrain
    # learns it; where early_end_share is not learned, a series that stops while its
    # root goes on is split off when its family never showed under the root's.
    symptom_families: dict[str, dict[str, int]] | None = Field(
        None,
        description=(
            "Symptom series per alert family under each family of their group's root "
            "({root family: {family: series}}); unset: learned from history at retrain. "
            "Where early_end_share is unlearned, a series that stops while its root goes "
            "on is split off its group when its family never showed under the root's "
            "(at least 5 symptom series each)."
        ),
    )

    @property
    def hop_lag_minutes(self) -> float:
        """The propagation lag consolidation works with: the configured or learned one,
        else the default."""
        return self.propagation_lag_minutes or DEFAULT_PROPAGATION_LAG_MINUTES

    # --- clustering -----------------------------------------------------------------
    algorithm: Algorithm = Field("auto", description="Clustering algorithm; auto tries all four.")
    kmeans_k_min: int = Field(2, ge=2, le=500)
    kmeans_k_max: int = Field(24, ge=2, le=500)
    max_training_samples: int = Field(
        50_000, ge=100, le=10_000_000, description="Training alerts beyond this are sampled."
    )
    silhouette_sample_size: int = Field(
        10_000, ge=100, le=1_000_000, description="Silhouette is computed on a sample this big."
    )
    max_noise_share: float = Field(
        0.3, ge=0, le=1, description="auto rejects candidates that leave more alerts unclustered."
    )
    max_cluster_share: float = Field(
        0.6, gt=0, le=1, description="auto rejects candidates with one cluster bigger than this."
    )
    random_state: int = Field(42, ge=0, le=2**32 - 1)

    # --- registry and promotion -----------------------------------------------------
    model_name: str = Field("alert-clustering", min_length=1, max_length=200)
    promotion_threshold: float = Field(
        0.05, ge=0, le=10, description="Candidate must beat production by more than this share."
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="Most recent share of history held out to compare models."
    )
    classify_experiment: str = Field("alertclf-classify", min_length=1)
    retrain_experiment: str = Field("alertclf-retrain", min_length=1)

    # --- incremental batches --------------------------------------------------------
    late_arrival_minutes: int = Field(
        30,
        ge=0,
        le=10_080,
        description="Alerts this much older than the watermark are still taken.",
    )
    ledger_days: int = Field(
        7,
        ge=1,
        le=3650,
        description="Days back from the watermark that the ids of processed alerts are "
        "remembered: an alert arriving later than late_arrival_minutes but within them is "
        "rejected as late (not silently skipped); older ones are taken as processed before.",
    )
    history_days: int = Field(30, ge=1, le=3650, description="Days of history retrain reads.")

    # --- scheduling -----------------------------------------------------------------
    interval_minutes: float = Field(15, gt=0, le=1440)
    retrain_day: Weekday = "monday"
    retrain_time: str = Field("07:00", description="HH:MM, local time of the scheduler host.")
    job_timeout_minutes: float = Field(30, gt=0, le=1440)

    # --- execution ------------------------------------------------------------------
    engine: Engine = "local"
    spark_master: str = "local[2]"
    parallel_min_alerts: int = Field(
        200_000,
        ge=2,
        description="Batches this big have part of consolidation and of incident ranking done "
        "by a second, forked process (Linux, two cores); the results are the same.",
    )

    @field_validator("retrain_time")
    @classmethod
    def _check_hhmm(cls, value: str) -> str:
        parts = value.split(":")
        ok = len(parts) == 2 and all(p.isdigit() for p in parts)
        if not ok or not (0 <= int(parts[0]) <= 23 and 0 <= int(parts[1]) <= 59):
            raise ValueError(f"expected HH:MM between 00:00 and 23:59, got {value!r}")
        return f"{int(parts[0]):02d}:{int(parts[1]):02d}"

    @field_validator("column_map")
    @classmethod
    def _check_column_map(cls, value: dict[str, str]) -> dict[str, str]:
        from alertclf.contracts import INPUT_COLUMNS

        bad = {k: v for k, v in value.items() if v.lower() not in INPUT_COLUMNS}
        if bad:
            raise ValueError(
                f"targets {sorted(bad.values())} are not contract columns; "
                f"allowed targets: {', '.join(INPUT_COLUMNS)}"
            )
        return {k.strip().lower(): v.lower() for k, v in value.items()}

    def model_post_init(self, __context: Any) -> None:
        if self.kmeans_k_min > self.kmeans_k_max:
            raise ValueError(
                f"kmeans_k_min ({self.kmeans_k_min}) must not exceed "
                f"kmeans_k_max ({self.kmeans_k_max})"
            )

    # --- construction ---------------------------------------------------------------
    @classmethod
    def build(cls, config_file: str | Path | None = None, **overrides: Any) -> Settings:
        """Defaults, then the YAML file, then overrides (None means "not given")."""
        values: dict[str, Any] = {}
        if config_file:
            values.update(load_yaml(config_file))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(values, source=str(config_file) if config_file else "settings")

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "settings") -> Settings:
        unknown = [k for k in values if k not in cls.model_fields]
        if unknown:
            raise SettingsError(_unknown_message(unknown, source))
        try:
            return cls(**values)
        except ValidationError as err:
            raise SettingsError(_validation_message(err, source)) from None
        except ValueError as err:
            raise SettingsError(f"{source}: {err}") from None

    def with_overrides(self, **overrides: Any) -> Settings:
        values = self.model_dump()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return type(self).from_mapping(values)

    def as_params(self) -> dict[str, str]:
        """Flat string view for MLflow params (every setting, nothing secret lives here)."""
        return {k: str(v) for k, v in self.model_dump().items()}


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SettingsError(f"{path}: cannot read config file ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SettingsError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"{path}: expected a mapping of setting: value, got {type(data).__name__}"
        )
    return data


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from ``--set``; the value is read as YAML so numbers and lists work."""
    if "=" not in text:
        raise SettingsError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def describe_settings() -> list[tuple[str, str, str]]:
    """(name, default, description) for every setting, for docs and ``--help``."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        rows.append((name, repr(default), field.description or ""))
    return rows


def _unknown_message(unknown: list[str], source: str) -> str:
    names = list(Settings.model_fields)
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        parts.append(f"unknown option {key!r}{hint}")
    return f"{source}: " + "; ".join(parts) + f". Known options: {', '.join(names)}"


def _validation_message(err: ValidationError, source: str) -> str:
    lines = []
    for problem in err.errors():
        name = ".".join(str(p) for p in problem["loc"]) or "settings"
        given = problem.get("input")
        allowed = _allowed(name.split(".")[0])
        msg = problem["msg"]
        lines.append(f"{name}={given!r}: {msg}" + (f" (allowed: {allowed})" if allowed else ""))
    return f"{source}: invalid setting(s): " + "; ".join(lines)


def _allowed(name: str) -> str:
    field = Settings.model_fields.get(name)
    if field is None:
        return ""
    annotation = field.annotation
    args = getattr(annotation, "__args__", None)
    if getattr(annotation, "__origin__", None) is Literal and args:
        return " | ".join(str(a) for a in args)
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    kind = getattr(annotation, "__name__", str(annotation))
    return f"{kind} " + " and ".join(bounds) if bounds else kind
