"""`generate --executor ray`: same output as local, resumable, and a killed actor costs only its in-flight requests."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import answered_keys, read_records, run_cli, start_server_process
from teacher_server import ServerThread

pytest.importorskip("ray")

OBJECTS = ("dog", "cat", "car", "person", "bicycle", "cup", "chair", "kite")


def make_coco(folder: Path, n: int) -> list[str]:
    """Official-style COCO captions + instances files for `n` images; returns the CLI input flags."""
    rng = random.Random(n)
    images, captions, boxes = [], [], []
    for i in range(n):
        image_id = 1000 + i
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg", "width": 640, "height": 480})
        for c in range(3):
            a, b = rng.sample(OBJECTS, 2)
            captions.append({"id": len(captions) + 1, "image_id": image_id,
                             "caption": f"A {a} next to a {b} in picture {i} ({c})."})
        for _ in range(2):
            boxes.append({"id": len(boxes) + 1, "image_id": image_id, "category_id": rng.randrange(len(OBJECTS)) + 1,
                          "bbox": [rng.uniform(0, 300), rng.uniform(0, 200), rng.uniform(10, 300),
                                   rng.uniform(10, 200)]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(OBJECTS)]
    (folder / "instances.json").write_text(json.dumps({"images": images, "annotations": boxes,
                                                       "categories": categories}))
    return ["--coco-captions", str(folder / "captions.json"), "--coco-instances", str(folder / "instances.json")]


def _stop(run: subprocess.Popen) -> None:
    """End a driver still running (a failed test): SIGINT lets it shut its Ray down."""
    if run.poll() is None:
        run.send_signal(signal.SIGINT)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()


def _pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_ray_output_matches_local_and_resumes_from_either(tmp_path: Path, teacher: ServerThread) -> None:
    inputs = make_coco(tmp_path / "coco", 12)
    common = [*inputs, "--base-url", teacher.base_url, "--model", "m", "--no-progress"]
    local_out, ray_out = tmp_path / "local" / "out.json", tmp_path / "ray" / "out.json"
    local = run_cli("generate", *common, "--out", str(local_out))
    assert local.returncode == 0, local.stderr
    assert len(teacher.server.received) == 36
    ray_run = run_cli("generate", *common, "--out", str(ray_out), "--executor", "ray", "--workers", "2",
                      "--concurrency", "4")
    assert ray_run.returncode == 0, ray_run.stderr
    assert len(teacher.server.received) == 72 and len(set(teacher.server.received)) == 36  # each ledger asked once
    assert ray_out.read_bytes() == local_out.read_bytes()
    assert "done: 36" in ray_run.stderr and "this run: 36 answered" in ray_run.stderr
    shards = sorted(p.name for p in (tmp_path / "ray").glob("*.shard-*.sqlite"))
    assert shards == ["out.json.ledger.sqlite.shard-00000-of-00002.sqlite",
                      "out.json.ledger.sqlite.shard-00001-of-00002.sqlite"]
    assert not list((tmp_path / "ray").glob("*.pid"))  # removed when a shard is done
    assert not list((tmp_path / "ray").glob("*.todo"))  # the shards' unit files, removed when the run ends
    # re-runs send nothing: ray after ray (shard ledgers, even with another --workers), ray after local (main ledger)
    again = run_cli("generate", *common, "--out", str(ray_out), "--executor", "ray", "--workers", "3")
    after_local = run_cli("generate", *common, "--out", str(local_out), "--executor", "ray", "--workers", "2")
    for result in (again, after_local):
        assert result.returncode == 0, result.stderr
        assert "from ledger: 36" in result.stderr and "this run: 0 answered" in result.stderr
    assert len(teacher.server.received) == 72
    assert ray_out.read_bytes() == local_out.read_bytes()


def test_killed_actor_is_restarted_and_pays_only_its_in_flight_requests(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.4)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "visinstruct", "generate", *make_coco(tmp_path / "coco", 20), "--out", str(out),
           "--base-url", base_url, "--model", "m", "--executor", "ray", "--workers", "2", "--concurrency", "4",
           "--no-progress"]
    shard = tmp_path / "out.json.ledger.sqlite.shard-00000-of-00002.sqlite"
    pid_file = shard.with_name(shard.name + ".pid")
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while (_pid(pid_file) is None or len(answered_keys(shard)) < 4) and time.time() < deadline:
            assert run.poll() is None, run.communicate()[1]
            time.sleep(0.05)
        pid = _pid(pid_file)
        assert pid is not None and pid not in (os.getpid(), run.pid), "no actor pid file"
        os.kill(pid, signal.SIGKILL)
        answered_at_kill = answered_keys(shard)  # the shard's writer is dead: this is final until the restart
        stderr = run.communicate(timeout=180)[1]
    finally:
        _stop(run)
        server.kill()
        server.wait()
    assert run.returncode == 0, stderr
    assert "the actor of shard 0 died" in stderr and "restarting it (1/3)" in stderr
    records = read_records(out)
    ids = [r["id"] for r in records]
    assert len(ids) == 60 and len(set(ids)) == 60  # nothing lost, nothing duplicated
    assert not read_records(tmp_path / "out.rejects.jsonl")
    requests = log.read_text().splitlines()
    # paid twice: at most the killed actor's 4 // 2 requests in flight and its 2 answers not yet committed
    assert 60 <= len(requests) <= 60 + 2 + 2
    assert 4 <= len(answered_at_kill) < len(answered_keys(shard))  # killed mid-shard
    assert all(requests.count(key) == 1 for key in answered_at_kill)  # answered before the kill: never asked again
    assert "units: 60  done: 60  from ledger: 0" in stderr and "this run: 60 answered" in stderr


def test_an_actor_that_keeps_dying_is_a_one_line_error(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    server, base_url = start_server_process(log, latency=0.4)
    out = tmp_path / "out.json"
    cmd = [sys.executable, "-m", "visinstruct", "generate", *make_coco(tmp_path / "coco", 10), "--out", str(out),
           "--base-url", base_url, "--model", "m", "--executor", "ray", "--concurrency", "2", "--no-progress"]
    pid_file = tmp_path / "out.json.ledger.sqlite.shard-00000-of-00001.sqlite.pid"
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: set[int] = set()
    try:
        deadline = time.time() + 150
        while run.poll() is None and time.time() < deadline:
            pid = _pid(pid_file)
            if pid is not None and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        stderr = run.communicate(timeout=30)[1]
    finally:
        _stop(run)
        server.kill()
        server.wait()
    assert run.returncode == 2, stderr
    assert len(killed) == 4
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("visinstruct: error: ledger shard out.json.ledger.sqlite.shard-00000-of-00001.sqlite: "
                           "its Ray actor died 4 times"), stderr
    assert "Traceback" not in stderr


def test_units_stream_to_shard_files_with_each_prompt_pack_written_once_per_spill(tmp_path: Path) -> None:
    """The driver holds no list of units: they stream into one file per shard, read back in the same order."""
    from conftest import make_caps_boxes
    from visinstruct.generate.distributed import SPILL, read_spill, shard_of, spill, spill_path
    from visinstruct.generate.tasks import resolve
    from visinstruct.generate.units import Sampling, Unit, make_units
    from visinstruct.sources.coco import load_caps_boxes

    scenes = load_caps_boxes(make_caps_boxes(tmp_path / "caps.jsonl", 600))
    tasks = resolve(["conversation", "detail_description", "complex_reasoning"], "text")
    units = list(make_units(scenes, tasks, "en", 2, "m", Sampling(None, None, 64)))
    paths = {rank: tmp_path / f"shard-{rank}.sqlite" for rank in range(2)}
    counts = spill(iter(units), paths)
    back = {rank: list(read_spill(spill_path(path))) for rank, path in paths.items()}
    assert sum(counts.values()) == len(units) == 3600 and min(counts.values()) > SPILL  # more than one pickle each
    for rank, got in back.items():
        mine = [u for u in units if shard_of(u, 2) == rank]
        assert [(u.key, u.unit_id, u.info, u.sample, u.request, u.prompt_estimate, u.pack.task.name) for u in got] \
            == [(u.key, u.unit_id, u.info, u.sample, u.request, u.prompt_estimate, u.pack.task.name) for u in mine]
    alone = sum(len(pickle.dumps(u, protocol=5)) for u in units)  # each unit with its own copy of the pack
    spilled = sum(spill_path(path).stat().st_size for path in paths.values())
    assert SPILL >= 100 and spilled < alone / 3, (spilled, alone)

    def broken() -> Iterator[Unit]:
        yield from units[:10]
        raise ValueError("line 11: not JSON")

    for path in paths.values():
        spill_path(path).unlink()
    with pytest.raises(ValueError):
        spill(broken(), paths)
    assert not list(tmp_path.glob("*.todo*")) and not list(tmp_path.glob(".*.tmp"))  # nothing left behind
