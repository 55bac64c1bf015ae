"""The estate's propagation lag, learned from history without labels."""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from alertclf.consolidate import CallerIndex
from alertclf.flows import with_model_timing
from alertclf.io.alerts import normalize_alerts
from alertclf.mapping import enrich_alerts
from alertclf.pipeline import GraphContext, learn_timing
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate
from alertclf.timing import estimate_propagation_lag, with_learned_lag
from alertclf.tracking import LoadedModel

SETTINGS = Settings()


def simulated(
    hop_delay: tuple[float, float], seed: int = 1, scenario: str = "storm", days: float = 2
):
    sim = simulate(
        SimulationConfig(seed=seed, days=days, scenario=scenario, hop_delay_minutes=hop_delay)
    )
    alerts, _ = normalize_alerts(sim.alerts.astype(str), SETTINGS, "simulated.csv")
    return alerts, GraphContext.build(sim.graph, SETTINGS)


@pytest.mark.parametrize(
    ("hop_delay", "low", "high"),
    # Callers alert 0.5-3 minutes after their dependency (the simulator's default), or
    # 2-6 minutes (rules with `for:` clauses of minutes): the upper quartile of the
    # propagation is 2.4 and 5 minutes.
    [((0.5, 3.0), 1.5, 3.0), ((2.0, 6.0), 4.0, 6.0)],
)
def test_the_lag_follows_how_long_callers_take_to_alert(hop_delay, low, high) -> None:
    for seed in (1, 2):
        alerts, context = simulated(hop_delay, seed)
        mapped = enrich_alerts(alerts, context.graph, SETTINGS, context.mapper)
        lag = estimate_propagation_lag(mapped, context.index, 15)
        assert low <= lag.minutes <= high, (seed, lag)
        # In a storm most lags behind a dependency are propagation, not chance.
        assert lag.samples >= 50 and lag.excess > 0.4 * lag.samples
        # Row order is not information.
        shuffled = mapped.sample(frac=1.0, random_state=seed)
        assert estimate_propagation_lag(shuffled, context.index, 15) == lag


def test_alerts_that_do_not_follow_the_graph_teach_no_lag() -> None:
    # Background only: alerts at random times on random services. Their lags behind
    # their dependencies are what chance gives, whatever the graph.
    graph = nx.relabel_nodes(
        nx.gnp_random_graph(80, 0.05, seed=3, directed=True), lambda i: f"svc-{i}"
    )
    rng = np.random.default_rng(3)
    n = 3000
    alerts = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2026-01-05", tz="UTC")
            + pd.to_timedelta(rng.uniform(0, 2 * 86_400, n), unit="s"),
            "service": rng.choice(sorted(graph.nodes), n),
            "alert_name": rng.choice(["HighRequestLatency", "HighErrorRate", "HighCPUUsage"], n),
        }
    )
    alerts["mapped_service"] = alerts["service"]
    lag = estimate_propagation_lag(alerts, CallerIndex(graph, 4), 15)
    assert lag.minutes is None
    assert lag.samples > 500  # plenty of lags, none of them propagation


@pytest.mark.parametrize("seed", [3, 7])
def test_half_a_calm_day_is_enough_to_learn_a_slow_lag(seed) -> None:
    # Twelve calm hours (69-199 alerts) hold 6-7 series onsets with trouble on their
    # path, none of them there by chance: enough to tell 3-8 minutes a hop from the
    # 2-minute default (the first quarter of a two-day history is what quality.py trains
    # on; with this lag the slow calm runs' ARI mean rose 0.913 -> 0.958).
    alerts, context = simulated((3.0, 8.0), seed, scenario="calm", days=0.5)
    settings, lag = learn_timing(alerts, context, SETTINGS)
    assert lag.samples < 10
    assert 5.5 <= lag.minutes <= 8.0
    assert settings.hop_lag_minutes == lag.minutes


def test_a_short_history_teaches_no_lag_and_the_default_stays() -> None:
    alerts, context = simulated((0.5, 3.0))
    alerts = alerts.sort_values("timestamp").head(80)  # the first minutes of the history
    settings, lag = learn_timing(alerts, context, SETTINGS)
    assert lag.minutes is None and lag.samples < 5
    assert settings.propagation_lag_minutes is None  # consolidation's default applies
    empty = estimate_propagation_lag(alerts.iloc[:0], context.index, 15)
    assert empty.minutes is None and empty.samples == 0


def test_learn_timing_sets_the_lag_unless_one_is_configured() -> None:
    alerts, context = simulated((2.0, 6.0))
    learned, lag = learn_timing(alerts, context, SETTINGS)
    assert learned.propagation_lag_minutes == lag.minutes is not None
    configured = Settings(propagation_lag_minutes=7)
    kept, lag = learn_timing(alerts, context, configured)
    assert kept is configured and lag.minutes == 7


def test_a_models_lag_applies_unless_configured_and_a_bad_one_is_ignored(caplog) -> None:
    def model(lag: object) -> LoadedModel:
        return LoadedModel("m", "1", "production", None, {}, {"propagation_lag_minutes": lag})

    assert with_model_timing(SETTINGS, model(3.5)).propagation_lag_minutes == 3.5
    assert with_model_timing(SETTINGS, model(None)).propagation_lag_minutes is None
    assert with_model_timing(Settings(propagation_lag_minutes=1), model(3.5)) == Settings(
        propagation_lag_minutes=1
    )
    with caplog.at_level(logging.WARNING, logger="alertclf.timing"):
        assert with_learned_lag(SETTINGS, "soon").propagation_lag_minutes is None
        assert with_learned_lag(SETTINGS, -2).propagation_lag_minutes is None
    assert "ignoring a learned propagation lag of 'soon'" in caplog.text
    with pytest.raises(ValueError, match="propagation_lag_minutes"):
        Settings(propagation_lag_minutes=0)


def test_the_simulators_timing_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="hop_delay_minutes"):
        SimulationConfig(hop_delay_minutes=(3.0, 1.0))
    with pytest.raises(ValueError, match="root_delay_minutes"):
        SimulationConfig(root_delay_minutes=(-1.0, 1.0))
