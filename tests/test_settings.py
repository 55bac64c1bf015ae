"""One typed settings object: the seed's constants, YAML, command-line overrides, and
clear refusals."""

from __future__ import annotations

import pytest

from alertclf.cli import main
from alertclf.settings import Settings, SettingsError, describe_settings, parse_assignment


def test_defaults_are_the_seed_constants():
    s = Settings()
    assert s.time_window_minutes == 15
    assert s.min_match_score == 2
    assert s.min_clustering_samples == 10
    assert s.pca_variance_threshold == 0.95
    assert s.outlier_contamination == 0.05
    assert s.model_name == "alert-clustering"
    assert s.promotion_threshold == 0.05


def test_yaml_then_overrides(tmp_path):
    config = tmp_path / "alertclf.yaml"
    config.write_text(
        "time_window_minutes: 10\nalgorithm: dbscan\ncolumn_map: {Alertname: alert_name}\n"
    )
    s = Settings.build(config, algorithm="kmeans", promotion_threshold=None)
    assert s.time_window_minutes == 10
    assert s.algorithm == "kmeans"  # the command line wins over the file
    assert s.promotion_threshold == 0.05  # None means "not given"
    assert s.column_map == {"alertname": "alert_name"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"time_window_mins": 5},
            "unknown option 'time_window_mins' (did you mean 'time_window_minutes'?)",
        ),
        ({"time_window_minutes": 0}, "time_window_minutes=0"),
        ({"time_window_minutes": "soon"}, "valid integer"),
        ({"algorithm": "fast"}, "allowed: kmeans | dbscan | agglomerative | hdbscan | auto"),
        ({"pca_variance_threshold": 1.5}, "<= 1"),
        ({"retrain_day": "funday"}, "monday"),
        ({"retrain_time": "7pm"}, "HH:MM"),
        ({"column_map": {"x": "nonsense"}}, "allowed targets"),
        ({"kmeans_k_min": 9, "kmeans_k_max": 3}, "must not exceed"),
    ],
)
def test_bad_values_are_refused_naming_the_option(values, expected):
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(values)
    assert expected in str(err.value)


def test_broken_yaml_and_non_mapping_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("time_window_minutes: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        Settings.build(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SettingsError, match="expected a mapping"):
        Settings.build(bad)
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.build(tmp_path / "missing.yaml")


def test_set_assignments_parse_yaml_values():
    assert parse_assignment("time_window_minutes=12") == ("time_window_minutes", 12)
    assert parse_assignment("column_map={startsAt: timestamp}") == (
        "column_map",
        {"startsAt": "timestamp"},
    )
    with pytest.raises(SettingsError, match="key=value"):
        parse_assignment("time_window_minutes")


def test_every_setting_is_described_and_logged_flat():
    names = {name for name, _, _ in describe_settings()}
    assert names == set(Settings.model_fields)
    params = Settings().as_params()
    assert set(params) == names and all(isinstance(v, str) for v in params.values())


def test_command_line_refuses_bad_settings_in_one_line(tmp_path, capsys):
    code = main(
        ["validate", "--alerts", "x.csv", "--graph", "g.json", "--set", "time_window_minutes=-3"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "time_window_minutes=-3" in err[0]
