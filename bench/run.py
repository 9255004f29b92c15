"""Run every benchmark and print the figures as markdown (``make bench``).

    python -m bench.run            # full sizes (a few minutes)
    python -m bench.run --quick    # small sizes, to check the benchmarks work

Results also go to bench/results/latest.json. Timings on shared machines
are noisy: compare the ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=["ledger", "segments", "flow"], action="append")
    args = parser.parse_args()
    from bench import flow_throughput, ledger_writes, segment_queries
    from bench.fixtures import postgres_available

    dialects = ["sqlite"] + (["postgresql"] if postgres_available() else [])
    only = set(args.only or ["ledger", "segments", "flow"])
    results = {
        "when": datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
    }
    if "ledger" in only:
        results["ledger"] = [
            ledger_writes.run(d, 2_000 if args.quick else 20_000) for d in dialects
        ]
    if "segments" in only:
        size = dict(customers=2_000, orders_per_customer=10) if args.quick else {}
        results["segments"] = [segment_queries.run(d, **size) for d in dialects]
    if "flow" in only:
        size = dict(customers=500, per_message_sample=50) if args.quick else {}
        results["flow"] = flow_throughput.run(**size)
    out = Path(__file__).parent / "results" / ("quick.json" if args.quick else "latest.json")
    out.write_text(json.dumps(results, indent=2))
    print(render(results))


def render(r: dict) -> str:
    lines = [f"Measured {r['when']} on {r['machine']}.", ""]
    if "ledger" in r:
        lines += [
            "| ledger | rows | claim rows/s | record rows/s | ORM add_all rows/s | claim vs ORM |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {x['dialect']} | {x['rows']} | {x['claim_rows_per_s']} | "
            f"{x['record_rows_per_s']} | {x['orm_add_all_rows_per_s']} | "
            f"{x['claim_vs_orm']}x |"
            for x in r["ledger"]
        ]
        lines.append("")
    if "segments" in r:
        for s in r["segments"]:
            lines += [
                f"Segments on {s['dialect']}: {s['customers']} customers, "
                f"{s['orders']} orders (loaded at {s['load_orders_per_s']} rows/s)",
                "",
                "| segment | selected | one query (s) | in batches (s) |",
                "| --- | ---: | ---: | ---: |",
            ]
            lines += [
                f"| {n} | {v['selected']} | {v['whole_s']} | {v['in_batches_s']} |"
                for n, v in s["segments"].items()
            ]
            lines.append("")
    if "flow" in r:
        f = r["flow"]
        lines += [
            "| flow design | msgs/s |",
            "| --- | ---: |",
            f"| one task per batch of {f['batch_size']} ({f['customers']} messages) | "
            f"{f['batched_msgs_per_s']} |",
            f"| one task per message | {f['task_per_message_msgs_per_s']} |",
            f"| ratio | {f['ratio']}x |",
            f"| dry run of the batched design | {f['dry_run_msgs_per_s']} "
            f"({f['dry_run_vs_real']}x the real run) |",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
