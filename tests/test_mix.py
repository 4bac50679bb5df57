"""`visinstruct mix`: LLaVA-NeXT recipes, targets, provenance, locks, exclusions, dedup, bad recipes."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import read_records, run_cli
from visinstruct.cli import main
from visinstruct.core.io import write_records
from visinstruct.core.phash import PhashIndex
from visinstruct.mix.rows import Rows
from visinstruct.mix.strategy import Strategy, parse_strategy, share_out


def _record(i: int, image: str | None = None, answer: str | None = None, **extra: object) -> dict:
    record = {"id": f"r{i}", "conversations": [{"from": "human", "value": f"<image>\nWhat is in picture {i}?"},
                                               {"from": "gpt", "value": answer or f"Thing number {i}."}]}
    if image is not None:
        record["image"] = image
    return {**record, **extra}


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _json(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records))
    return path


def _parquet(path: Path, records: list[dict], group_rows: int = 7) -> Path:
    """HF layout: `image` as an {bytes, path} struct (bytes left empty here), small row groups."""
    rows = [{**r, "image": {"bytes": b"", "path": r["image"]} if "image" in r else None} for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=group_rows)
    return path


def _recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _mix(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["mix", *args, "--no-progress"])
    return code, capsys.readouterr().err


def _ids(path: Path) -> list[str]:
    return [r["id"] for r in read_records(path)]


# ---- strategies ----------------------------------------------------------------------------------------

def _llava_next_size(strategy: str, rows: int) -> int:
    """How many rows LLaVA-NeXT's loader keeps (its slicing rules, written out here), for comparison."""
    if ":" not in strategy:
        return rows
    kind, number = strategy.split(":")
    n = math.ceil(int(number[:-1]) * rows / 100) if number.endswith("%") else int(number)
    return len(list(range(rows))[:n] if kind in ("first", "random") else list(range(rows))[-n:])


@pytest.mark.parametrize("text, rows", [("all", 50), ("first:7", 50), ("end:7", 50), ("random:7", 50),
                                        ("first:10%", 25), ("end:10%", 25), ("random:10%", 25), ("first:1%", 50),
                                        ("random:200", 50), ("end:200", 50), ("first:0", 10), ("first:33%", 7)])
def test_strategy_sizes_match_llava_next(text: str, rows: int) -> None:
    assert parse_strategy(text).size(rows) == _llava_next_size(text, rows)


def test_strategy_forms() -> None:
    assert parse_strategy(" first:10% ") == Strategy("first", percent=10)
    assert parse_strategy("random:2.5%").size(100) == 3 and parse_strategy("end:0").size(10) == 0
    assert str(parse_strategy("end:20%")) == "end:20%" and not parse_strategy("first:5").needs_count
    for bad in ("frist:10", "10%", "random:-1", "first:abc", "random:1.5", "random", "first:", "ALL"):
        with pytest.raises(ValueError, match="first:N"):
            parse_strategy(bad)


def test_share_out_is_exact_and_largest_remainder() -> None:
    assert share_out(10, [1, 1, 1]) == [4, 3, 3]
    assert share_out(100, [0.5, 0.3, 0.2]) == [50, 30, 20]
    assert share_out(7, [2, 1]) == [5, 2] and sum(share_out(999_983, [0.1, 0.7, 0.2])) == 999_983


def test_rows_text_round_trip() -> None:
    rows = Rows.from_indices(np.array([0, 1, 2, 5, 7, 8, 100]))
    assert rows.to_text() == "0-2,5,7-8,100" and len(rows) == 7
    assert Rows.from_text(rows.to_text()).to_text() == rows.to_text()
    assert rows.pick(np.array([0, 3, 6])).to_text() == "0,5,100"
    for bad in ("3-1", "5,2", "-1", "1-2,2"):
        with pytest.raises(ValueError):
            Rows.from_text(bad)


def test_every_strategy_picks_the_rows_llava_next_would(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = _jsonl(tmp_path / "s.jsonl", [_record(i) for i in range(50)])
    expect = {"all": range(50), "first:7": range(7), "end:7": range(43, 50), "first:10%": range(5),
              "end:10%": range(45, 50), "random:200": range(50), "end:0": range(0)}
    for strategy, rows in expect.items():
        recipe = _recipe(tmp_path / "r.yaml",
                         f"datasets:\n  - json_path: s.jsonl\n    sampling_strategy: '{strategy}'\n")
        code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
        assert code == 0, err
        assert _ids(tmp_path / "o.jsonl") == [f"r{i}" for i in rows], strategy
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: s.jsonl\n    sampling_strategy: random:9\n")
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))[0] == 0
    drawn = [int(i[1:]) for i in _ids(tmp_path / "o.jsonl")]
    assert len(set(drawn)) == 9 and drawn == sorted(drawn)  # a draw without replacement, kept in file order
    assert source.exists()


