"""How well a symptom fits a kind of fault (consolidation's tie-break between incidents), and
which symptoms report on the services their service calls."""

from __future__ import annotations

import math

import pytest

from alertclf.catalogue import (
    FAMILIES,
    SYMPTOM_FAMILIES,
    SYMPTOMS_OF_FAULT,
    best_symptom_fit,
    reports_dependency,
    symptom_fit,
)

SYMPTOMS = sorted(SYMPTOM_FAMILIES - {"other"})  # the kinds the table gives shares to


@pytest.mark.parametrize("cause", [*FAMILIES, "", "SomethingNew"])
def test_every_fault_gives_each_symptom_a_share_and_the_shares_sum_to_one(cause: str) -> None:
    shares = [math.exp(symptom_fit(cause, symptom)) for symptom in SYMPTOMS]
    assert all(0 < share < 1 for share in shares)
    assert sum(shares) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("symptom", "likelier", "less_likely"),
    [
        ("latency", "cpu", "availability"),  # a saturated CPU slows callers, a crash fails them
        ("errors", "availability", "cpu"),
        ("errors", "errors", "memory"),
        ("availability", "availability", "queue"),
    ],
)
def test_symptoms_fit_the_faults_that_cause_them(symptom, likelier, less_likely) -> None:
    assert symptom_fit(likelier, symptom) > symptom_fit(less_likely, symptom)


def test_a_symptom_outside_the_table_fits_every_fault_alike() -> None:
    assert {symptom_fit(cause, "other") for cause in FAMILIES} == {0.0}
    assert best_symptom_fit("other") == 0.0


@pytest.mark.parametrize("symptom", [*SYMPTOMS, "other"])
def test_best_fit_bounds_every_fault(symptom: str) -> None:
    fits = [symptom_fit(cause, symptom) for cause in [*SYMPTOMS_OF_FAULT, "other", ""]]
    assert best_symptom_fit(symptom) == max(fits)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("UpstreamConnectFailures", True),
        ("UpstreamResponseTimeHigh", True),
        ("Envoy high cluster upstream connection failures", True),  # real catalogue names
        ("HAProxy backend connection errors", True),
        ("HAProxy backend down", False),  # "down": the service's own fault words win
        ("Envoy high downstream HTTP 5xx error rate", False),  # its callers, not below
        ("HighErrorRate", False),
        ("HostHighCpuLoad", False),  # not a symptom at all
    ],
)
def test_symptoms_about_the_services_called_are_told_by_their_words(
    name: str, expected: bool
) -> None:
    assert reports_dependency(name) is expected
