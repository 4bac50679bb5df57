"""Executors compared: local (1 and 2 workers) against a local Ray (2 CPUs), for filter and convert.

Makes the data once in a temporary folder:
- N synthetic LLaVA records (JSONL, default 1,000,000), the generator of `bench/filter_throughput.py`
  (GPT-style answers, 80% en / 15% ru / 5% zh, 1% planted errors, 1% exact duplicates);
- a parquet of M image rows (default 10,000), the generator of `bench/convert_parquet.py`: 48 distinct
  photo-like noise images of ~100 KB (3 in 4 JPEG, 1 in 4 PNG) re-used under different ids, row groups
  of 100, no dictionary encoding (every row carries its own bytes).

Then runs, each configuration in its own process (so every figure is that run's own):
- filter (structure, heuristics, language, exact dedup) x {local 1, local 2, ray 2};
- convert parquet -> LLaVA (images copied out as they are) x {local 1, local 2, ray 2}.
While a configuration runs, the bench polls /proc every 0.2 s for the driver and all its descendants:
local pool workers, and for Ray the raylet / GCS / agents ("Ray system") and the Ray worker processes
(children of the raylet, which the driver starts: `ray::...` titles or `default_worker.py`). It records
the peak of the workers' summed RSS and the peak single worker RSS; the driver's peak is its own maxrss.
RSS counts shared pages in every process that touched them (forked pool workers share the driver's
pages, Ray workers map the object store), so the sums are upper bounds. For Ray, the local Ray is
started before the run (the executor's own settings) and that start-up is timed separately; "first row"
is the time from the call to the first item coming out of the executor.

It also times, in one process on a sample, the stateless steps per core and the driver's own work
(exact dedup + writing kept/rejects), measures a bare `ray.init(num_cpus=2)` + `ray.shutdown()`, and
ends with a paper estimate for a 64-node cluster built from these per-core rates and stated assumptions.

    python bench/executors.py [--rows 1000000] [--images 10000] [--skip-ray] [--dir DIR]

Figures only, no asserts. On 2 cores Ray is not expected to be faster: the point is its overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
FILTER_STAGES = ["structure", "heuristics", "language", "dedup"]
CONFIGS = [("local", 1), ("local", 2), ("ray", 2)]
POLL_S = 0.2
RATE_SAMPLE = 100_000

# The paper estimate's assumptions (not measured here).
ASSUME = {
    "nodes": 64,
    "cores_per_node": 32,
    "gen_rows": 4_200_000,
    "filter_rows": 50_000_000,
    "requests_per_row": 1.0,       # one teacher request per generated row
    "teacher_replicas": 128,       # 2 per node (e.g. a ~7-8B VLM, one GPU per replica, 2 GPUs per node)
    "replica_rps": 4.0,            # vLLM-like continuous batching: ~2,000 output tok/s / ~500 tokens per reply
    "client_ms_per_request": 0.34,  # the engine's client CPU per request (README, bench/generate_throughput.py)
    "digest_bytes": 25,            # exact-dedup digest table, per record (filters/dedup.py DigestTable)
    "band_bytes": 120,             # near-dup band hashes per record at J = 0.85 (filters/minhash.py)
}


# --------------------------------------------------------------------------------------------- children

def _timed_executors(first: list[float]) -> None:
    """Wrap `make_executor` where filter and convert look it up, to note when the first item comes out."""
    import visinstruct.convert.run as convert_run
    import visinstruct.filters.pipeline as pipeline
    from visinstruct.exec import make_executor

    def make(*args: Any, **kwargs: Any) -> Any:
        executor = make_executor(*args, **kwargs)
        inner = executor.run

        def run(*a: Any, **k: Any) -> Any:
            for item in inner(*a, **k):
                if not first:
                    first.append(time.perf_counter())
                yield item

        executor.run = run
        return executor

    pipeline.make_executor = make
    convert_run.make_executor = make


def _ray_spilled() -> str:
    """What the local raylet logged about spilling objects out of its store (its last such line)."""
    try:
        import ray

        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        found = [line.strip() for path in sorted(logs.glob("raylet*.out"))
                 for line in path.read_text(errors="replace").splitlines() if "Spilled " in line]
    except Exception as exc:  # a bench: report, do not fail (private API, may change)
        return f"unknown ({type(exc).__name__}: {exc})"
    return f"{len(found)} spill lines in raylet.out, last: {found[-1]}" if found else "no spilling logged"


def _start_ray(workers: int) -> None:
    """Start the local Ray as the executor would (its own settings); the run then finds it started."""
    from visinstruct.exec import ray as module

    if hasattr(module, "start_ray"):
        module.start_ray(workers, None)
    elif hasattr(module.RayExecutor, "_start"):
        module.RayExecutor(workers)._start()
    else:
        import ray

        ray.init(num_cpus=max(2, workers), object_store_memory=module.OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False)


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration (filter or convert on one executor), in this process."""
    import resource

    first: list[float] = []
    _timed_executors(first)
    work = Path(spec["out"])
    work.mkdir(parents=True, exist_ok=True)
    ray_start = None
    if spec["executor"] == "ray":
        start = time.perf_counter()
        _start_ray(spec["workers"])
        ray_start = time.perf_counter() - start
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if spec["job"] == "filter":
        from visinstruct.filters.pipeline import FilterConfig, run_filter

        config = FilterConfig(stages=FILTER_STAGES, workers=spec["workers"], executor=spec["executor"])
        report = run_filter(Path(spec["src"]), work / "kept.jsonl", work / "rejects.jsonl", config,
                            report=None, progress=False)
    else:
        from visinstruct.convert.run import ConvertOptions, convert

        report = convert(Path(spec["src"]), work / "data.json",
                         ConvertOptions("llava", workers=spec["workers"], executor=spec["executor"],
                                        progress=False))
    end = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = report["records_in"] if spec["job"] == "filter" else report["records_out"]  # convert: rows written
    result = {"records": rows, "kept": report["records_out"], "run_s": end - start,
              "first_s": (first[0] - start) if first else None, "ray_start_s": ray_start,
              "driver_maxrss_mb": usage.ru_maxrss / 1024,
              "driver_cpu_s": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime}
    if spec["executor"] == "ray":
        result["spilled"] = _ray_spilled()
    return result