def test_default_strategy_is_all_and_seeds_reproduce(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(200)])
    _jsonl(tmp_path / "b.jsonl", [_record(1000 + i) for i in range(30)])
    runs = {}
    for label, text in {
        "seed0": "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: random:20\n",
        "seed0-again": "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: random:20\n",
        "seed0-more": "datasets:\n  - json_path: b.jsonl\n  - json_path: a.jsonl\n    sampling_strategy: random:20\n",
        "seed1": "seed: 1\ndatasets:\n  - json_path: a.jsonl\n    sampling_strategy: random:20\n",
        "source-seed1": "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: random:20\n    seed: 1\n",
    }.items():
        recipe = _recipe(tmp_path / f"{label}.yaml", text)
        out = tmp_path / f"{label}.jsonl"
        assert _mix(capsys, str(recipe), "--out", str(out))[0] == 0
        runs[label] = [i for i in _ids(out) if int(i[1:]) < 1000]
        if label == "seed0-more":
            assert _ids(out)[:30] == [f"r{1000 + i}" for i in range(30)]  # no strategy: all rows
    assert runs["seed0"] == runs["seed0-again"] == runs["seed0-more"]  # another source does not move the draw
    assert runs["seed1"] == runs["source-seed1"] != runs["seed0"]
    assert (tmp_path / "seed0.jsonl").read_bytes() == (tmp_path / "seed0-again.jsonl").read_bytes()


def test_json_jsonl_parquet_and_shard_folders_give_the_same_rows(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    records = [_record(i, image=f"img/{i}.jpg", task="conversation") for i in range(40)]
    _json(tmp_path / "s.json", records)
    lines = [json.dumps(r) for r in records]
    (tmp_path / "s.jsonl").write_text("\n".join(lines[:10]) + "\n\n  \n" + "\n".join(lines[10:]) + "\n")  # blanks
    _parquet(tmp_path / "s.parquet", records)
    (tmp_path / "shards").mkdir()
    for k in range(3):  # a folder of jsonl shards, and an HF-layout folder of parquet shards
        _jsonl(tmp_path / "shards" / f"part-{k}.jsonl", records[k * 14:(k + 1) * 14])
        _parquet(tmp_path / "hf" / "data" / f"train-0000{k}-of-00003.parquet", records[k * 14:(k + 1) * 14], 5)
    (tmp_path / "hf" / "README.md").write_text("# card\n")
    outputs = []
    for name in ("s.json", "s.jsonl", "s.parquet", "shards", "hf"):
        for strategy in ("end:15", "random:12", "first:20"):
            recipe = _recipe(tmp_path / "r.yaml", f"datasets:\n  - json_path: {name}\n    name: x\n"
                                                  f"    sampling_strategy: {strategy}\n")
            out = tmp_path / f"o-{name}-{strategy[:3]}.jsonl"
            code, err = _mix(capsys, str(recipe), "--out", str(out))
            assert code == 0, err
            outputs.append((strategy, out.read_bytes()))
    for strategy in ("end:15", "random:12", "first:20"):
        same = {data for s, data in outputs if s == strategy}
        assert len(same) == 1, strategy
    got = read_records(tmp_path / "o-hf-end.jsonl")
    assert [r["id"] for r in got] == [f"r{i}" for i in range(25, 40)] and got[0]["image"] == "img/25.jpg"
    lock = json.loads((tmp_path / "o-hf-end.jsonl.lock.json").read_text())
    assert [(Path(f["path"]).name) for f in lock["sources"][0]["files"]] == ["train-00001-of-00003.parquet",
                                                                           "train-00002-of-00003.parquet"]
    assert [c["rows"] for c in lock["sources"][0]["take"]] == ["11-13", "0-11"]


def test_count_repeats_and_subsets_weight_shares_total(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(10)])
    _jsonl(tmp_path / "b.jsonl", [_record(100 + i) for i in range(50)])
    _jsonl(tmp_path / "c.jsonl", [_record(200 + i) for i in range(50)])
    recipe = _recipe(tmp_path / "r.yaml", """seed: 7
total: 100
datasets:
  - json_path: a.jsonl
    count: 25          # 10 rows: twice each, then 5 drawn
  - json_path: b.jsonl
    sampling_strategy: first:20
    weight: 3
  - json_path: c.jsonl
    weight: 1
""")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 0, err
    ids = _ids(tmp_path / "o.jsonl")
    a, b, c = ids[:25], [i for i in ids if 100 <= int(i[1:]) < 200], [i for i in ids if int(i[1:]) >= 200]
    assert len(ids) == 100 and len(b) == 56 and len(c) == 19  # 75 left after a's 25, shared 3:1 (56.25, 18.75)
    assert a[:20] == [f"r{i}" for i in range(10)] * 2 and len(set(a[20:])) == 5
    assert len(set(b)) == 20 and all(int(i[1:]) < 120 for i in b)  # 20 selected, 56 = 2 x 20 + 16 drawn
    assert b[:40] == [f"r{100 + i}" for i in range(20)] * 2 and len(set(c)) == 19
    lock = json.loads((tmp_path / "o.jsonl.lock.json").read_text())
    assert [c["rows"] for c in lock["sources"][0]["take"]][:2] == ["0-9", "0-9"]
    assert "a  " in err and "written" in err  # the per-source table
    # fewer than selected: a seeded subset, in file order
    _recipe(tmp_path / "r2.yaml", "datasets:\n  - json_path: b.jsonl\n    count: 5\n")
    assert _mix(capsys, str(tmp_path / "r2.yaml"), "--out", str(tmp_path / "o2.jsonl"))[0] == 0
    five = [int(i[1:]) for i in _ids(tmp_path / "o2.jsonl")]
    assert len(set(five)) == 5 and five == sorted(five)


