"""`visinstruct check`: one planted problem of each kind for each target is found with the severity that
target gives it; clean files pass; --fix output passes a re-check; bad input is one line, exit 2."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from visinstruct.cli import main

TARGETS = ("llava", "llava-next", "llama-factory", "ms-swift")
B, W = "blocking", "warning"
ALL_B = dict.fromkeys(TARGETS, B)
# What each trainer does with each kind (README, `visinstruct check`), written out independently of the code.
EXPECTED: dict[str, dict[str, str]] = {
    "file_format": {"llava": B, "llava-next": W},  # a .jsonl input
    "not_a_record": ALL_B,
    "layout": ALL_B,
    "bad_turn": ALL_B,
    "bad_role": ALL_B,
    "first_turn": {"llava": W, "llava-next": W, "llama-factory": B, "ms-swift": W},
    "alternation": {"llava": B, "llava-next": B, "llama-factory": B, "ms-swift": W},
    "last_turn": {"llava": B, "llava-next": B, "llama-factory": B, "ms-swift": W},
    "empty_value": {"llava": B, "llava-next": B, "llama-factory": W, "ms-swift": W},
    "image_field": ALL_B,
    "image_token_count": ALL_B,
    "image_untagged": {"llava": W, "llava-next": W, "ms-swift": W},
    "image_position": {"llava": W, "llava-next": W},
    "image_outside_root": ALL_B,
    "image_missing": ALL_B,
    "image_undecodable": ALL_B,
    "too_long": {"llava": W, "llava-next": W, "llama-factory": W, "ms-swift": B},
    "box_convention": {"llava": W, "llava-next": W},
    "box_mixed": dict.fromkeys(TARGETS, W),
}
FILE_LEVEL = ("file_format", "box_mixed")
PLANTED = 2  # the index of the planted record among five


def _images(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    Image.new("RGB", (64, 64), (200, 0, 0)).save(root / "red.png")
    Image.new("RGB", (200, 100), (0, 0, 200)).save(root / "wide.png")
    (root / "broken.png").write_bytes(b"not an image at all")
    return root


def _record(n: int, messages: bool) -> dict[str, Any]:
    """A clean record in LLaVA's layout, or in the messages layout (ms-swift, LLaMA-Factory's mllm_demo)."""
    pairs = [("<image>\nWhat colour is the square?", "It is red [0.1, 0.2, 0.5, 0.6]."),
             ("Is it large?", "No, it is small.")]
    if messages:
        turns = [{"role": r, "content": t} for q, a in pairs for r, t in (("user", q), ("assistant", a))]
        return {"id": f"r{n}", "messages": turns, "images": ["red.png"]}
    turns = [{"from": r, "value": t} for q, a in pairs for r, t in (("human", q), ("gpt", a))]
    return {"id": f"r{n}", "image": "red.png", "conversations": turns}


def _parts(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str, dict[str, str]]:
    """The turns, role key, text key and role names of a record of either layout."""
    if "messages" in record:
        return record["messages"], "role", "content", {"user": "user", "assistant": "assistant"}
    return record["conversations"], "from", "value", {"user": "human", "assistant": "gpt"}


def _turn(record: dict[str, Any], role: str, text: str) -> dict[str, str]:
    _, role_key, text_key, names = _parts(record)
    return {role_key: names[role], text_key: text}


def _set_text(n: int, text: str) -> Callable[[dict], Any]:
    def plant(record: dict) -> dict:
        turns, _, key, _ = _parts(record)
        turns[n][key] = text
        return record
    return plant


def _set_image(value: Any) -> Callable[[dict], Any]:
    def plant(record: dict) -> dict:
        if "images" in record:
            record["images"] = [value]
        else:
            record["image"] = value
        return record
    return plant


def _insert(at: int | None, role: str, text: str) -> Callable[[dict], Any]:
    def plant(record: dict) -> dict:
        turns = _parts(record)[0]
        turns.insert(len(turns) if at is None else at, _turn(record, role, text))
        return record
    return plant


def _container(value: Any) -> Callable[[dict], Any]:
    def plant(record: dict) -> dict:
        record["messages" if "messages" in record else "conversations"] = value
        return record
    return plant


def _bad_role(record: dict) -> dict:
    turns, role_key, _, _ = _parts(record)
    turns[1][role_key] = "narrator"
    return record


PLANTS: dict[str, Callable[[dict], Any]] = {
    "not_a_record": lambda record: [1, 2],
    "layout": _container("What colour is the square?"),
    "bad_turn": _set_text(1, None),
    "bad_role": _bad_role,
    "first_turn": _insert(0, "assistant", "Hello."),
    "alternation": _insert(2, "user", "And its shape?"),
    "last_turn": _insert(None, "user", "Anything else?"),
    "empty_value": _set_text(3, "  \n "),
    "image_field": _set_image(5),
    "image_token_count": _set_text(2, "<image>\nIs it large?"),
    "image_untagged": _set_text(0, "What colour is the square?"),
    "image_position": _set_text(0, "What colour is the square?\n<image>"),
    "image_outside_root": _set_image("../red.png"),
    "image_missing": _set_image("gone.png"),
    "image_undecodable": _set_image("broken.png"),
    "too_long": _set_text(1, "It is red. " * 4000),
    "box_convention": _set_text(1, "It is red (100,200),(500,600)."),
    "box_mixed": _set_text(1, "It is red [12, 30, 1500, 900]."),
    "file_format": lambda record: record,  # the file is written as .jsonl instead
}
CASES = [(target, kind) for kind, severities in EXPECTED.items() for target in severities]


def _write(path: Path, records: list[Any]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records))
    return path


def _check(capsys: pytest.CaptureFixture, path: Path, target: str, *flags: str) -> tuple[int, dict, str]:
    report = path.with_name(path.name + ".report.json")
    code = main(["check", str(path), "--target", target, "--report", str(report), *flags])
    return code, json.loads(report.read_text()), capsys.readouterr().err


def _flags(root: Path) -> list[str]:
    return ["--image-root", str(root), "--max-tokens", "4000"]


@pytest.mark.parametrize("target", TARGETS)
def test_a_clean_file_passes(tmp_path: Path, capsys: pytest.CaptureFixture, target: str) -> None:
    root = _images(tmp_path / "img")
    path = _write(tmp_path / "clean.json", [_record(n, target == "ms-swift") for n in range(5)])
    code, report, err = _check(capsys, path, target, *_flags(root))
    assert code == 0 and report["problems"] == [] and report["exit_status"] == 0, err
    assert report["records"] == 5 and report["boxes"] == {"norm1": 5}
    assert "0 blocking problems" in err and "0 warnings" in err


@pytest.mark.parametrize("target, kind", CASES)
def test_each_planted_problem_is_found(tmp_path: Path, capsys: pytest.CaptureFixture, target: str,
                                       kind: str) -> None:
    root = _images(tmp_path / "img")
    records = [_record(n, target == "ms-swift") for n in range(5)]
    records[PLANTED] = PLANTS[kind](copy.deepcopy(records[PLANTED]))
    path = _write(tmp_path / ("data.jsonl" if kind == "file_format" else "data.json"), records)
    code, report, err = _check(capsys, path, target, *_flags(root))
    found = [p for p in report["problems"] if p["kind"] == kind]
    assert len(found) == 1, report["problems"]
    index = None if kind in FILE_LEVEL else PLANTED
    assert found[0]["index"] == index and found[0]["severity"] == EXPECTED[kind][target]
    if index is not None:
        assert found[0]["id"] == (None if kind == "not_a_record" else f"r{PLANTED}")
        assert found[0]["where"] in (f"{path}: record {PLANTED}", f"{path}:{PLANTED + 1}")
    assert all(p["index"] in (PLANTED, None) for p in report["problems"]), report["problems"]
    blocking = any(p["severity"] == B for p in report["problems"])
    assert code == report["exit_status"] == (1 if blocking else 0)
    assert kind in err and report["by_kind"][kind]["count"] == 1 and report["by_kind"][kind]["why"]


def test_the_table_covers_every_kind() -> None:
    from visinstruct.check.targets import KINDS
    from visinstruct.check.targets import TARGETS as RULES

    assert set(EXPECTED) == set(KINDS) == set(PLANTS)
    for name, target in RULES.items():
        assert {k for k in KINDS if target.applies(k)} == {k for k in KINDS if name in EXPECTED[k]}, name


def test_llava_cases_in_detail(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What each message says, for the cases where the loaders differ most."""
    root = _images(tmp_path / "img")
    records = [_record(0, False), _record(1, True), _record(2, False), _record(3, False), _record(4, False)]
    records[2]["image"] = ["red.png", "red.png"]
    records[2]["conversations"][2]["value"] = "<image>\nIs it large?"
    records[3]["conversations"][0]["value"] = "<image> <image>\nWhat colour?"
    records[4]["image"] = "wide.png"  # 200 x 100: y = 0.2 lies in the padding band (0.25 each side)
    code, report, _ = _check(capsys, _write(tmp_path / "d.json", records), "llava", "--image-root", str(root))
    got = {(p["index"], p["kind"]): p["detail"] for p in report["problems"]}
    assert "the turns are under 'messages'" in got[(1, "layout")]
    assert "a list of 2" in got[(2, "image_field")]
    assert "2 <image> tokens in turn 0: one is kept" in got[(3, "image_position")]
    assert "200x100" in got[(4, "box_convention")] and "square-padded" in got[(4, "box_convention")]
    assert code == 1
    # LLaVA-NeXT reads the list; two tokens in one turn are not collapsed there; no padded frame expected
    code, report, _ = _check(capsys, tmp_path / "d.json", "llava-next", "--image-root", str(root))
    got = {(p["index"], p["kind"]): p["detail"] for p in report["problems"]}
    assert (2, "image_field") not in got and (4, "box_convention") not in got
    assert got[(3, "image_token_count")] == "2 <image> tokens for 1 image"


