"""The ``alertclf`` command: a thin shell that parses, validates and calls the flows.

Every option is type-checked here, because ``mlflow run`` passes MLproject parameters
through unchecked. Known failures (bad input files, bad settings) end with one line on
stderr and exit status 2; nothing is hidden behind a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alertclf import __version__
from alertclf.errors import AlertclfError

logger = logging.getLogger("alertclf")

EXIT_USAGE = 2
EXIT_FAILURE = 1


class CommandError(AlertclfError):
    """A failure the user can act on; its message is printed as is."""


# --- argument types: ill-typed values are refused by argparse with the option's name ----
def positive_int(text: str) -> int:
    value = _parse(int, text, "a whole number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _parse(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _parse(float, text, "a number")
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def share(text: str) -> float:
    value = _parse(float, text, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def optional_text(text: str) -> str | None:
    """MLproject passes unset optional parameters as empty strings."""
    return text if text.strip() else None


def blank_or(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """``kind``, except that an empty value (an unset MLproject parameter) means None."""

    def parse(text: str) -> Any:
        return None if not text.strip() else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def one_of(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise argparse.ArgumentTypeError(
                f"invalid choice {text!r} (choose from {', '.join(allowed)})"
            )
        return text

    parse.__name__ = "choice"
    return parse


def _parse(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


# --- parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertclf",
        description="Alert storms in, a short ranked list of incidents out.",
    )
    parser.add_argument("--version", action="version", version=f"alertclf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=optional_text, help="YAML file of settings")
    common.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable), e.g. --set time_window_minutes=10",
    )
    common.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )

    sim = sub.add_parser("simulate", parents=[common], help="write a realistic scenario")
    sim.add_argument("--out", required=True, type=Path, help="folder for the scenario files")
    sim.add_argument("--seed", type=non_negative_int, default=1)
    sim.add_argument("--days", type=positive_float, default=1.0)
    sim.add_argument("--scenario", choices=["calm", "mixed", "storm"], default="mixed")
    sim.add_argument("--services", type=positive_int, default=60, help="size of generated graph")
    sim.add_argument("--topology", type=optional_text, help="use this graph JSON instead")
    sim.add_argument("--incidents-per-day", type=positive_float)
    sim.add_argument("--storms-per-day", type=_non_negative_float)
    sim.add_argument("--noise-share", type=share, default=0.15)
    sim.add_argument("--replica-share", type=share, default=0.3)
    sim.add_argument("--name-variant-share", type=share, default=0.3)
    # Unset, the simulator's own defaults (0.5-3 and 0-1.5 minutes) apply.
    for flag, meaning in (
        ("--hop-delay", "minutes from a service's fault to its callers' alerts, per hop"),
        ("--root-delay", "minutes from a fault to the faulty service's own first alert "
         "(a resource rule with `for: 5m`: about 3 10)"),
    ):  # fmt: skip
        sim.add_argument(
            flag, nargs=2, type=_non_negative_float, metavar=("MIN", "MAX"), help=meaning
        )
    sim.add_argument("--start", default="2026-01-05T00:00:00Z", type=_timestamp_text)
    sim.set_defaults(handler=cmd_simulate)

    val = sub.add_parser("validate", parents=[common], help="check alert and graph inputs")
    val.add_argument("--alerts", required=True, help="CSV file, folder of CSVs or glob")
    val.add_argument("--graph", required=True, help="service graph JSON")
    val.add_argument("--out", type=optional_text, help="folder for rejected_alerts.csv")
    val.set_defaults(handler=cmd_validate)

    cls = sub.add_parser(
        "classify", parents=[common], help="classify the alerts new since last run"
    )
    _add_inputs(cls, "alerts")
    _add_stores(cls)
    cls.add_argument("--since", type=_optional_timestamp, help="take alerts from this time on")
    cls.add_argument("--until", type=_optional_timestamp, help="take alerts before this time")
    cls.add_argument("--late-arrival-minutes", type=blank_or(non_negative_int))
    cls.add_argument(
        "--no-bootstrap",
        action="store_true",
        help="fail instead of training a first model when the registry has none",
    )
    cls.add_argument("--top", type=non_negative_int, default=10, help="incidents to print")
    _add_engine(cls)
    cls.set_defaults(handler=cmd_classify)

    ret = sub.add_parser("retrain", parents=[common], help="train, register, maybe promote")
    _add_inputs(ret, "history")
    ret.add_argument("--models", type=optional_text, default="data/models", help=_MODELS_HELP)
    ret.add_argument(
        "--algorithm",
        type=blank_or(one_of("kmeans", "dbscan", "agglomerative", "hdbscan", "auto")),
        help="kmeans | dbscan | agglomerative | hdbscan | auto (all four, best kept)",
    )
    ret.add_argument("--promotion-threshold", type=blank_or(_non_negative_float))
    ret.add_argument("--history-days", type=blank_or(positive_int))
    ret.add_argument("--holdout-fraction", type=blank_or(_open_share))
    ret.set_defaults(handler=cmd_retrain)

    rep = sub.add_parser("replay", parents=[common], help="backtest history as batches")
    _add_inputs(rep, "alerts")
    _add_stores(rep)
    rep.add_argument("--batch-minutes", type=positive_float, default=15.0)
    rep.add_argument(
        "--train-fraction",
        type=_open_share,
        default=0.25,
        help="without a production model: train on this first share",
    )
    rep.add_argument(
        "--no-registry",
        action="store_true",
        help="always train in-process, never load the production model",
    )
    _add_engine(rep)
    rep.set_defaults(handler=cmd_replay)

    ev = sub.add_parser("evaluate", parents=[common], help="score results against ground truth")
    ev.add_argument("--results", required=True, type=Path, help="a results/{run_id} folder")
    ev.add_argument("--truth", required=True, type=Path, help="truth.csv of a simulation")
    ev.add_argument("--graph", type=optional_text, help="graph JSON, for mapping accuracy")
    ev.add_argument("--json", type=optional_text, help="also write the metrics here")
    ev.set_defaults(handler=cmd_evaluate)

    pro = sub.add_parser("promote", parents=[common], help="promote or reject a model version")
    pro.add_argument("--version", required=True, type=positive_int)
    pro.add_argument("--reject", action="store_true")
    pro.add_argument("--reason", type=optional_text)
    pro.add_argument("--models", type=optional_text, default="data/models", help=_MODELS_HELP)
    pro.set_defaults(handler=cmd_promote)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="the scheduler: classify every N minutes, retrain weekly (or --run-once)",
    )
    _add_inputs(run, "alerts")
    run.add_argument(
        "--history",
        type=optional_text,
        help="where retrain reads history (default: the same location as --alerts)",
    )
    _add_stores(run)
    when = run.add_mutually_exclusive_group()
    when.add_argument(
        "--run-once",
        action="store_true",
        help="classify once (training a first model if the registry has none) and exit",
    )
    when.add_argument(
        "--interval",
        type=positive_float,
        metavar="MINUTES",
        help="classify every N minutes (default 15)",
    )
    run.add_argument("--no-retraining", action="store_true", help="never run the weekly retrain")
    run.add_argument(
        "--retrain-day",
        type=_weekday,
        help="weekday of the weekly retrain (default monday)",
    )
    run.add_argument(
        "--retrain-time", type=_hhmm, help="HH:MM local time of the weekly retrain (default 07:00)"
    )
    run.add_argument(
        "--job-timeout",
        type=positive_float,
        metavar="MINUTES",
        help="a job still running after this long (default 30) is killed, recorded as timeout",
    )
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run the flows in this process instead of `mlflow run` (faster; no hard timeout)",
    )
    run.add_argument(
        "--project",
        type=optional_text,
        help="the alertclf MLproject folder for `mlflow run` (default: this checkout)",
    )
    run.set_defaults(handler=cmd_run)

    sto = sub.add_parser(
        "store", parents=[common], help="prepare the local MLflow store; print its URI"
    )
    sto.add_argument("--models", type=optional_text, default="data/models", help=_MODELS_HELP)
    sto.set_defaults(handler=cmd_store)
    return parser


_MODELS_HELP = "folder of the local MLflow store (ignored when MLFLOW_TRACKING_URI is set)"


def _add_inputs(parser: argparse.ArgumentParser, alerts_name: str) -> None:
    parser.add_argument(
        f"--{alerts_name}", required=True, help="CSV file, folder, glob or azure:// URL"
    )
    parser.add_argument("--graph", required=True, help="service graph JSON (path or URL)")


def _add_stores(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=optional_text, default="results", help="results folder")
    parser.add_argument("--models", type=optional_text, default="data/models", help=_MODELS_HELP)


def _add_engine(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        type=blank_or(one_of("local", "spark")),
        help="local (pandas, this process) | spark (see README, Spark engine)",
    )
    parser.add_argument(
        "--spark-master",
        type=optional_text,
        help="with --engine spark: local[N], spark://host:7077, yarn, k8s://... (default local[2])",
    )


def _open_share(text: str) -> float:
    value = _parse(float, text, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a share strictly between 0 and 1, got {text!r}")
    return value


def _optional_timestamp(text: str) -> str | None:
    if not text.strip():
        return None
    return _timestamp_text(text)


def _non_negative_float(text: str) -> float:
    value = _parse(float, text, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(text: str) -> str:
    day = text.strip().lower()
    if day not in _WEEKDAYS:
        raise argparse.ArgumentTypeError(
            f"invalid weekday {text!r} (choose from {', '.join(_WEEKDAYS)})"
        )
    return day


def _hhmm(text: str) -> str:
    parts = text.strip().split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected HH:MM, got {text!r}")
    hours, minutes = int(parts[0]), int(parts[1])
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise argparse.ArgumentTypeError(f"expected HH:MM between 00:00 and 23:59, got {text!r}")
    return f"{hours:02d}:{minutes:02d}"


def _timestamp_text(text: str) -> str:
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except (TypeError, ValueError):
        stamp = pd.NaT
    if pd.isna(stamp):  # "NaT" and "nan" parse, to a time that no alert is after
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 timestamp, got {text!r}")
    return text


# --- settings from the command line -------------------------------------------------
def settings_from_args(args: argparse.Namespace, **flag_overrides: Any):
    from alertclf.settings import Settings, parse_assignment

    overrides: dict[str, Any] = {}
    for text in getattr(args, "assignments", []) or []:
        key, value = parse_assignment(text)
        overrides[key] = value
    overrides.update({k: v for k, v in flag_overrides.items() if v is not None})
    return Settings.build(getattr(args, "config", None), **overrides)


# --- commands ---------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from alertclf.simulate import SimulationConfig, describe, simulate, write_simulation

    settings = settings_from_args(args)
    graph = None
    if args.topology:
        from alertclf.graph import load_graph

        graph = load_graph(args.topology)
    try:
        config = SimulationConfig(
            seed=args.seed,
            days=args.days,
            scenario=args.scenario,
            n_services=args.services,
            incidents_per_day=args.incidents_per_day,
            storms_per_day=args.storms_per_day,
            noise_share=args.noise_share,
            replica_share=args.replica_share,
            name_variant_share=args.name_variant_share,
            dedup_window_minutes=settings.time_window_minutes,
            start=args.start,
            **{
                field: tuple(minutes)
                for field, minutes in (
                    ("hop_delay_minutes", args.hop_delay),
                    ("root_delay_minutes", args.root_delay),
                )
                if minutes is not None
            },
        )
    except ValueError as err:
        raise CommandError(f"simulate: {err}") from None
    sim = simulate(config, graph=graph)
    paths = write_simulation(sim, args.out)
    summary = describe(sim)
    print(f"Simulated {args.scenario!r} scenario (seed {args.seed}) into {args.out}/")
    for key, value in summary.items():
        print(f"  {key:<30} {value}")
    for key in ("alerts", "graph", "truth"):
        print(f"  wrote {paths[key]}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from alertclf.flows import _load_graph as load_graph  # local file or blob URL, as classify
    from alertclf.flows import _safe  # locations as they may be shown (no SAS token)
    from alertclf.graph import graph_features
    from alertclf.io.alerts import read_alerts, validate_summary
    from alertclf.mapping import enrich_alerts, mapping_statistics

    settings = settings_from_args(args)
    batch = read_alerts(args.alerts, settings)
    graph = load_graph(args.graph)
    features = graph_features(graph)
    enriched = enrich_alerts(batch.alerts, graph, settings)
    summary = validate_summary(batch)
    print(f"Alerts: {_safe(args.alerts)}")
    accepted, rejected = len(batch.alerts), len(batch.rejected)
    print(f"  rows read {batch.rows_read}, accepted {accepted}, rejected {rejected}")
    for reason, count in summary.get("reject_reasons", {}).items():
        print(f"    {count:>7}  {reason}")
    for note in batch.notes:
        print(f"  note: {note}")
    print(
        f"Graph: {_safe(args.graph)}: {graph.number_of_nodes()} services, "
        f"{graph.number_of_edges()} dependencies, {features.shape[1]} topology features"
    )
    for note in graph.graph.get("alertclf_notes", []):
        print(f"  note: {note}")
    stats = mapping_statistics(enriched)
    print("Mapping of alert services onto the graph:")
    print(_indent(stats.to_string(index=False)))
    if args.out:
        from alertclf.io.results import write_csv

        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(batch.rejected, out / "rejected_alerts.csv")
        write_csv(stats, out / "mapping_statistics.csv")
        (out / "validation_summary.json").write_text(
            json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8"
        )
        print(f"Wrote {out / 'rejected_alerts.csv'} and {out / 'mapping_statistics.csv'}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from alertclf.flows import classify

    settings = settings_from_args(
        args,
        late_arrival_minutes=args.late_arrival_minutes,
        engine=args.engine,
        spark_master=args.spark_master,
    )
    outcome = classify(
        settings,
        args.alerts,
        args.graph,
        args.output,
        args.models,
        args.since,
        args.until,
        bootstrap=not args.no_bootstrap,
    )
    print(
        f"Classified {outcome.rows_new} new alerts "
        f"(read {outcome.rows_read}: {outcome.rows_accepted} accepted, "
        f"{outcome.rows_rejected} rejected) with {settings.model_name} "
        f"v{outcome.model_version}" + (" (bootstrapped now)" if outcome.bootstrapped else "")
    )
    print_incidents(outcome.incidents, args.top)
    print(f"Results: {outcome.results_dir}")
    print(f"MLflow run: {outcome.mlflow_run_id} ({outcome.metadata['mlflow_tracking_uri']})")
    return 0


def print_incidents(incidents, top: int) -> None:
    if top <= 0:
        return
    if incidents is None or len(incidents) == 0:
        print("No incidents in this batch.")
        return
    columns = [
        "rank",
        "importance_score",
        "root_cause_service",
        "root_cause_confidence",
        "n_alerts",
        "n_unique",
        "max_severity",
        "name",
    ]
    view = incidents.head(top)[columns].rename(
        columns={
            "importance_score": "score",
            "root_cause_service": "root cause",
            "root_cause_confidence": "conf",
            "n_alerts": "alerts",
            "n_unique": "unique",
            "max_severity": "severity",
        }
    )
    print(f"Top {len(view)} of {len(incidents)} incidents:")
    print(_indent(view.to_string(index=False)))


def cmd_retrain(args: argparse.Namespace) -> int:
    from alertclf.flows import retrain

    settings = settings_from_args(
        args,
        algorithm=args.algorithm,
        promotion_threshold=args.promotion_threshold,
        history_days=args.history_days,
        holdout_fraction=args.holdout_fraction,
    )
    outcome = retrain(settings, args.history, args.graph, args.models)
    print(
        f"Trained {settings.model_name} v{outcome.version} "
        f"({outcome.metrics.get('n_clusters', float('nan')):.0f} clusters, "
        f"training silhouette {outcome.metrics.get('silhouette', float('nan')):.3f})"
    )
    print(
        ("PROMOTED to production: " if outcome.promoted else "Left at staging: ") + outcome.reason
    )
    print(f"MLflow run: {outcome.mlflow_run_id}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from alertclf.flows import replay

    settings = settings_from_args(args, engine=args.engine, spark_master=args.spark_master)
    outcome = replay(
        settings,
        args.alerts,
        args.graph,
        args.batch_minutes,
        args.output,
        args.models,
        args.train_fraction,
        use_registry=not args.no_registry,
    )
    print(
        f"Replayed {outcome.alerts} alerts in {outcome.batches} batches of "
        f"{args.batch_minutes:g} minutes in {outcome.seconds:.1f} s "
        f"({'model trained in-process' if outcome.trained_in_process else 'production model'})"
    )
    print(f"Results: {outcome.results_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alertclf.evaluation import format_table
    from alertclf.flows import evaluate_results

    scores = evaluate_results(args.results, args.truth, args.graph)
    print(format_table(scores))
    if args.json:
        from alertclf.io.results import write_json

        write_json(scores, args.json)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from alertclf.flows import promote

    settings = settings_from_args(args)
    tags = promote(settings, str(args.version), args.reject, args.reason, args.models)
    print(
        f"{settings.model_name} v{args.version}: {tags['decision.outcome']} "
        f"({tags['decision.reason']})"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The scheduler (see alertclf.scheduler); ``--run-once`` is one classify, then exit."""
    from alertclf.scheduler import Scheduler, SchedulerConfig

    settings = settings_from_args(
        args,
        interval_minutes=args.interval,
        retrain_day=args.retrain_day,
        retrain_time=args.retrain_time,
        job_timeout_minutes=args.job_timeout,
    )
    config = SchedulerConfig.from_settings(
        settings,
        alerts=args.alerts,
        graph=args.graph,
        history=args.history,
        output=args.output or "results",
        models=args.models or "data/models",
        enable_retraining=not args.no_retraining,
        in_process=args.in_process,
        project_dir=args.project,
    )
    scheduler = Scheduler(config)
    if args.run_once:
        mode = "in-process" if args.in_process else "mlflow run"
        print(f"alertclf {__version__}: one classify run ({mode}) into {scheduler.output}")
        result = scheduler.run_once()
        if result.ok:
            summary = result.summary
            print(f"classify: success in {result.duration_seconds:.1f} s")
            if "rows_new" in summary:  # in-process: the flow's outcome
                print(
                    f"  Classified {summary['rows_new']} new alerts with model "
                    f"v{summary['model_version']}"
                    + (" (bootstrapped now)" if summary["bootstrapped"] else "")
                )
            elif "classified" in summary:  # mlflow run: the line the job printed
                print(f"  {summary['classified']}")
            if result.results_dir:
                print(f"Results: {result.results_dir}")
            return 0
        print(
            f"alertclf run: classify {result.outcome} after {result.duration_seconds:.1f} s: "
            f"{result.error}" + (f" (log: {result.log})" if result.log else ""),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    scheduler.start()
    print("\n".join(scheduler.banner()), flush=True)
    scheduler.run(install_signal_handlers=True)
    print(f"alertclf scheduler stopped (status: {scheduler.status_path})", flush=True)
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    """Create the store and both experiments (artifacts under --models), so that runs that
    ``mlflow run`` creates land there too; print the URI to export."""
    from alertclf import tracking

    settings = settings_from_args(args)
    config = tracking.configure_tracking(args.models)
    for name in (settings.classify_experiment, settings.retrain_experiment):
        tracking.ensure_experiment(name, config)
    print(config.tracking_uri)
    return 0


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


# --- entry ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_handler(args.handler, args)


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except AlertclfError as err:
        print(f"alertclf {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"alertclf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