@pytest.mark.parametrize("text, line, words", [
    ("datasets:\n  - json_path: a.jsonl\n    weight: 2\n", 2, "weight needs a top-level `total:`"),
    ("total: 10\ndatasets:\n  - json_path: a.jsonl\n", 1, "total is only used with weight"),
    ("total: 5\ndatasets:\n  - json_path: a.jsonl\n  - json_path: a.jsonl\n    weight: 1\n", 1,
     "total 5 is less than the 10 rows"),
    ("datasets:\n  - json_path: a.jsonl\n    count: 3\n    weight: 1\n", 4, "count or weight, not both"),
    ("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: end:0\n    count: 3\n", 2, "no rows"),
])
def test_target_errors_name_the_recipe_line(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, line: int,
                                            words: str) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(10)])
    recipe = _recipe(tmp_path / "r.yaml", text)
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and f"r.yaml:{line}: " in err and words in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "r.yaml"]


def test_provenance_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "gen.jsonl", [_record(0, source="coco2014-val", lang="ru"), _record(1),
                                    _record(2, source="coco2014-val", source_original="vg")])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: gen.jsonl\n  - json_path: gen.jsonl\n"
                                          "    name: again\n  - json_path: gen.jsonl\n")
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "o.json"))[0] == 0
    got = read_records(tmp_path / "o.json")
    assert [r["source"] for r in got] == ["gen"] * 3 + ["again"] * 3 + ["gen-2"] * 3
    assert got[0] == {**_record(0, source="gen", lang="ru"), "source_original": "coco2014-val"}
    assert list(got[0]) == ["id", "conversations", "source", "lang", "source_original"]  # `source` stays in place
    assert "source_original" not in got[1] and got[2]["source_original"] == "vg"  # the first origin is kept


# ---- the lock ------------------------------------------------------------------------------------------

def test_lock_reproduces_byte_for_byte_and_refuses_a_changed_source(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i, image=f"{i}.jpg") for i in range(300)])
    _json(tmp_path / "b.json", [_record(1000 + i) for i in range(80)])
    _parquet(tmp_path / "c" / "train-00000-of-00001.parquet", [_record(2000 + i, image="x.jpg") for i in range(30)])
    recipe = _recipe(tmp_path / "r.yaml", "seed: 5\ndedup: text\nimage_match: path\ndatasets:\n"
                                          "  - json_path: a.jsonl\n    sampling_strategy: random:33%\n"
                                          "  - json_path: b.json\n    sampling_strategy: end:10%\n    count: 21\n"
                                          "  - json_path: c\n    sampling_strategy: random:9\n")
    for out in (tmp_path / "mix.jsonl", tmp_path / "mix.json"):
        code, err = _mix(capsys, str(recipe), "--out", str(out))
        assert code == 0, err
        lock = Path(f"{out}.lock.json")
        again = tmp_path / f"again{out.suffix}"
        code, err = _mix(capsys, "--lock", str(lock), "--out", str(again))
        assert code == 0, err
        assert again.read_bytes() == out.read_bytes()
        assert Path(f"{again}.lock.json").read_bytes() == lock.read_bytes()
    assert read_records(tmp_path / "mix.json") == read_records(tmp_path / "mix.jsonl")
    code, err = _mix(capsys, "--lock", str(tmp_path / "mix.jsonl.lock.json"), "--out", str(tmp_path / "x.json"))
    assert code == 0 and read_records(tmp_path / "x.json") == read_records(tmp_path / "mix.jsonl")
    # same content, new mtime: fine; same size, other content: refused; nothing written
    os.utime(tmp_path / "a.jsonl", (1, 1))
    assert _mix(capsys, "--lock", str(tmp_path / "mix.jsonl.lock.json"), "--out", str(tmp_path / "y.jsonl"))[0] == 0
    text = (tmp_path / "a.jsonl").read_text()
    (tmp_path / "a.jsonl").write_text(text.replace("Thing number 7.", "Thing number 8.", 1))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _mix(capsys, "--lock", str(tmp_path / "mix.jsonl.lock.json"), "--out", str(tmp_path / "z.jsonl"))
    assert code == 2 and "a.jsonl: changed since the lock" in err and "SHA-256" in err and err.count("\n") == 1
    (tmp_path / "a.jsonl").write_text(text + "\n")
    code, err = _mix(capsys, "--lock", str(tmp_path / "mix.jsonl.lock.json"), "--out", str(tmp_path / "z.jsonl"))
    assert code == 2 and "size" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_lock_replay_refuses_different_bytes_and_a_bad_lock(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(5)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n")
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))[0] == 0
    lock = json.loads((tmp_path / "o.jsonl.lock.json").read_text())
    lock["sources"][0]["name"] = "renamed"  # the records would change: the replay refuses
    (tmp_path / "edited.lock.json").write_text(json.dumps(lock))
    code, err = _mix(capsys, "--lock", str(tmp_path / "edited.lock.json"), "--out", str(tmp_path / "n.jsonl"))
    assert code == 2 and "differ from the locked ones" in err and not (tmp_path / "n.jsonl").exists()
    lock["sources"][0]["take"][0]["rows"] = "3-1"
    (tmp_path / "bad.lock.json").write_text(json.dumps(lock))
    code, err = _mix(capsys, "--lock", str(tmp_path / "bad.lock.json"), "--out", str(tmp_path / "n.jsonl"))
    assert code == 2 and "bad row range" in err
    code, err = _mix(capsys, "--lock", str(tmp_path / "o.jsonl.lock.json"), "--out", str(tmp_path / "a.jsonl"))
    assert code == 2 and "would overwrite" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("n.")] == []


