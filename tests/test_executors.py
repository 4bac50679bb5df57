"""The Ray executor gives the local executor's output, byte for byte: filter, validate, convert, errors.

One local Ray (2 CPUs) serves the module; inputs are cut into several splits so that the distributed read,
the global numbering and the order across splits are exercised.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from conftest import read_records, run_cli
from test_convert import conv, single_image_rows, write_parquet
from test_filter import CLEAN, PLANTED, record
from visinstruct.convert.run import ConvertOptions, convert
from visinstruct.core import inputs
from visinstruct.core.errors import UserError
from visinstruct.filters.pipeline import FilterConfig, run_filter
from visinstruct.filters.validate import validate

SPLIT_BYTES = 16 << 10
STAGES = ["structure", "heuristics", "language", "dedup"]  # spelling: its dictionaries take ~10 s per process


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for the module (left alone if something else already started one)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, object_store_memory=200 << 20, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(autouse=True)
def small_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut JSONL inputs every 16 KiB, so that each input is read as several splits."""
    monkeypatch.setattr(inputs, "SPLIT_BYTES", SPLIT_BYTES)


def corpus() -> list[dict]:
    """~400 records in three languages: clean ones, planted rejects, duplicates, broken structure, a typo."""
    records = []
    for n in range(300):
        lang = ("en", "ru", "zh")[n % 3]
        answer = CLEAN[lang][1]
        records.append(record(lang, answer.replace("3", str(n + 4)), id=f"clean-{n}"))
        if n % 3 == 0:
            p_lang, p_answer, _ = PLANTED[n // 3 % len(PLANTED)]
            records.append(record(p_lang, p_answer, id=f"planted-{n}"))
        if n % 10 == 0:
            records.append({**records[-1], "id": f"dup-{n}"})
        if n % 25 == 0:
            records.append({"id": f"broken-{n}", "image": "a.jpg", "conversations": [{"from": "gpt", "value": "hi"}]})
            records.append(record("en", question="What is the man doing on the left side of the strret?",
                                  id=f"typo-{n}"))
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def test_filter_is_the_same_on_local_and_ray(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    records = corpus()
    near = [{**r, "id": f"near-{n}", "image": f"near-{n}.jpg",
             "conversations": [*r["conversations"][:-1], {"from": "gpt", "value": r["conversations"][-1]["value"]
                                                          + " Nothing else stands out."}]}
            for n, r in enumerate(records[:40:4]) if len(r["conversations"][-1]["value"].split()) > 40]
    source = write_jsonl(tmp_path / "in.jsonl", records + near)
    assert len(inputs.record_splits(source)) >= 5 and near
    runs = {}
    for executor, workers in (("local", 1), ("local", 2), ("ray", 2)):
        if executor == "ray":
            request.getfixturevalue("ray_local")  # after the local pools: no fork of a process running Ray
        kept, rejects = tmp_path / f"{executor}{workers}.kept.jsonl", tmp_path / f"{executor}{workers}.rej.jsonl"
        config = FilterConfig(stages=STAGES, executor=executor, workers=workers, near_dup=0.8)
        report = run_filter(source, kept, rejects, config, progress=False)
        assert report["executor"] == executor and report["workers"] == workers
        runs[executor, workers] = (kept.read_bytes(), rejects.read_bytes(), report["records_in"],
                                   report["records_out"], report["steps"], report["rewrites"])
    assert runs["local", 1] == runs["local", 2] == runs["ray", 2]
    _, _, records_in, records_out, steps, _ = runs["ray", 2]
    assert records_in == len(records) + len(near) and 0 < records_out < records_in
    assert all(steps[name]["rejected"] for name in ("structure", "heuristics", "dedup", "near_dedup")), steps
    assert steps["language"]["in"] == steps["heuristics"]["out"] and steps["minhash"]["in"] == steps["language"]["out"]


def test_validate_prints_the_same_problems(tmp_path: Path, ray_local: None) -> None:
    records = corpus()
    for n in range(0, len(records), 37):
        records[n] = {**records[n], "image": f"missing-{n}.jpg"}
    source = write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "a.jpg").write_bytes(b"")
    printed = {}
    for executor, workers in (("local", 1), ("ray", 2)):  # one local worker: no fork of a process running Ray
        out = io.StringIO()
        report = validate(source, tmp_path, False, False, 10_000, out, executor=executor, workers=workers,
                          progress=False)
        printed[executor] = out.getvalue()
        assert report["records_in"] == len(records) and not report["valid"]
    assert printed["local"] == printed["ray"]
    missing = range(0, len(records), 37)
    assert printed["ray"].count("): image_missing: missing-") == len(missing)
    assert f"record {missing[-1]} (id 'clean-" in printed["ray"]  # numbered across splits


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_conversions_are_byte_identical(tmp_path: Path, ray_local: None) -> None:
    rows = [{**row, "id": f"{row['id']}-{k}"} for k in range(4) for row in single_image_rows()]
    write_parquet(tmp_path / "in.parquet", rows, row_group_size=3)
    for executor, workers in (("local", 1), ("ray", 2)):
        base = tmp_path / executor
        opts = {"executor": executor, "workers": workers, "progress": False}
        convert(tmp_path / "in.parquet", base / "llava" / "data.json", ConvertOptions(to="llava", **opts))
        records = read_records(base / "llava" / "data.json")
        write_jsonl(base / "llava.jsonl", records * 8)  # several splits, every image read eight times
        convert(base / "llava.jsonl", base / "back", ConvertOptions(
            to="parquet", image_root=base / "llava" / "images", shard_size=40, **opts))
        convert(base / "llava.jsonl", base / "messages.jsonl", ConvertOptions(to="messages", **opts))
    local, ray = _tree(tmp_path / "local"), _tree(tmp_path / "ray")
    assert local.keys() == ray.keys() and local == ray
    assert len([name for name in ray if name.startswith("llava/images/")]) == sum(bool(r["image"]) for r in rows)
    assert len([name for name in ray if name.startswith("back/")]) == -(-len(rows) * 8 // 40)
    assert len(inputs.record_splits(tmp_path / "ray" / "llava.jsonl")) >= 3


def test_a_worker_user_error_is_one_line(tmp_path: Path, ray_local: None) -> None:
    records = [{"id": f"r{n}", "image": "a.jpg", "conversations": conv(f"question {n} " + "x" * 60)}
               for n in range(400)]
    records[333] = {**records[333], "image": "../secret.jpg"}
    source = write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8\xff")
    assert len(inputs.record_splits(source)) >= 3
    messages = set()
    for executor, workers in (("local", 1), ("ray", 2)):
        with pytest.raises(UserError) as caught:
            convert(source, tmp_path / f"{executor}.parquet", ConvertOptions(
                to="parquet", executor=executor, workers=workers, progress=False))
        messages.add(str(caught.value))
        assert not (tmp_path / f"{executor}.parquet").exists()
    assert len(messages) == 1 and "in.jsonl:334 (id 'r333')" in messages.pop()

    result = run_cli("convert", str(source), str(tmp_path / "cli.parquet"), "--to", "parquet", "--executor", "ray",
                     "--workers", "2", "--no-progress", timeout=180)  # a slow machine would log a progress line
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "escapes the image root" in result.stderr and "Traceback" not in result.stderr


def test_user_errors_come_out_of_ray_wrappers() -> None:
    from ray.exceptions import RayTaskError, UserCodeException

    from visinstruct.exec.ray import user_error

    cause = UserError("in.jsonl:3 (id 'x'): bad")
    wrapped = RayTaskError("_Worker", "Traceback (most recent call last):\n...", cause)
    dual = wrapped.as_instanceof_cause()  # a UserError too, but its text is the whole traceback
    assert isinstance(dual, UserError) and str(dual) != str(cause)
    try:
        raise UserCodeException("UDF failed to process a data block.") from dual
    except UserCodeException as exc:
        outer = exc
    for exc in (wrapped, dual, outer):
        found = user_error(exc)
        assert type(found) is UserError and str(found) == str(cause)
    assert user_error(RayTaskError("f", "tb", ValueError("no"))) is None
