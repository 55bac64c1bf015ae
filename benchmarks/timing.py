"""Grouping under other alert timings: what learning the estate's timing buys.

    python benchmarks/timing.py [--seeds 1 20] [--history full|quarter] [--out FILE]

Real estates differ in how fast alerts follow a fault: callers' rules with ``for:``
clauses fire minutes after their dependency's, and a resource rule (CPU, memory, disk)
with ``for: 5m`` fires minutes *after* the latency its callers report at once. For every
timing below x calm and storm x topology (the generated estate and, when
``../shared/datasets/topologies`` is present, online-boutique and train-ticket) x seed,
the simulator writes two days of alerts; consolidation alone groups them with the true
mapping, three ways:

- ``fixed``: the default timing (2 minutes a hop, causes alert first);
- ``lag``: the propagation lag learned from the history (:mod:`alertclf.timing`);
- ``lag+lateness``: that and the cause lateness learned from the same history;
- ``+regroup``: that, then each symptom series quiet for a window moved to the trouble it
  ended with, and the series that ended apart from their group's root split off
  (:mod:`alertclf.regroup`; the history is one batch, so the series of the last window
  stay where they went).

``--history full`` learns from the whole two days, ``quarter`` from the first 12 hours
(what ``quality.py`` trains on). Scores are on the last 75% of each history: group ARI
against the incidents, and the share of incidents whose root cause is right (the group
holding most of an incident names its root service).

Prints one Markdown table (mean / worst over seeds and topologies) and writes it to
``benchmarks/timing.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

import pandas as pd
from common import machine, markdown_table

from alertclf.consolidate import consolidate
from alertclf.evaluation import grouping_scores, root_cause_accuracy
from alertclf.flows import split_holdout
from alertclf.graph import load_graph
from alertclf.io.alerts import normalize_alerts
from alertclf.mapping import enrich_alerts
from alertclf.pipeline import GraphContext, learn_timing
from alertclf.ranking import root_causes
from alertclf.regroup import early_end_share, regroup, symptom_families
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate
from alertclf.timing import with_learned_families, with_learned_share

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "topologies"
# name -> (minutes from a service's fault to its callers' alerts, per hop;
#          minutes from the fault to the faulty service's own first alert)
TIMINGS = {
    "usual (the benchmark's)": ((0.5, 3.0), (0.0, 1.5)),
    "fast propagation": ((0.1, 1.0), (0.0, 1.5)),
    "slow callers (for: on symptoms)": ((3.0, 8.0), (0.0, 1.5)),
    "cause 0-5 min late": ((0.5, 3.0), (0.0, 5.0)),
    "cause 2-5 min late": ((0.5, 3.0), (2.0, 5.0)),
    "cause 3-10 min late (for: 5m on resources)": ((0.5, 3.0), (3.0, 10.0)),
}
WAYS = ("fixed", "lag", "lag+lateness", "+regroup")


def one_run(job: tuple[str, str, str, int, str]) -> list[dict]:
    timing, scenario, topology, seed, history = job
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    hop, root = TIMINGS[timing]
    graph = None if topology == "generated" else load_graph(SHARED / f"{topology}.json")
    config = SimulationConfig(
        seed=seed, days=2, scenario=scenario, hop_delay_minutes=hop, root_delay_minutes=root
    )
    sim = simulate(config, graph=graph)
    settings = Settings()
    alerts, _ = normalize_alerts(sim.alerts.astype(str), settings, "simulated.csv")
    context = GraphContext.build(sim.graph, settings)
    learn_from = alerts if history == "full" else split_holdout(alerts, 0.75)[0]
    learned, _ = learn_timing(learn_from, context, settings)
    ways = {
        "fixed": settings,
        "lag": learned.model_copy(update={"cause_lateness_minutes": None}),
        "lag+lateness": learned,
        "+regroup": learned,
    }
    mapped = enrich_alerts(alerts, context.graph, settings, context.mapper)
    truth = sim.truth[["alert_id", "incident_id", "root_service", "is_noise"]]
    rows = []
    for way, used in ways.items():
        grouped = consolidate(mapped, context.graph, used, None, context.index)
        group_ids, groups = grouped.group_ids, grouped.groups
        if way == "+regroup":
            placed = mapped.assign(group_id=group_ids, group_reason=grouped.reasons)
            moved = _regrouped(placed, grouped, context, used)
            # As retrain does: whether symptoms end with their cause, and which families
            # they show under each family of root, from this grouping.
            history = placed.assign(group_id=moved.group_ids)
            every = pd.concat([groups, moved.groups], ignore_index=True)
            share = early_end_share(history, every, context.index, used)
            relearned = with_learned_families(
                with_learned_share(used, share), symptom_families(history, every)
            )
            if relearned != used:
                moved = _regrouped(placed, grouped, context, relearned)
            group_ids = moved.group_ids
            groups = pd.concat([groups, moved.groups], ignore_index=True)
        scored = split_holdout(mapped.assign(group_id=group_ids), 0.75)[1]
        scored = scored.merge(truth, on="alert_id")
        ari = grouping_scores(
            scored["incident_id"].astype(str).to_numpy(), scored["group_id"].to_numpy()
        )["ari"]
        roots = root_causes(
            groups,
            context.index,
            used.time_window_minutes,
            used.cause_lateness_minutes,
        )
        rows.append(
            {
                "timing": timing,
                "scenario": scenario,
                "way": way,
                "ari": ari,
                "root_cause": root_cause_accuracy(scored, roots),
                "lag": used.propagation_lag_minutes,
                "lateness": used.cause_lateness_minutes,
            }
        )
    return rows


def summary(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (timing, scenario), frame in results.groupby(["timing", "scenario"], sort=False):
        row = {"timing": timing, "scenario": scenario}
        for way in WAYS:
            part = frame[frame["way"] == way]
            row[f"ARI {way}"] = f"{part['ari'].mean():.3f} / {part['ari'].min():.3f}"
        for way in ("fixed", "lag+lateness", "+regroup"):
            part = frame[frame["way"] == way]
            row[f"root cause {way}"] = part["root_cause"].mean()
        learned = frame[frame["way"] == "lag+lateness"]["lateness"]
        row["lateness learned"] = f"{learned.notna().mean():.0%}, median {learned.median():g}"
        rows.append(row)
    return pd.DataFrame(rows)


def _regrouped(placed: pd.DataFrame, grouped, context: GraphContext, settings: Settings):
    """The whole history regrouped as one batch (alertclf.regroup)."""
    return regroup(
        placed, grouped.times, grouped.keys, grouped.ids, grouped.groups,
        context.index, settings, None, int(grouped.times.max()),
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs=2, type=int, default=(1, 20), metavar=("FIRST", "LAST"))
    parser.add_argument("--history", choices=("full", "quarter"), default="full")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("timing.md"))
    args = parser.parse_args()
    topologies = ["generated"]
    if SHARED.is_dir():
        topologies += ["online-boutique", "train-ticket"]
    else:
        print(f"{SHARED} is absent: the generated topology only")
    seeds = range(args.seeds[0], args.seeds[1] + 1)
    jobs = [
        (timing, scenario, topology, seed, args.history)
        for timing in TIMINGS
        for scenario in ("calm", "storm")
        for topology in topologies
        for seed in seeds
    ]
    started = time.perf_counter()
    with Pool(2) as pool:
        results = pd.DataFrame([row for rows in pool.map(one_run, jobs) for row in rows])
    table = markdown_table(summary(results))
    seconds = time.perf_counter() - started
    text = (
        "# Grouping under other alert timings\n\n"
        f"`python benchmarks/timing.py --seeds {args.seeds[0]} {args.seeds[1]} "
        f"--history {args.history}` on {machine()}; topologies {', '.join(topologies)}; "
        f"{len(jobs)} two-day histories, {seconds:.0f} s. Consolidation alone, true mapping; "
        "ARI mean / worst and root cause right (mean) on the last 75% of each history; "
        "timing learned from the "
        + ("whole history" if args.history == "full" else "first 12 hours")
        + ".\n\n"
        + table
        + "\n"
    )
    print(text)
    args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