def test_json_output_has_the_record_writer_framing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records = [_record(i) for i in range(3)]
    _jsonl(tmp_path / "a.jsonl", records)
    for suffix in (".json", ".jsonl"):
        recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n    name: a\n")
        assert _mix(capsys, str(recipe), "--out", str(tmp_path / f"o{suffix}"))[0] == 0
        write_records(tmp_path / f"ref{suffix}", [{**r, "source": "a"} for r in records])
        assert (tmp_path / f"o{suffix}").read_bytes() == (tmp_path / f"ref{suffix}").read_bytes()
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: first:0\n")
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "empty.json"))[0] == 0
    assert (tmp_path / "empty.json").read_text() == "[\n]\n"


# ---- bad recipes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, words", [
    ("datasets:\n  - json_path: a.jsonl\n  - json_path: missing.json\n    sampling_strategy: all\n", 3,
     "missing.json: not found"),
    ("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: frist:10\n", 3, "'frist:10' is not one of"),
    ("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: 10%\n", 3, "LLaVA-NeXT would take every row"),
    ("datasets:\n  - json_path: a.jsonl\n    sampling_stratgy: all\n", 3, "unknown key 'sampling_stratgy'"),
    ("datasets:\n  - json_path: a.jsonl\n    count: -3\n", 3, "count must be a whole number"),
    ("datasets:\n  - json_path: a.jsonl\n    image_root: nowhere\n", 3, "image_root"),
    ("datasets:\n  - json_path: a.txt\n", 2, "expected .json, .jsonl, .parquet"),
    ("datasets:\n  - sampling_strategy: all\n", 2, "has no json_path"),
    ("datasets:\n  - json_path: a.jsonl\n    name: x\n  - json_path: a.jsonl\n    name: x\n", 5, "name 'x' is used"),
    ("datasets:\n  - json_path: a.jsonl\n  sampling_strategy: all\n", 3, "not valid YAML"),  # mis-indented
    ("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: [all\n", 4, "not valid YAML"),
    ("dedup: yes please\ndatasets:\n  - json_path: a.jsonl\n", 1, "dedup must be one of"),
    ("exclude_images_of:\n  - bench/missing.jsonl\ndatasets:\n  - json_path: a.jsonl\n", 2, "not found"),
    ("phash_distance: 40\ndatasets:\n  - json_path: a.jsonl\n", 1, "phash_distance must be"),
    ("datasets: []\n", 1, "non-empty list"),
    ("seed: 1\n", 1, "no `datasets:` list"),
])
def test_a_bad_recipe_is_one_line_with_its_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture, text: str,
                                                         line: int, words: str) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(4)])
    (tmp_path / "a.txt").write_text("x\n")
    recipe = _recipe(tmp_path / "recipe.yaml", text)
    out = tmp_path / "o.jsonl"
    out.write_text("an earlier mixture\n")
    code, err = _mix(capsys, str(recipe), "--out", str(out))
    assert code == 2 and err.startswith(f"visinstruct: error: {recipe}:{line}: ") and words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out.read_text() == "an earlier mixture\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.txt", "o.jsonl", "recipe.yaml"]


def test_cli_errors_in_a_subprocess_and_a_missing_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(0)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: first:x\n")
    result = run_cli("mix", str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2 and f"{recipe}:3:" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.lock.json").exists()
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "pip install 'visinstruct[filter]'" in err
    monkeypatch.undo()
    code, err = _mix(capsys, "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "a recipe or --lock" in err
    bad_source = _jsonl(tmp_path / "b.jsonl", [_record(0)])
    bad_source.write_text(bad_source.read_text() + '{"id": "broken"\n')
    recipe = _recipe(tmp_path / "r2.yaml", "datasets:\n  - json_path: b.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and f"{bad_source}:2: not valid JSON" in err and not (tmp_path / "o.jsonl").exists()


def test_output_that_is_an_input_or_not_json_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(0)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "a.jsonl"))
    assert code == 2 and "would overwrite" in err
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.parquet"))
    assert code == 2 and "expected a .json or .jsonl file" in err
    (tmp_path / "shards").mkdir()
    _jsonl(tmp_path / "shards" / "part-0.jsonl", [_record(1)])
    _jsonl(tmp_path / "shards" / "part-1.jsonl", [_record(2)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: shards\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "shards" / "part-1.jsonl"))
    assert code == 2 and "would overwrite file 1 of source 'shards'" in err
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "shards" / "mix.jsonl"))
    assert code == 2 and "inside the folder of source 'shards'" in err
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["part-0.jsonl", "part-1.jsonl"]