def child_rates(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-core rates on a sample, in one process: parse, the stateless filter steps, dedup + writing."""
    import orjson

    from visinstruct.core.io import RecordWriter
    from visinstruct.core.report import Tally
    from visinstruct.core.step import Item, batches, run_batch, split_pipeline
    from visinstruct.exec.local import run_tail
    from visinstruct.filters.pipeline import FilterConfig, build_steps

    with open(spec["src"], "rb") as handle:
        lines = [line for _, line in zip(range(spec["sample"]), handle, strict=False)]
    start = time.perf_counter()
    records = [orjson.loads(line) for line in lines]
    parse = len(lines) / (time.perf_counter() - start)
    items = [Item(i, record, f"bench:{i + 1}") for i, record in enumerate(records)]
    steps = build_steps(FilterConfig(stages=FILTER_STAGES))
    head, tail = split_pipeline(steps)
    for step in head:
        step.setup()
    run_batch(head, [Item(0, records[0], "warm-up")])  # models and tables load outside the timing
    start = time.perf_counter()
    for batch in batches(items):
        run_batch(head, batch)
    steps_rate = len(items) / (time.perf_counter() - start)
    work = Path(spec["out"])
    work.mkdir(parents=True, exist_ok=True)
    tally = Tally([step.name for step in steps])
    start = time.perf_counter()
    with RecordWriter(work / "kept.jsonl") as keep, RecordWriter(work / "rejects.jsonl") as drop:
        for item in run_tail(iter(items), tail, tally):
            if item.rejected:
                drop.write({**item.record, "reject_stage": item.rejected, "reject_reason": item.reason})
            else:
                keep.write(item.record)
    driver_rate = len(items) / (time.perf_counter() - start)
    return {"sample": len(items), "parse": parse, "steps": steps_rate, "driver": driver_rate}


def child_ray_start(spec: dict[str, Any]) -> dict[str, Any]:
    """A bare `ray.init(num_cpus=2)` and `ray.shutdown()`, timed."""
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, log_to_driver=False)
    init = time.perf_counter() - start
    start = time.perf_counter()
    ray.shutdown()
    return {"init_s": init, "shutdown_s": time.perf_counter() - start}


CHILDREN = {"run": child_run, "rates": child_rates, "ray_start": child_ray_start}


# --------------------------------------------------------------------------------------------- driver side

def _kind(process: Any, executor: str) -> str:
    """'worker' or 'system' for one descendant of the driver (re-read each poll: Ray retitles its workers)."""
    if executor != "ray":
        return "worker"
    cmdline = process.cmdline()
    head = cmdline[0] if cmdline else process.name()
    if head.startswith("ray::") or any(part.endswith("default_worker.py") for part in cmdline[:3]):
        return "worker"
    return "system"


def run_child(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run `spec` in a fresh process; poll its RSS tree while it runs. Returns the child's result and peaks."""
    import psutil

    os.sync()  # the previous run's dirty pages are flushed before this one starts
    stdout, stderr = work / "child.out", work / "child.err"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    peaks = {"driver_mb": 0.0, "workers_sum_mb": 0.0, "workers_max_mb": 0.0, "system_sum_mb": 0.0,
             "worker_pids": 0, "system_pids": 0}
    cpu: dict[int, tuple[str, float]] = {}
    seen = {"worker": set(), "system": set()}
    start = time.perf_counter()
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        driver = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peaks["driver_mb"] = max(peaks["driver_mb"], driver.memory_info().rss / 2**20)
                children = driver.children(recursive=True)
            except psutil.Error:
                break
            total = {"worker": 0.0, "system": 0.0}
            largest = 0.0
            for child in children:
                try:
                    kind = _kind(child, spec.get("executor", "local"))
                    rss = child.memory_info().rss / 2**20
                    times = child.cpu_times()
                except psutil.Error:
                    continue
                cpu[child.pid] = (kind, times.user + times.system)
                seen[kind].add(child.pid)
                total[kind] += rss
                if kind == "worker":
                    largest = max(largest, rss)
            peaks["workers_sum_mb"] = max(peaks["workers_sum_mb"], total["worker"])
            peaks["workers_max_mb"] = max(peaks["workers_max_mb"], largest)
            peaks["system_sum_mb"] = max(peaks["system_sum_mb"], total["system"])
            time.sleep(POLL_S)
        proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{spec} failed (exit {proc.returncode}):\n{stderr.read_text()[-3000:]}")
    result = json.loads(stdout.read_text().strip().splitlines()[-1])
    peaks["worker_pids"], peaks["system_pids"] = len(seen["worker"]), len(seen["system"])
    peaks["workers_cpu_s"] = sum(t for kind, t in cpu.values() if kind == "worker")
    peaks["system_cpu_s"] = sum(t for kind, t in cpu.values() if kind == "system")
    return {**result, **peaks, "process_wall_s": wall}


def make_data(work: Path, rows: int, images: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(BENCH))
    from convert_parquet import make_parquet
    from filter_throughput import write_records

    records, parquet = work / "records.jsonl", work / "images.parquet"
    start = time.perf_counter()
    write_records(records, rows)
    print(f"wrote {rows:,} records ({records.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    image_bytes = make_parquet(parquet, images)
    print(f"wrote {images:,} image rows ({image_bytes / 1e6:,.0f} MB of images, "
          f"{image_bytes / max(images, 1) / 1e3:.0f} KB each; parquet {parquet.stat().st_size / 1e6:,.0f} MB) "
          f"in {time.perf_counter() - start:.0f} s")
    return records, parquet


def _mb(value: float) -> str:
    return f"{value:,.0f} MB"


def table(title: str, results: list[tuple[str, int, dict[str, Any]]]) -> None:
    base = next((r for e, w, r in results if e == "local" and w == 1), None)
    base_rate = base["records"] / base["run_s"] if base else None
    print(f"\n### {title}\n")
    print("| executor | workers | rows | Ray start s | first row s | run s | rows/s (incl. Ray start) | "
          "rows/s after first row | × local-1 | driver CPU s (run) | workers CPU s | driver peak RSS | "
          "workers peak RSS sum / max (procs) | Ray system peak RSS (procs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for executor, workers, r in results:
        total = r["run_s"] + (r["ray_start_s"] or 0)
        rate = r["records"] / total
        steady = r["records"] / (r["run_s"] - r["first_s"]) if r["first_s"] is not None else float("nan")
        ratio = f"{rate / base_rate:.2f}" if base_rate else "—"
        ray_start = f"{r['ray_start_s']:.1f}" if r["ray_start_s"] is not None else "—"
        system = (f"{_mb(r['system_sum_mb'])} ({r['system_pids']})" if executor == "ray" else "—")
        workers_rss = (f"{_mb(r['workers_sum_mb'])} / {_mb(r['workers_max_mb'])} ({r['worker_pids']})"
                       if r["worker_pids"] else "— (in the driver)")
        print(f"| {executor} | {workers} | {r['records']:,} | {ray_start} | {r['first_s']:.1f} | {r['run_s']:.1f} | "
              f"{rate:,.0f} | {steady:,.0f} | {ratio} | {r['driver_cpu_s']:.0f} | {r['workers_cpu_s']:.0f} | "
              f"{_mb(r['driver_maxrss_mb'])} | {workers_rss} | {system} |")
    for executor, workers, r in results:
        if r.get("spilled"):
            print(f"\n{executor} {workers}: Ray object store: {r['spilled']}")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def paper_estimate(rates: dict[str, Any], filters: dict[tuple[str, int], dict[str, Any]],
                   converts: dict[tuple[str, int], dict[str, Any]]) -> None:
    a = ASSUME
    cores = a["nodes"] * a["cores_per_node"]
    per_core = 1 / (1 / rates["parse"] + 1 / rates["steps"])  # a worker reads its split and runs the steps
    dedup_write = rates["driver"]
    distributed = filters.get(("ray", 2)) or filters.get(("local", 2))
    driver_name, driver_work = (("ray 2", "receiving items from Ray, dedup, writing") if ("ray", 2) in filters
                                else ("local 2", "reading + parsing, sending to the pool, dedup, writing"))
    driver_cpu_rate = distributed["records"] / distributed["driver_cpu_s"]
    driver = min(dedup_write, driver_cpu_rate)
    print("\n### Paper estimate (64-node cluster, from the per-core rates measured above)\n")
    print("Assumptions: " + ", ".join(f"{k} = {v:,}" for k, v in a.items()) + ".")
    print(f"Measured, one core (sample of {rates['sample']:,} records): parse {rates['parse']:,.0f} rows/s, "
          f"stateless steps (structure + heuristics + language) {rates['steps']:,.0f} rows/s → a worker reading "
          f"its split and running the steps: {per_core:,.0f} rows/s per core; the driver's exact dedup + writing "
          f"kept/rejects: {dedup_write:,.0f} rows/s; the driver of the {driver_name} filter run spent "
          f"{distributed['driver_cpu_s']:.0f} CPU s on {distributed['records']:,} rows ({driver_work}) → at most "
          f"{driver_cpu_rate:,.0f} rows/s. Driver ceiling used: {driver:,.0f} rows/s.")
    print("\nWhat scales: stateless steps (structure, spelling, heuristics, language, MinHash signatures, "
          "format conversion) linearly with cores; reading, because inputs are cut into splits (JSONL byte "
          "ranges, parquet row groups) read by the workers; generation actors, one ledger shard each (no "
          "shared writer). What does not: the single driver, which writes the output in order and holds the "
          "duplicate tables.")
    rows = a["filter_rows"]
    capacity = cores * per_core
    feeding = driver / per_core
    exact_gb, band_gb = rows * a["digest_bytes"] / 1e9, rows * a["band_bytes"] / 1e9
    print(f"\n**Filter, {rows / 1e6:,.0f}M rows.** Stateless capacity {cores:,} cores × {per_core:,.0f} = "
          f"{capacity / 1e6:,.1f}M rows/s (ideal); the driver takes {driver:,.0f} rows/s, so ~{feeding:.1f} "
          f"cores of workers already saturate it. Time ≈ {rows:,} / {min(capacity, driver):,.0f} = "
          f"{_duration(rows / min(capacity, driver))}, the same on 1 node as on {a['nodes']}: the bottleneck is "
          f"the driver (ordered writing + dedup), not the cluster. Driver memory for the duplicate state: "
          f"exact digests {exact_gb:.2f} GB + near-dup bands {band_gb:.1f} GB = {exact_gb + band_gb:.1f} GB on "
          f"top of its baseline ({distributed['driver_maxrss_mb']:,.0f} MB peak at {distributed['records']:,} "
          f"rows here). With spelling on (~6,000 rows/s per core, README) ~{driver / 6000:.1f} cores of workers "
          f"saturate the driver: still far under one node.")
    gen = a["gen_rows"]
    requests = gen * a["requests_per_row"]
    teacher = a["teacher_replicas"] * a["replica_rps"]
    client_rps = 1000 / a["client_ms_per_request"]
    actors = a["nodes"]
    print(f"\n**Generation, {gen / 1e6:.1f}M rows.** {requests:,.0f} teacher requests at {a['teacher_replicas']} "
          f"replicas × {a['replica_rps']} req/s = {teacher:,.0f} req/s → {_duration(requests / teacher)}. "
          f"Client side: {a['client_ms_per_request']} ms CPU per request = {client_rps:,.0f} req/s per actor core, "
          f"so {teacher / client_rps:.2f} cores would keep up; with one actor per node ({actors} actors, one "
          f"ledger shard each, ~{gen / actors:,.0f} rows per shard) each actor runs at "
          f"{teacher / actors:,.1f} req/s, {100 * teacher / actors / client_rps:.2f}% of a core. Assembling the "
          f"output in the driver (stable unit order) at ~{dedup_write:,.0f} rows/s (the dedup + write rate as a "
          f"proxy) takes {_duration(gen / dedup_write)}, filtering the result {_duration(gen / driver)}. "
          f"Bottleneck: the teacher replicas; CPU and the driver are not. Throughput scales with replicas × "
          f"req/s per replica, nothing else.")
    if ("local", 1) in converts:
        c1 = converts[("local", 1)]
        rate = c1["records"] / c1["run_s"]
        print(f"\n**Convert parquet → LLaVA.** {rate:,.0f} rows/s on one local worker here (bytes copied as they "
              f"are; bound by disk and the driver writing the JSON), per row ~100 KB: on a cluster each node "
              f"writes its own images only if the output is on shared storage; the record file is still written "
              f"by one driver.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic LLaVA records to filter")
    parser.add_argument("--images", type=int, default=10_000, help="image rows in the parquet to convert")
    parser.add_argument("--skip-ray", action="store_true", help="local executor only")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        sys.path.insert(0, str(REPO / "src"))
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="vi-executors-"))
    work.mkdir(parents=True, exist_ok=True)
    configs = [c for c in CONFIGS if not (args.skip_ray and c[0] == "ray")]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    try:
        records, parquet = make_data(work, args.rows, args.images)
        if not args.skip_ray:
            started = run_child({"kind": "ray_start"}, work)
            print(f"bare ray.init(num_cpus=2): {started['init_s']:.1f} s, ray.shutdown(): "
                  f"{started['shutdown_s']:.1f} s (whole process {started['process_wall_s']:.1f} s)")
        rates = run_child({"kind": "rates", "src": str(records), "sample": min(args.rows, RATE_SAMPLE),
                           "out": str(work / "rates")}, work)
        shutil.rmtree(work / "rates", ignore_errors=True)
        filters: dict[tuple[str, int], dict[str, Any]] = {}
        converts: dict[tuple[str, int], dict[str, Any]] = {}
        for job, src, found in (("filter", records, filters), ("convert", parquet, converts)):
            for executor, workers in configs:
                out = work / f"{job}-{executor}-{workers}"
                spec = {"kind": "run", "job": job, "src": str(src), "executor": executor, "workers": workers,
                        "out": str(out)}
                found[(executor, workers)] = result = run_child(spec, work)
                shutil.rmtree(out, ignore_errors=True)
                print(f"{job} {executor} {workers}: {result['records']:,} rows in {result['run_s']:.1f} s "
                      f"(load average now {os.getloadavg()[0]:.1f})", flush=True)
        table(f"Filter: {args.rows:,} records, stages {' + '.join(FILTER_STAGES)}",
              [(e, w, filters[(e, w)]) for e, w in configs])
        table(f"Convert parquet → LLaVA: {args.images:,} image rows", [(e, w, converts[(e, w)]) for e, w in configs])
        paper_estimate(rates, filters, converts)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
