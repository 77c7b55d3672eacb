"""Benchmark: our durable pipeline end to end, on an isolated RabbitMQ vhost.

    .venv/bin/python -m bench.run                      # 10,000 requests, concurrency 64
    .venv/bin/python -m bench.run --requests 500       # the CI smoke size
    .venv/bin/python -m bench.run --rate 500           # open loop at 500 req/s (latency targets)
    .venv/bin/python -m bench.run --baseline           # also the demo-style baseline, and the ratios
    .venv/bin/python -m bench.run --baseline --repeat 3   # three alternating rounds, and their medians
    .venv/bin/python -m bench.run --cluster --repeat 3    # one node, then a 3-node cluster of its own, alternating

Starts API + workers from the project's entrypoints, drives the load from a
separate process, waits until every row is in the CSV, checks exactness
(0 lost, 0 duplicated), and prints accepted req/s, POST latency percentiles,
end-to-end rows/s, ingest-to-row latency, and CPU seconds and peak RSS per
component. Writes JSON to bench/results/, and a plot of accepted and
written messages over time, ours and the baseline on one picture
(bench/plot.py; if matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.load import load_from_a_process  # noqa: E402
from bench.plot import plot_run  # noqa: E402
from bench.procstat import TreeSampler, per_request_ms, rabbitmq_cpu_seconds  # noqa: E402
from bench.targets import TARGETS, WORKER_PROCESSES, WORKER_THREADS  # noqa: E402
from tests.support.payloads import random_payload  # noqa: E402
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.rabbit import create_vhost, delete_vhost, forget_vhost_records, vhost_url  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def progress(label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.perf_counter() - started, 1e-9)
    print(f"\r  {label}: {done:>7}/{total} ({rate:,.0f}/s)", end="", flush=True)


def run_target(target_class, args, payloads: list[dict], bodies: list[bytes], command: str,
               cluster: Cluster | None = None) -> dict:
    """Start one target on its own vhost (of the machine's node, or of `cluster`), drive the load,
    wait for every row, measure."""
    if cluster is None:
        vhost = create_vhost("bench")
        url = vhost_url(vhost)
    else:
        vhost = cluster.add_vhost("bench")
        url = cluster.url(vhost)
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target_class.label}-"))
    target = target_class(workdir, url, args.processes, args.threads, auth=not args.no_auth)
    print(f"[{target.label}]")
    try:
        target.start()
        # Ready and idle: what they use from here on is the load's.
        api_tree = TreeSampler(target.api_pid, from_now=True)
        worker_tree = TreeSampler(target.workers_pid, from_now=True)
        started = time.perf_counter()
        rabbitmq_before = rabbitmq_cpu_seconds()

        def meanwhile() -> None:
            for tree in (api_tree, worker_tree):
                tree.sample()
            progress("messages written", len(target.committed()), args.requests, started)

        load = load_from_a_process(target.url, bodies, args.concurrency, args.rate, target.headers, meanwhile)
        accepted = {r[3]: i for i, r in enumerate(load["results"]) if r and 200 <= r[2] < 300}

        def all_written():
            for tree in (api_tree, worker_tree):
                tree.sample()
            done = target.committed()
            progress("messages written", len(done), args.requests, started)
            return done if len(done) >= len(accepted) else None

        durable = wait_for(all_written, timeout=600, interval=0.5, what="every accepted message's rows")
        rabbitmq_after = rabbitmq_cpu_seconds()
        print()
        rows = target.rows()
    finally:
        target.stop()
        if cluster is None:
            delete_vhost(vhost)
        else:
            cluster.ctl(cluster.nodes[0], "delete_vhost", vhost, check=False)
            forget_vhost_records(vhost)

    seen: dict[tuple[str, int], int] = {}
    for row in rows:
        key = (row["message_id"], row["pred_index"])
        seen[key] = seen.get(key, 0) + 1
    wanted = {(mid, i) for mid, index in accepted.items() for i in range(len(payloads[index]["data"]["preds"]))}
    latencies = [r[1] for r in load["results"] if r and 200 <= r[2] < 300]
    ingest_to_row = [durable[mid] - load["results"][index][0] for mid, index in accepted.items() if mid in durable]
    # The clock starts at the first request sent, not at the load process's start-up (it unpickles the bodies).
    started_wall = min(r[0] for r in load["results"] if r)
    end_to_end = max(durable.values()) - started_wall
    cpu = {
        "api": api_tree.cpu_seconds,
        "workers": worker_tree.cpu_seconds,
        "rabbitmq": None if rabbitmq_before is None or rabbitmq_after is None else rabbitmq_after - rabbitmq_before,
        "load": load["cpu_seconds"],
    }
    return {
        "label": target.label,
        "command": command,
        "machine": {"cores": multiprocessing.cpu_count(), "python": platform.python_version()},
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "workers": f"{args.processes}x{args.threads}" if target.label == "ours" else "1 aio_pika consumer",
        "accepted": len(accepted),
        "refused": args.requests - len(accepted),
        "accepted_per_s": len(accepted) / load["elapsed"],
        "post_latency_ms": {q: 1000 * percentile(latencies, q) for q in (50, 95, 99)},
        "rows": len(rows),
        "rows_per_s_end_to_end": len(rows) / end_to_end,
        "ingest_to_row_ms": {q: 1000 * percentile(ingest_to_row, q) for q in (50, 99)},
        "lost_rows": len(wanted - seen.keys()),
        "duplicated_rows": sum(count - 1 for count in seen.values() if count > 1),
        "unexpected_rows": len(seen.keys() - wanted),
        "cpu_seconds": cpu,
        "cpu_ms_per_request": per_request_ms(cpu, len(accepted)),
        "start_up_cpu_seconds": {"api": api_tree.start_up_cpu_seconds, "workers": worker_tree.start_up_cpu_seconds},
        "kernel_share": {"api": api_tree.kernel_seconds / max(api_tree.cpu_seconds, 1e-9),
                         "workers": worker_tree.kernel_seconds / max(worker_tree.cpu_seconds, 1e-9)},
        "peak_rss_mb": {
            "api": api_tree.peak_rss_mb,
            "worker_process": worker_tree.peak_rss_mb,
            "load": load["peak_rss_mb"],
        },
        "written_timeline": sorted(durable.values()),
        "accepted_timeline": sorted(load["results"][index][0] + load["results"][index][1] for index in accepted.values()),
        "started": started_wall,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    parser.add_argument("--processes", type=int, default=WORKER_PROCESSES, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=WORKER_THREADS, help="threads per worker process")
    parser.add_argument("--frame-bytes", type=int, default=6 * 1024, help="raw bytes per frame (x4/3 in base64)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default="ours")
    parser.add_argument("--baseline", action="store_true", help="also run the demo-style baseline; print ratios")
    parser.add_argument("--no-auth", action="store_true", help="ours without API keys (what auth costs)")
    parser.add_argument("--cluster", action="store_true",
                        help="each round: ours on the machine's node, then on a 3-node cluster of its own with "
                        "quorum queues (as root); prints the ratios")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (ours, then the baseline, alternating); prints medians"
    )
    args = parser.parse_args(argv)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])

    rng = random.Random(args.seed)
    payloads = [random_payload(rng, frame_bytes=args.frame_bytes) for _ in range(args.requests)]
    bodies = [orjson.dumps(payload) for payload in payloads]
    expected_rows = sum(len(payload["data"]["preds"]) for payload in payloads)
    print(f"{args.requests} requests, {expected_rows} rows, {sum(map(len, bodies)) / 1e6:.0f} MB of bodies")

    if args.cluster and args.baseline:
        parser.error("--cluster compares ours on one node and on a cluster; run --baseline separately")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="bench-cluster-"))).start() if args.cluster else None
    try:
        return _rounds(args, payloads, bodies, command, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _rounds(args, payloads: list[dict], bodies: list[bytes], command: str, cluster: Cluster | None) -> dict:
    rounds: list[tuple[dict, dict | None]] = []
    for round_number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"\n=== round {round_number} of {args.repeat}")
        ours = run_target(TARGETS["ours"], args, payloads, bodies, command)
        ours["label"] = args.label
        print_report(ours)
        baseline = None
        if args.baseline:
            baseline = run_target(TARGETS["baseline"], args, payloads, bodies, command)
            print_report(baseline)
            ours["ratio_to_baseline"] = {
                "accepted_per_s": ours["accepted_per_s"] / baseline["accepted_per_s"],
                "rows_per_s_end_to_end": ours["rows_per_s_end_to_end"] / baseline["rows_per_s_end_to_end"],
            }
            ratio = ours["ratio_to_baseline"]
            print(
                f"\nours / baseline: accepted req/s x{ratio['accepted_per_s']:.2f}, "
                f"end-to-end rows/s x{ratio['rows_per_s_end_to_end']:.2f} "
                "(ours with confirms and fsync; the baseline with neither)"
            )
            save(baseline)
        if cluster is not None:
            baseline = run_target(TARGETS["ours-cluster"], args, payloads, bodies, command, cluster)
            print_report(baseline)
            ours["cluster_to_one_node"] = {
                "accepted_per_s": baseline["accepted_per_s"] / ours["accepted_per_s"],
                "rows_per_s_end_to_end": baseline["rows_per_s_end_to_end"] / ours["rows_per_s_end_to_end"],
            }
            ratio = ours["cluster_to_one_node"]
            print(f"\ncluster / one node: accepted req/s x{ratio['accepted_per_s']:.2f}, "
                  f"end-to-end rows/s x{ratio['rows_per_s_end_to_end']:.2f}")
            save(baseline)
        save(ours, *([baseline] if baseline else []))  # the plot: both systems on one picture
        rounds.append((ours, baseline))
    if args.repeat > 1:
        print_medians(rounds)
    # The last round's report; exactness must hold in every round.
    for name in ("lost_rows", "duplicated_rows", "unexpected_rows"):
        ours[name] = sum(r[name] for pair in rounds for r in pair if r is not None)
    return ours


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_medians(rounds: list[tuple[dict, dict | None]]) -> None:
    """Medians over the rounds: on a shared machine one run can be off by 15% either way."""
    print(f"\n=== medians of {len(rounds)} rounds (the two runs of a round alternate, so drift hits both)")
    for index in (0, 1):
        reports = [pair[index] for pair in rounds if pair[index] is not None]
        if not reports:
            continue
        label = reports[0].get("label", ("ours", "baseline")[index])
        accepted = median([r["accepted_per_s"] for r in reports])
        rows = median([r["rows_per_s_end_to_end"] for r in reports])
        p99 = median([r["post_latency_ms"][99] for r in reports])
        print(f"{label:>12}: {accepted:,.0f} req/s, {rows:,.0f} rows/s, POST p99 {p99:.0f} ms, "
              f"CPU ms per request {_per_request_line([r['cpu_ms_per_request'] for r in reports])}")
    on_cluster = [pair[0]["cluster_to_one_node"] for pair in rounds if "cluster_to_one_node" in pair[0]]
    if on_cluster:
        print(f"cluster / one node, median of the rounds' ratios: accepted req/s "
              f"x{median([r['accepted_per_s'] for r in on_cluster]):.2f}, end-to-end rows/s "
              f"x{median([r['rows_per_s_end_to_end'] for r in on_cluster]):.2f}")
    ratios = [pair[0]["ratio_to_baseline"] for pair in rounds if "ratio_to_baseline" in pair[0]]
    if ratios:
        print(
            f"ours / baseline, median of the rounds' ratios: accepted req/s "
            f"x{median([r['accepted_per_s'] for r in ratios]):.2f}, end-to-end rows/s "
            f"x{median([r['rows_per_s_end_to_end'] for r in ratios]):.2f}"
        )


def _per_request_line(readings: list[dict[str, float | None]]) -> str:
    """`api+workers 1.80 (api 0.83, workers 0.97), rabbitmq 0.40, load 0.20`: medians of the readings."""
    def of(part: str) -> str:
        values = [r[part] for r in readings if r.get(part) is not None]
        return f"{median(values):.2f}" if values else "n/a"

    return (f"api+workers {of('api+workers')} (api {of('api')}, workers {of('workers')}), "
            f"rabbitmq {of('rabbitmq')}, load {of('load')}")


def print_report(r: dict) -> None:
    start_up = r.get("start_up_cpu_seconds", {})
    print(
        f"""
accepted:        {r['accepted']}/{r['requests']}  {r['accepted_per_s']:,.0f} req/s (concurrency {r['concurrency']}, rate {r['rate'] or 'open'})
POST latency:    p50 {r['post_latency_ms'][50]:.1f} ms  p95 {r['post_latency_ms'][95]:.1f} ms  p99 {r['post_latency_ms'][99]:.1f} ms
rows:            {r['rows']}  {r['rows_per_s_end_to_end']:,.0f} rows/s end to end (first POST to last row durable)
ingest-to-row:   p50 {r['ingest_to_row_ms'][50]:.0f} ms  p99 {r['ingest_to_row_ms'][99]:.0f} ms
exactness:       lost {r['lost_rows']}  duplicated {r['duplicated_rows']}  unexpected {r['unexpected_rows']}
CPU ms/request:  {_per_request_line([r['cpu_ms_per_request']])}
CPU seconds:     api {r['cpu_seconds']['api']:.1f}  workers {r['cpu_seconds']['workers']:.1f}  load {r['cpu_seconds']['load']:.1f}  (in the kernel: api {r['kernel_share']['api']:.0%}, workers {r['kernel_share']['workers']:.0%}; from ready, start-up not counted: api {start_up.get('api', 0):.1f}, workers {start_up.get('workers', 0):.1f})
peak RSS (MB):   api {r['peak_rss_mb']['api']:.0f}  worker process {r['peak_rss_mb']['worker_process']:.0f}  load {r['peak_rss_mb']['load']:.0f}"""
    )


def save(report: dict, *others: dict) -> None:
    """Write the report as JSON, and the run's plot: this report's system and `others` on one picture."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{report['label']}-{stamp}.json"
    path.write_text(json.dumps({k: v for k, v in report.items() if not k.endswith("_timeline")}, indent=2))
    print(f"wrote {path}")
    picture = plot_run([report, *others], path.with_suffix(".png"))
    if picture is not None:
        print(f"wrote {picture}")


if __name__ == "__main__":
    result = main()
    sys.exit(0 if result["lost_rows"] == result["duplicated_rows"] == result["unexpected_rows"] == 0 else 1)