def test_dry_run_counts_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(i) for i in range(40)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: a.jsonl\n    sampling_strategy: first:25%\n"
                                          "  - json_path: a.jsonl\n    name: b\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"), "--dry-run", "--report",
                     str(tmp_path / "rep.json"))
    assert code == 0 and "would write 50 records" in err
    report = json.loads((tmp_path / "rep.json").read_text())
    assert [(s["name"], s["rows"], s["selected"]) for s in report["sources"]] == [("a", 40, 10), ("b", 40, 40)]
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.lock.json").exists()


# ---- images: one folder, exclusion, dedup ---------------------------------------------------------------

def _picture(path: Path, seed: int, size: tuple[int, int] = (256, 192), quality: int = 95) -> Path:
    """A smooth random picture (an 8x6 grid of colours upscaled): distinct pictures are far apart in phash."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    small.resize((256, 192), Image.BICUBIC).resize(size, Image.BICUBIC).save(path, quality=quality)
    return path


def test_image_paths_move_into_the_mixture_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "data" / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    _jsonl(tmp_path / "coco.jsonl", [_record(0, image="train2017/1.jpg"), _record(1, image=["a.jpg", "b.jpg"]),
                                     _record(2)])
    recipe = _recipe(tmp_path / "r.yaml", "image_root: data\ndatasets:\n  - json_path: coco.jsonl\n"
                                          "    image_root: data/coco\n")
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))[0] == 0
    got = read_records(tmp_path / "o.jsonl")
    assert [r.get("image") for r in got] == ["coco/train2017/1.jpg", ["coco/a.jpg", "coco/b.jpg"], None]
    lock = json.loads((tmp_path / "o.jsonl.lock.json").read_text())
    assert lock["sources"][0]["image_prefix"] == "coco/"
    recipe = _recipe(tmp_path / "r.yaml", "image_root: data\ndatasets:\n  - json_path: coco.jsonl\n"
                                          "    image_root: elsewhere\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o2.jsonl"))
    assert code == 2 and "r.yaml:3: image_root" in err and "not inside" in err


def test_phash_index_finds_near_hashes() -> None:
    index = PhashIndex([0b1011 << 40, 12345], 4)
    assert index.near((0b1011 << 40) ^ 0b1111) and not index.near((0b1011 << 40) ^ 0b11111)
    assert PhashIndex([7], 0).near(7) and not PhashIndex([7], 0).near(6) and not PhashIndex([], 3).near(0)


def test_exclude_images_by_path_and_by_perceptual_hash(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "images"
    for k in range(6):
        _picture(images / f"{k}.jpg", k)
    bench = tmp_path / "bench"
    _picture(bench / "val" / "copy-of-1.jpg", 1, size=(200, 150), quality=60)  # re-encoded and resized
    _picture(bench / "val" / "other.jpg", 99)
    _jsonl(tmp_path / "bench.jsonl", [_record(0, image="val/copy-of-1.jpg"), _record(1, image="3.jpg"),
                                      _record(2, image="val/other.jpg")])
    _jsonl(tmp_path / "train.jsonl", [_record(k, image=f"{k}.jpg") for k in range(6)] + [_record(9)])
    base = "image_root: images\ndatasets:\n  - json_path: train.jsonl\n"
    cases = {  # the benchmark's `3.jpg` is the same path as train's 3.jpg; copy-of-1 looks like 1.jpg
        "both": ("exclude_images_of:\n  - path: bench.jsonl\n    image_root: bench\n", {"r1", "r3"}),
        "path": ("image_match: path\nexclude_images_of:\n  - path: bench.jsonl\n    image_root: bench\n", {"r3"}),
        "folder": ("exclude_images_of:\n  - bench/val\n", {"r1"}),
    }
    for label, (extra, dropped) in cases.items():
        recipe = _recipe(tmp_path / f"{label}.yaml", base + extra)
        out = tmp_path / f"{label}.jsonl"
        code, err = _mix(capsys, str(recipe), "--out", str(out), "--report", str(tmp_path / f"{label}.report.json"))
        assert code == 0, err
        assert set(_ids(out)) == {f"r{k}" for k in (0, 1, 2, 3, 4, 5, 9)} - dropped, label
        report = json.loads((tmp_path / f"{label}.report.json").read_text())
        assert report["sources"][0]["excluded"] == len(dropped)
        assert report["steps"]["exclude_images"]["rejected_by_reason"] == {"excluded_image": len(dropped)}
        lock = json.loads(Path(f"{out}.lock.json").read_text())
        kept = sorted(int(i[1:]) for i in _ids(out) if i != "r9")
        assert lock["sources"][0]["take"][0]["rows"] == Rows.from_indices(np.array([*kept, 6])).to_text()


def test_dedup_text_image_both_across_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "img"
    for k in range(4):
        _picture(images / f"{k}.jpg", 10 + k)
    _picture(images / "recoded-2.jpg", 12, size=(300, 225), quality=55)
    same_answer = "A red double-decker bus waits at the stop while people board it."
    first = [_record(0, image="0.jpg", answer=same_answer), _record(1, image="1.jpg"), _record(2, image="2.jpg"),
             _record(3, answer="A text-only answer."), _record(3, answer="A text-only answer.")]
    second = [
        {**_record(0, image="0.jpg", answer=same_answer), "id": "s-same-row"},        # text + image repeat
        {**_record(0, image="3.jpg", answer=same_answer), "id": "s-same-text"},       # same text, other image
        {**_record(7, image="1.jpg"), "id": "s-same-image"},                          # same image, other text
        {**_record(8, image="recoded-2.jpg"), "id": "s-recoded-image"},               # 2.jpg re-encoded
        {**_record(2, image="recoded-2.jpg"), "id": "s-recoded-row"},                 # row 2 on its copy
        {**_record(3, answer="A text-only answer."), "id": "s-text-only"},            # no image, same text
        {**_record(9, image="3.jpg"), "id": "s-new"},
        {**_record(9, image="3.jpg"), "id": "s-new-again"},                           # repeat inside a source
    ]
    _jsonl(tmp_path / "first.jsonl", first)
    _jsonl(tmp_path / "second.jsonl", second)
    expect = {
        ("text", "both"): {"s-same-row", "s-same-text", "s-recoded-row", "s-text-only"},
        ("image", "both"): {"s-same-row", "s-same-image", "s-recoded-image", "s-recoded-row"},
        ("image", "path"): {"s-same-row", "s-same-image"},
        ("both", "both"): {"s-same-row", "s-recoded-row", "s-text-only"},
        ("both", "path"): {"s-same-row", "s-text-only"},
    }
    for (mode, match), dropped in expect.items():
        recipe = _recipe(tmp_path / "r.yaml", f"image_root: img\ndedup: {mode}\nimage_match: {match}\n"
                                              "datasets:\n  - json_path: first.jsonl\n  - json_path: second.jsonl\n")
        out = tmp_path / f"{mode}-{match}.jsonl"
        code, err = _mix(capsys, str(recipe), "--out", str(out))
        assert code == 0, err
        ids = _ids(out)
        assert ids[:5] == ["r0", "r1", "r2", "r3", "r3"], (mode, match)  # the first source is untouched
        assert set(ids[5:]) == {r["id"] for r in second} - dropped, (mode, match)


def test_missing_images_are_counted_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "img").mkdir()
    _picture(tmp_path / "img" / "0.jpg", 0)
    _jsonl(tmp_path / "a.jsonl", [_record(0, image="0.jpg"), _record(1, image="gone.jpg"),
                                  _record(2, image="../outside.jpg")])
    _jsonl(tmp_path / "b.jsonl", [_record(5, image="0.jpg")])
    recipe = _recipe(tmp_path / "r.yaml", "image_root: img\ndedup: image\nimage_match: phash\n"
                                          "datasets:\n  - json_path: a.jsonl\n  - json_path: b.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 0 and "could not be read for hashing" in err and ": 2" in err, err
    assert _ids(tmp_path / "o.jsonl") == ["r0", "r1", "r2"]


def test_perceptual_matching_needs_the_filter_extra_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    _jsonl(tmp_path / "a.jsonl", [_record(0, image="0.jpg")])
    _jsonl(tmp_path / "b.jsonl", [_record(1, image="0.jpg")])
    monkeypatch.setitem(sys.modules, "imagehash", None)
    recipe = _recipe(tmp_path / "r.yaml", "dedup: image\ndatasets:\n  - json_path: a.jsonl\n  - json_path: b.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 2 and "pip install 'visinstruct[filter]'" in err and "imagehash" in err
    assert not (tmp_path / "o.jsonl").exists()
    recipe = _recipe(tmp_path / "r.yaml", "dedup: image\nimage_match: path\n"
                                          "datasets:\n  - json_path: a.jsonl\n  - json_path: b.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "o.jsonl"))
    assert code == 2 and "name the same path" in err
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))[0] == 0
    assert _ids(tmp_path / "o.jsonl") == ["r0"]


# ---- a Hugging Face dataset folder as the output -------------------------------------------------------

def _folder_sources(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A mixture image folder data/ (coco/*.jpg, vg/*.png) and three sources: a jsonl on coco, a parquet
    folder on vg, a text-only json list; returns the recipe (12 rows) and the image bytes by mixture path."""
    pictures = {}
    for k in range(8):
        for folder, fmt, ext in (("coco", "JPEG", "jpg"), ("vg", "PNG", "png")):
            path = tmp_path / "data" / folder / f"{k}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (12 + k, 9 + 2 * k), (30 * k, 90, 200 - 20 * k)).save(path, fmt)
            pictures[f"{folder}/{k}.{ext}"] = path.read_bytes()
    _jsonl(tmp_path / "coco.jsonl", [_record(k, image=f"{k}.jpg", source="coco2014-val", lang="en")
                                     for k in range(8)])
    _parquet(tmp_path / "vg" / "train-00000-of-00001.parquet",
             [_record(100 + k, image=f"{k}.png", task="detail") for k in range(8)])
    _json(tmp_path / "text.json", [_record(200 + k, lang="ru") for k in range(3)])
    recipe = _recipe(tmp_path / "mix.yaml", "image_root: data\nseed: 3\ndatasets:\n"
                                            "  - json_path: coco.jsonl\n    image_root: data/coco\n"
                                            "    sampling_strategy: random:5\n"
                                            "  - json_path: vg\n    image_root: data/vg\n    sampling_strategy: end:4\n"
                                            "  - json_path: text.json\n")
    return recipe, pictures


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_output_loads_offline_with_images_and_provenance(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from test_hf_folder import card_header, load_offline, sha

    recipe, pictures = _folder_sources(tmp_path)
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "o.jsonl"))
    assert code == 0, err
    records = read_records(tmp_path / "o.jsonl")
    out = tmp_path / "hf"
    code, err = _mix(capsys, str(recipe), "--out", str(out), "--shard-rows", "5")
    assert code == 0 and "wrote 12 records" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]
    shards = sorted((out / "data").iterdir())
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in shards] == [5, 5, 2]

    loaded = load_offline(out, tmp_path / "cache")
    assert loaded["features"] == {"train": "Image(mode=None, decode=True)"}
    rows = loaded["splits"]["train"]
    assert [row["id"] for row in rows] == [r["id"] for r in records] and len(rows) == 12
    assert [row["source"] for row in rows] == ["coco"] * 5 + ["vg"] * 4 + ["text"] * 3
    for row, record in zip(rows, records, strict=True):
        for key in ("conversations", "source", "source_original", "lang", "task"):
            assert row[key] == record.get(key), key
        if "image" in record:  # coco/3.jpg in the mixture: the bytes of data/coco/3.jpg
            assert row["image_sha"] == [sha(pictures[record["image"]])]
            assert row["sizes"] == [list(Image.open(tmp_path / "data" / record["image"]).size)]
        else:
            assert row["image_sha"] is None
    head = card_header(out)
    assert {"name": "source", "dtype": "string"} in head["dataset_info"]["features"]
    assert head["dataset_info"]["splits"][0]["num_examples"] == 12 and head["language"] == ["en", "ru"]
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "\n---\n\n# mix\n" in body and "`visinstruct mix` from the recipe `mix.yaml`" in body
    assert "| coco | 5 | 41.7% |" in body and "| text | 3 | 25.0% |" in body
    # the lock beside the folder is the .jsonl's lock plus the images' SHA-256
    lock = json.loads((tmp_path / "hf.lock.json").read_text())
    assert {k: v for k, v in lock.items() if k != "images_sha256"} == json.loads(
        (tmp_path / "o.jsonl.lock.json").read_text())
    assert lock["sources"][0]["image_root"] == str(tmp_path / "data") and len(lock["images_sha256"]) == 64


