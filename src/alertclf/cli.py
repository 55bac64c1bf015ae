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
    sim.add_argument("--start", default="2026-01-05T00:00:00Z", type=_timestamp_text)
    sim.set_defaults(handler=cmd_simulate)

    val = sub.add_parser("validate", parents=[common], help="check alert and graph inputs")
    val.add_argument("--alerts", required=True, help="CSV file, folder of CSVs or glob")
    val.add_argument("--graph", required=True, help="service graph JSON")
    val.add_argument("--out", type=optional_text, help="folder for rejected_alerts.csv")
    val.set_defaults(handler=cmd_validate)
    return parser


def _non_negative_float(text: str) -> float:
    value = _parse(float, text, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _timestamp_text(text: str) -> str:
    import pandas as pd

    try:
        pd.Timestamp(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 timestamp, got {text!r}") from None
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
    from alertclf.graph import graph_features, load_graph
    from alertclf.io.alerts import read_alerts, validate_summary
    from alertclf.mapping import enrich_alerts, mapping_statistics

    settings = settings_from_args(args)
    batch = read_alerts(args.alerts, settings)
    graph = load_graph(args.graph)
    features = graph_features(graph)
    enriched = enrich_alerts(batch.alerts, graph, settings)
    summary = validate_summary(batch)
    print(f"Alerts: {args.alerts}")
    print(
        f"  rows read {batch.rows_read}, accepted {len(batch.alerts)}, rejected {len(batch.rejected)}"
    )
    for reason, count in summary.get("reject_reasons", {}).items():
        print(f"    {count:>7}  {reason}")
    for note in batch.notes:
        print(f"  note: {note}")
    print(
        f"Graph: {args.graph}: {graph.number_of_nodes()} services, "
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
