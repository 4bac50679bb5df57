"""Generation engine throughput against a local OpenAI-compatible teacher.

Prints, for a teacher with 100 ms latency, requests/s at concurrency 64, 256 and 1024 and the
ratio to the ideal (concurrency / latency) and the target (0.8 of the ideal, up to 1,500 req/s); client CPU
milliseconds per request at zero latency; and the embedded teacher's tokens/s one prompt at a time
vs batched. The whole engine runs (units, ledger writes, parsing, output), not just HTTP.

    python bench/generate_throughput.py [--skip-embedded] [--units-per-slot 12]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visinstruct.generate.stage import GenerateOptions, generate_scenes  # noqa: E402
from visinstruct.sources.scene import Box, Scene  # noqa: E402
from visinstruct.teachers.factory import TeacherConfig  # noqa: E402

TARGET_RPS = 1500.0


def scenes(n: int) -> list[Scene]:
    """Synthetic scenes shaped like COCO ones (5 captions, 6 boxes)."""
    caps = [f"A person rides a bicycle past shop number {{i}} on a wet street, view {k}." for k in range(5)]
    return [Scene(f"{i:012d}", f"{i:012d}.jpg", [c.format(i=i) for c in caps],
                  [Box("person", [0.1, 0.2, 0.3, 0.9])] * 6, "bench") for i in range(n)]


def start_server(latency: float, workers: int = 1) -> tuple[list[subprocess.Popen], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "teacher_server.py"), "--port", str(port),
                               "--latency", str(latency)]) for _ in range(workers)]
    for _ in range(400):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return procs, f"http://127.0.0.1:{port}/v1"
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def run_engine(base_url: str, n_units: int, concurrency: int) -> tuple[float, float, float]:
    """(wall seconds of the whole generate call, seconds in the request phase, client CPU seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = GenerateOptions(out=Path(tmp) / "out.jsonl", task_names=["conversation"], max_tokens=256,
                               progress=False)
        teacher = TeacherConfig(base_url, "bench", timeout=60, concurrency=concurrency).settle()
        cpu0, t0 = time.process_time(), time.perf_counter()
        with open(os.devnull, "w") as quiet:
            summary = generate_scenes(scenes(n_units), teacher, opts, stream=quiet)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        assert summary.done == n_units, summary
        return wall, summary.run_seconds, cpu


def bench_http(units_per_slot: int) -> None:
    latency = 0.1
    procs, url = start_server(latency)
    try:
        print(f"teacher latency {latency * 1000:.0f} ms, server in its own process; "
              "engine: units, ledger, parse, output")
        print(f"{'concurrency':>11} {'units':>6} {'req/s':>8} {'ideal':>7} {'ratio':>6} {'target':>7} {'met':>4} "
              f"{'incl. setup+output':>19}")
        for concurrency in (64, 256, 1024):
            n = max(2000, concurrency * units_per_slot)
            wall, run_s, _ = run_engine(url, n, concurrency)
            rps, ideal = n / run_s, concurrency / latency
            target = 0.8 * min(ideal, TARGET_RPS)
            print(f"{concurrency:>11} {n:>6} {rps:>8.0f} {ideal:>7.0f} {rps / ideal:>6.2f} {target:>7.0f} "
                  f"{'yes' if rps >= target else 'NO':>4} {n / wall:>15.0f} r/s")
    finally:
        for p in procs:
            p.kill()
    procs, url = start_server(0.0)
    try:
        n = 5000
        wall, run_s, cpu = run_engine(url, n, 64)
        print(f"zero latency, concurrency 64, {n} units: {n / run_s:.0f} req/s, "
              f"client CPU {cpu * 1000 / n:.3f} ms per request (whole generate call)")
    finally:
        for p in procs:
            p.kill()


def bench_embedded(n: int = 8, max_tokens: int = 64) -> None:
    from visinstruct.generate.tasks import resolve
    from visinstruct.generate.units import Sampling, make_units
    from visinstruct.teachers.embedded import EMBEDDED_MODEL, EmbeddedTeacher

    units = list(make_units(scenes(n), resolve(["conversation"], "text"), "en", 1, EMBEDDED_MODEL,
                            Sampling(None, None, max_tokens)))
    requests = [u.request for u in units]
    teacher = EmbeddedTeacher(batch_size=n)
    teacher._generate(requests[:1])  # load and warm up
    for label, batches in (("one at a time", [[r] for r in requests]), (f"batched ({n})", [requests])):
        t0 = time.perf_counter()
        tokens = sum(reply.completion_tokens for batch in batches for reply in teacher._generate(batch))
        seconds = time.perf_counter() - t0
        print(f"embedded SmolLM2-135M, {label:>14}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--units-per-slot", type=int, default=12, help="units per concurrency slot (default 12)")
    args = parser.parse_args()
    bench_http(args.units_per_slot)
    if not args.skip_embedded:
        bench_embedded()


if __name__ == "__main__":
    main()