def test_llama_factory_reads_one_layout_per_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path / "mixed.jsonl", [_record(0, True), _record(1, False), _record(2, True)])
    code, report, err = _check(capsys, path, "llama-factory")
    assert code == 1 and [(p["index"], p["kind"]) for p in report["problems"]] == [(1, "layout")]
    assert report["dataset_info"] == {"mixed": {
        "file_name": "mixed.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}
    assert "dataset_info.json entry" in err and "images: not checked" in err
    code, report, _ = _check(capsys, _write(tmp_path / "llava.json", [_record(0, False)]), "llama-factory")
    assert code == 0 and report["dataset_info"]["llava"]["columns"] == {"messages": "conversations",
                                                                         "images": "image"}


def test_a_symbolic_link_out_of_the_root_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _images(tmp_path / "img")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    os.symlink(outside, root / "link.png")
    os.symlink(root / "red.png", root / "inside.png")
    records = [_record(0, False), {**_record(1, False), "image": "link.png"},
               {**_record(2, False), "image": "inside.png"}]
    code, report, _ = _check(capsys, _write(tmp_path / "d.json", records), "llava", "--image-root", str(root))
    assert [(p["index"], p["kind"]) for p in report["problems"]] == [(1, "image_outside_root")] and code == 1


def test_text_only_rows_and_system_turns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}
    tagged = {"id": "u", "conversations": [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hey."}]}
    system = {"id": "s", "image": "red.png", "conversations": [{"from": "system", "value": "Be brief."},
                                                               *_record(0, False)["conversations"]]}
    null = {**text_only, "id": "n", "image": None}
    path = _write(tmp_path / "d.json", [text_only, tagged, system, null])
    code, report, _ = _check(capsys, path, "llava")
    assert [(p["index"], p["kind"]) for p in report["problems"]] == [
        (1, "image_token_count"), (2, "bad_role"), (3, "image_field")] and code == 1
    code, report, _ = _check(capsys, path, "ms-swift")  # a leading system turn and "image": null are fine there
    assert [(p["index"], p["kind"]) for p in report["problems"]] == [(1, "image_token_count")]


def test_tokenizer_counts_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "red": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    record = _record(0, False)
    record["conversations"][1]["value"] = "a" * 400  # one word: ~101 tokens estimated, 1 token counted (20 in all)
    path = _write(tmp_path / "d.json", [record])
    code, report, _ = _check(capsys, path, "llava", "--max-tokens", "50", "--image-tokens", "0")
    assert code == 0 and report["problems"][0]["kind"] == "too_long"
    assert report["problems"][0]["detail"].startswith("~1") and report["tokens"].startswith("estimated")
    code, report, _ = _check(capsys, path, "llava", "--max-tokens", "50", "--image-tokens", "0",
                             "--tokenizer", str(tmp_path))
    assert code == 0 and report["problems"] == [] and report["tokens"] == f"tokenizer {tmp_path}"
    code, report, _ = _check(capsys, path, "llava", "--max-tokens", "5", "--image-tokens", "0",
                             "--tokenizer", str(tmp_path / "tokenizer.json"))
    assert report["problems"][0]["detail"] == "20 tokens (20 text) > --max-tokens 5"


FIXABLE = [
    ("untagged", lambda r: _set_text(0, "What colour is the square?")(r)),
    ("at the end", lambda r: _set_text(0, "What colour is the square?\n<image>")(r)),
    ("in turn 2", lambda r: _set_text(2, "<image>\nIs it large?")(_set_text(0, "What colour is the square?")(r))),
    ("trailing question", lambda r: _insert(None, "user", "Anything else?")(r)),
    ("opening answer", lambda r: _insert(0, "assistant", "Hello.")(r)),
    ("empty answer", lambda r: _set_text(3, " ")(r)),
    ("null image", lambda r: {k: v for k, v in _set_text(0, "Hi")(r).items()} | {"image": None}),
    ("one-element list", lambda r: _set_image(["red.png"])(r)),
]


def test_fix_writes_a_copy_that_passes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _images(tmp_path / "img")
    records = [_record(0, False)] + [plant(_record(n + 1, False)) for n, (_, plant) in enumerate(FIXABLE)]
    records.append({"id": "keep", "image": "gone.png", "conversations": _record(0, False)["conversations"]})
    source = _write(tmp_path / "d.jsonl", records)
    fixed = tmp_path / "fixed.json"
    code, report, err = _check(capsys, source, "llava", "--image-root", str(root), "--fix", str(fixed))
    assert code == 1 and report["fix"]["changed"] == len(FIXABLE) and report["fix"]["still_blocking"] == 1
    assert report["fix"]["fixes"] == {"image_token_added": 1, "image_token_moved": 2, "last_turn": 1,
                                      "first_turn": 1, "empty_value": 1, "image_field": 2}
    assert f"fix: wrote {fixed}" in err
    out = json.loads(fixed.read_text())
    clean = _record(0, False)["conversations"]
    first_turn = "<image>\nWhat colour is the square?"
    assert [r["conversations"][0]["value"] for r in out[1:4]] == [first_turn] * 3
    assert out[3]["conversations"][2]["value"] == "Is it large?"
    assert out[4]["conversations"] == clean and out[5]["conversations"] == clean
    assert out[6]["conversations"] == clean[:2]
    assert "image" not in out[7] and out[7]["conversations"][0]["value"] == "Hi"
    assert out[8]["image"] == "red.png"
    assert out[9] == records[9]
    out.pop()  # the record whose image is missing has no fix: the rest passes
    _write(fixed, out)
    code, report, _ = _check(capsys, fixed, "llava", "--image-root", str(root))
    assert code == 0 and report["problems"] == [], report["problems"]


def test_fix_adds_the_token_llama_factory_insists_on(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records = [_record(0, True), _set_text(0, "What colour is the square?")(_record(1, True))]
    source = _write(tmp_path / "m.jsonl", records)
    fixed = tmp_path / "fixed.jsonl"
    code, report, _ = _check(capsys, source, "llama-factory", "--fix", str(fixed))
    assert code == 1 and report["problems"][0]["kind"] == "image_token_count"
    code, report, _ = _check(capsys, fixed, "llama-factory")
    assert code == 0 and report["problems"] == []


def test_parquet_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_record(n, False) for n in range(3)]
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "train-00000-of-00001.parquet")
    code, report, _ = _check(capsys, folder, "llama-factory")
    assert code == 0 and report["records"] == 3 and report["problems"] == []
    code, report, _ = _check(capsys, folder, "llava")
    assert code == 1 and [p["kind"] for p in report["problems"]] == ["file_format"]


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ('{"id": "a", "conversations": []}\n{"id": \n', "d.jsonl:2: not valid JSON"),
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, content: str | None,
                                      message: str) -> None:
    path = tmp_path / "d.jsonl"
    if content is not None:
        path.write_text(content)
    report, fixed = tmp_path / "r.json", tmp_path / "f.jsonl"
    code = main(["check", str(path), "--target", "llava", "--report", str(report), "--fix", str(fixed)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["d.jsonl"])


@pytest.mark.parametrize("flags, message", [
    (["--fix", "{input}"], "would overwrite the input"),
    (["--fix", "{dir}/out.txt"], "expected a .json or .jsonl file"),
    (["--image-root", "{dir}/nowhere"], "--image-root is not a folder"),
    (["--max-tokens", "5", "--tokenizer", "{dir}/missing.json"], "names no tokenizer.json"),
    (["--tokenizer", "{dir}"], "give --max-tokens N too"),
])
def test_bad_options_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
                                         message: str) -> None:
    path = _write(tmp_path / "d.json", [_record(0, False)])
    args = [f.format(input=path, dir=tmp_path) for f in flags]
    code = main(["check", str(path), "--target", "llava", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json"]


def test_top_level_object_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"data": []}')
    assert main(["check", str(path), "--target", "ms-swift"]) == 2
    assert "not a JSON list of records" in capsys.readouterr().err
