"""How well a symptom fits a kind of fault (consolidation's tie-break between incidents)."""

from __future__ import annotations

import math

import pytest

from alertclf.catalogue import (
    FAMILIES,
    SYMPTOM_FAMILIES,
    SYMPTOMS_OF_FAULT,
    best_symptom_fit,
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