def test_folder_replays_byte_for_byte_and_refuses_changed_images(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    recipe, pictures = _folder_sources(tmp_path)
    _jsonl(tmp_path / "multi.jsonl", [_record(300, image=["coco/0.jpg", "vg/1.png"]), _record(301, image="vg/2.png")])
    recipe.write_text(recipe.read_text() + "  - json_path: multi.jsonl\n")
    folders = [tmp_path / name / "mix" for name in ("made", "again", "third", "from-jsonl")]
    code, err = _mix(capsys, str(recipe), "--out", str(folders[0]), "--shard-bytes", "1KB")
    assert code == 0, err
    lock = folders[0].parent / "mix.lock.json"
    for folder in folders[1:3]:  # the lock replayed twice
        code, err = _mix(capsys, "--lock", str(lock), "--out", str(folder), "--shard-bytes", "1KB")
        assert code == 0, err
    assert _mix(capsys, str(recipe), "--out", str(tmp_path / "m.jsonl"))[0] == 0
    code, err = _mix(capsys, "--lock", str(tmp_path / "m.jsonl.lock.json"), "--out", str(folders[3]),
                     "--shard-bytes", "1KB")
    assert code == 0, err
    made = _files(folders[0])
    assert len([name for name in made if name.startswith("data/train-")]) > 3
    for folder in folders[1:]:
        assert _files(folder) == made, folder
        assert (folder.parent / "mix.lock.json").read_bytes() == lock.read_bytes()
    cells = [cell for name in sorted(made) if name.startswith("data/")
             for cell in pq.read_table(folders[0] / name).column("image").to_pylist()]
    assert [None if cell is None else [image["bytes"] for image in cell] for cell in cells][-5:] == [
        None, None, None, [pictures["coco/0.jpg"], pictures["vg/1.png"]], [pictures["vg/2.png"]]]

    Image.new("RGB", (9, 9), (1, 2, 3)).save(tmp_path / "data" / "vg" / "1.png")  # an image changed since
    target = tmp_path / "changed" / "mix"
    code, err = _mix(capsys, "--lock", str(lock), "--out", str(target), "--shard-bytes", "1KB")
    assert code == 2 and "the images differ from the ones the lock was written with" in err and err.count("\n") == 1
    assert not target.parent.exists() or not list(target.parent.iterdir())
    old = json.loads(lock.read_text())  # a lock without image_root cannot say where the images are
    for source in old["sources"]:
        del source["image_root"]
    (tmp_path / "old.lock.json").write_text(json.dumps(old))
    code, err = _mix(capsys, "--lock", str(tmp_path / "old.lock.json"), "--out", str(tmp_path / "old"))
    assert code == 2 and "has no image_root" in err and not (tmp_path / "old").exists()
    assert _mix(capsys, "--lock", str(tmp_path / "old.lock.json"), "--out", str(tmp_path / "old.jsonl"))[0] == 0


@pytest.mark.parametrize("flags", [[], ["--shard-rows", "2"]])
def test_folder_with_a_missing_or_bad_image_leaves_the_output_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        flags: list[str]) -> None:
    recipe, _ = _folder_sources(tmp_path)
    out = tmp_path / "hf"
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("an earlier mixture")
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"an earlier shard")
    (tmp_path / "hf.lock.json").write_text("an earlier lock")
    before = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / "data" / "vg" / "6.png").unlink()  # row 6 of the vg source (end:4 takes rows 4-7)
    code, err = _mix(capsys, str(recipe), "--out", str(out), *flags)
    shard = tmp_path / "vg" / "train-00000-of-00001.parquet"
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{shard}: row 6 (id 'r106'): cannot read image {tmp_path / 'data' / 'vg' / '6.png'}" in err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]
    assert (out / "data" / "train-00000-of-00001.parquet").read_bytes() == b"an earlier shard"
    assert (tmp_path / "hf.lock.json").read_text() == "an earlier lock"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary folder left beside
    (tmp_path / "data" / "vg" / "6.png").write_bytes(b"not an image at all")
    code, err = _mix(capsys, str(recipe), "--out", str(out), *flags)
    assert code == 2 and f"{shard}: row 6 (id 'r106'): " in err and "6.png is not a known image format" in err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_folder_output_paths_and_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recipe, _ = _folder_sources(tmp_path)
    (tmp_path / "plain").write_text("a file without a suffix")
    cases = [(["--out", str(tmp_path / "o.parquet")], "or a folder for parquet shards"),
             (["--out", str(tmp_path / "plain")], "or a folder for parquet shards"),
             (["--out", str(tmp_path / "o.jsonl"), "--shard-rows", "3"], "apply to a folder output"),
             (["--out", str(tmp_path / "data")], "would overwrite the recipe's image_root"),
             (["--out", str(tmp_path / "data" / "x")], None),  # inside the image folder, holding nothing: fine
             (["--out", str(tmp_path)], "would be replaced whole"),
             (["--out", str(tmp_path / "mine")], "other files than a dataset folder"),
             (["--out", str(tmp_path / "again")], None), (["--out", str(tmp_path / "again")], None),  # replaced
             (["--out", "."], "not '.' or '..'")]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for args, words in cases:
        code, err = _mix(capsys, str(recipe), *args)
        assert (code, words is None or words in err) == (2 if words else 0, True), (args, err)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "dry"), "--dry-run")
    assert code == 0 and "would write 12 records" in err and not (tmp_path / "dry").exists()
    empty = _recipe(tmp_path / "empty.yaml", "datasets:\n  - json_path: text.json\n    sampling_strategy: first:0\n")
    code, err = _mix(capsys, str(empty), "--out", str(tmp_path / "empty"))
    assert code == 2 and "the mixture has no records" in err and not (tmp_path / "empty").exists()
    assert not (tmp_path / "empty.lock.json").exists()


def test_folder_row_groups_stay_small(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The writer streams: a row group ends at 1,000 rows or 8 MiB of images, whatever the shard holds."""
    import random as stdlib_random

    (tmp_path / "img").mkdir()
    for k in range(4):  # noise PNGs of ~3 MiB: three of them pass 8 MiB
        noise = stdlib_random.Random(k).randbytes(1024 * 1024 * 3)
        Image.frombytes("RGB", (1024, 1024), noise).save(tmp_path / "img" / f"{k}.png", compress_level=0)
    _jsonl(tmp_path / "big.jsonl", [_record(k, image=f"{k}.png") for k in range(4)])
    _jsonl(tmp_path / "text.jsonl", [_record(10 + k) for k in range(2500)])
    recipe = _recipe(tmp_path / "r.yaml", "datasets:\n  - json_path: big.jsonl\n    image_root: img\n"
                                          "  - json_path: text.jsonl\n")
    code, err = _mix(capsys, str(recipe), "--out", str(tmp_path / "hf"), "--shard-bytes", "1GB")
    assert code == 0, err
    meta = pq.ParquetFile(tmp_path / "hf" / "data" / "train-00000-of-00001.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [3, 1000, 1000, 501]
