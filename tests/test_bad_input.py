"""Bad input to `convert`, `validate`, `filter`, `pad-boxes`, `check`, `mix` and `audit`, as a user meets it.

Every refused case exits non-zero with one line on stderr naming the file, the record (line, row or index)
where there is one, and the problem; no traceback; and leaves every file where it was: no output, no
temporary file, inputs and a pre-existing output byte-for-byte as they were. A few cases are accepted and
handled instead (a UTF-8 byte order mark is skipped; a record with `"image": 5` is reported or rejected
with its reason). Each case writes its own input under tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import read_records, run_cli

OLD_OUTPUT = b'{"id": "made-by-an-earlier-run"}\n'
BOM = b"\xef\xbb\xbf"
TURNS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

Case = Callable[[Path], tuple[list[str], list[str]]]  # folder -> (CLI args, parts of the one error line)


# ---- inputs the cases write -----------------------------------------------------------------------------

def png(path: Path, shade: int = 0) -> Path:
    """A real 8 x 8 PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 100, 200)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def record(n: int, image: object = "img.png", answer: str = "A red bus parked by the road.", **extra: object) -> dict:
    """One valid LLaVA record (with `<image>` when it has an image)."""
    question = ("<image>\n" if image is not None else "") + f"What is in picture {n}?"
    row = {"id": f"r{n}", "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
           **extra}
    if image is not None:
        row["image"] = image
    return row


def jsonl(path: Path, rows: list[dict | bytes]) -> Path:
    """A .jsonl file: dicts dumped, bytes written as they are (one per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
                              for r in rows))
    return path


def json_list(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=1))
    return path


def llava_with_images(folder: Path, rows: list[dict], name: str = "in.jsonl") -> Path:
    """Records whose images lie in folder/img (img.png is always there)."""
    png(folder / "img" / "img.png")
    return jsonl(folder / name, rows)


def old_output(path: Path) -> Path:
    """An earlier run's output, which a refused run must leave untouched."""
    path.write_bytes(OLD_OUTPUT)
    return path


def old_folder(path: Path) -> Path:
    path.mkdir()
    (path / "previous.txt").write_bytes(OLD_OUTPUT)
    return path


def escaping_link(folder: Path) -> Path:
    """folder/img/link.png: a symbolic link under the image root to an image outside it."""
    secret = png(folder / "outside" / "secret.png", 7)
    png(folder / "img" / "img.png")
    os.symlink(os.path.relpath(secret, folder / "img"), folder / "img" / "link.png")
    return folder / "img"


def write_parquet(path: Path, columns: dict[str, list], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)
    return path


# ---- convert ---------------------------------------------------------------------------------------------

def convert_output_is_input_jsonl(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0)])
    return ["convert", str(src), str(src), "--to", "messages"], [str(src), "would overwrite the input"]


def convert_output_is_input_json(t: Path) -> tuple[list[str], list[str]]:
    src = json_list(t / "x.json", [record(0)])
    return ["convert", str(src), str(src), "--to", "messages"], [str(src), "would overwrite the input"]


def convert_output_is_input_via_symlink(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0)])
    os.symlink(src.name, t / "alias.jsonl")
    return ["convert", str(src), str(t / "alias.jsonl"), "--to", "messages"], ["would overwrite the input"]


def convert_parquet_folder_holds_input(t: Path) -> tuple[list[str], list[str]]:
    data = old_folder(t / "data")
    src = llava_with_images(data, [record(0)])
    return (["convert", str(src), str(data), "--to", "parquet", "--image-root", str(data / "img")],
            [str(data), "is a folder holding the input", str(src)])


def convert_wds_folder_holds_input(t: Path) -> tuple[list[str], list[str]]:
    src = llava_with_images(t, [record(0)])
    return (["convert", str(src), str(t), "--to", "wds", "--image-root", str(t / "img")],
            ["is a folder holding the input", str(src)])


def convert_wds_folder_holds_image_root(t: Path) -> tuple[list[str], list[str]]:
    out = old_folder(t / "ds")
    png(out / "images" / "img.png")
    src = jsonl(t / "in.jsonl", [record(0)])
    return (["convert", str(src), str(out), "--to", "wds", "--image-root", str(out / "images")],
            [str(out), "is a folder holding the input --image-root"])


def convert_report_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0)])
    return (["convert", str(src), str(old_output(t / "o.jsonl")), "--to", "messages", "--report", str(src)],
            [str(src), "--report would overwrite the input"])


def convert_symlink_out_of_root_parquet(t: Path) -> tuple[list[str], list[str]]:
    root = escaping_link(t)
    src = jsonl(t / "in.jsonl", [record(0), record(1, "link.png")])
    return (["convert", str(src), str(old_output(t / "out.parquet")), "--to", "parquet", "--image-root", str(root)],
            [f"{src}:2 (id 'r1')", "'link.png' escapes the image root through a symbolic link"])


def convert_symlink_out_of_root_wds(t: Path) -> tuple[list[str], list[str]]:
    root = escaping_link(t)
    src = jsonl(t / "in.jsonl", [record(0), record(1, "link.png")])
    return (["convert", str(src), str(old_folder(t / "wds")), "--to", "wds", "--image-root", str(root)],
            [f"{src}:2 (id 'r1')", "'link.png' escapes the image root through a symbolic link"])


def convert_non_image_bytes_parquet(t: Path) -> tuple[list[str], list[str]]:
    (t / "img").mkdir()
    (t / "img" / "note.png").write_bytes(b"hello, I am text")
    src = llava_with_images(t, [record(0), record(1, "note.png")])
    return (["convert", str(src), str(old_output(t / "out.parquet")), "--to", "parquet",
             "--image-root", str(t / "img")],
            [f"{src}:2 (id 'r1')", "note.png is not a known image format", "hello"])


def convert_empty_image_parquet(t: Path) -> tuple[list[str], list[str]]:
    (t / "img").mkdir()
    (t / "img" / "empty.jpg").write_bytes(b"")
    src = llava_with_images(t, [record(0), record(1, "empty.jpg")])
    return (["convert", str(src), str(old_output(t / "out.parquet")), "--to", "parquet",
             "--image-root", str(t / "img")],
            [f"{src}:2 (id 'r1')", "empty.jpg is not a known image format (an empty file)"])


def convert_empty_image_wds(t: Path) -> tuple[list[str], list[str]]:
    (t / "img").mkdir()
    (t / "img" / "empty.jpg").write_bytes(b"")
    src = llava_with_images(t, [record(0), record(1, "empty.jpg")])
    return (["convert", str(src), str(t / "wds"), "--to", "wds", "--image-root", str(t / "img")],
            [f"{src}:2 (id 'r1')", "empty.jpg is not a known image format (an empty file)"])


def convert_dotdot_to_wds_after_a_shard_was_opened(t: Path) -> tuple[list[str], list[str]]:
    png(t / "secret.png")
    rows = [record(n) for n in range(70)] + [record(70, "../secret.png")]
    src = llava_with_images(t, rows)
    return (["convert", str(src), str(old_folder(t / "wds")), "--to", "wds", "--image-root", str(t / "img"),
             "--shard-size", "25", "--workers", "2"],
            [f"{src}:71 (id 'r70')", "'../secret.png' escapes the image root"])


def convert_image_of_wrong_type_parquet(t: Path) -> tuple[list[str], list[str]]:
    src = llava_with_images(t, [record(0), record(1, 5)])
    return (["convert", str(src), str(t / "out.parquet"), "--to", "parquet", "--image-root", str(t / "img")],
            [f"{src}:2 (id 'r1')", "image path must be a non-empty string, got 5"])


def convert_extra_key_changes_type_parquet(t: Path) -> tuple[list[str], list[str]]:
    src = llava_with_images(t, [record(0, score=1), record(1, score=2.5), record(2, score="high")])
    return (["convert", str(src), str(t / "out.parquet"), "--to", "parquet", "--image-root", str(t / "img")],
            [f"{src}:3", "key 'score' is string here but number at", f"{src}:1"])


def convert_turn_value_int_parquet(t: Path) -> tuple[list[str], list[str]]:
    bad = record(1)
    bad["conversations"][1]["value"] = 42
    src = llava_with_images(t, [record(0), bad])
    return (["convert", str(src), str(t / "out.parquet"), "--to", "parquet", "--image-root", str(t / "img")],
            [f"{src}:2 (id 'r1')", "conversations[1].value must be a string, got int"])


def convert_turn_value_int_messages(t: Path) -> tuple[list[str], list[str]]:
    bad = record(1)
    bad["conversations"][1]["value"] = 42
    src = jsonl(t / "in.jsonl", [record(0), bad])
    return (["convert", str(src), str(old_output(t / "m.jsonl")), "--to", "messages"],
            [f"{src}:2 (id 'r1')", "conversations[1].value must be a string, got int"])


def convert_messages_content_42(t: Path) -> tuple[list[str], list[str]]:
    rows = [{"id": "m0", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"id": "m1", "messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "x"}]}]
    src = jsonl(t / "m.jsonl", rows)
    return (["convert", str(src), str(old_output(t / "l.jsonl")), "--to", "llava"],
            [f"{src}:2 (id 'm1')", "messages[0].content must be a string, got int"])


def convert_messages_images_of_wrong_type(t: Path) -> tuple[list[str], list[str]]:
    rows = [{"id": "m0", "images": [{"path": "a.png"}],
             "messages": [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "yo"}]}]
    src = jsonl(t / "m.jsonl", rows)
    return (["convert", str(src), str(t / "l.jsonl"), "--to", "llava"],
            [f"{src}:1 (id 'm0')", "'images' must be a path or a list of paths"])


def convert_parquet_int_conversations(t: Path) -> tuple[list[str], list[str]]:
    src = write_parquet(t / "in.parquet", {"id": ["a", "b"], "conversations": [1, 2]})
    return (["convert", str(src), str(old_output(t / "out.jsonl")), "--to", "llava"],
            [str(src), "column 'conversations' is int64"])


def convert_parquet_string_image(t: Path) -> tuple[list[str], list[str]]:
    turns = [[{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a."}]]
    src = write_parquet(t / "in.parquet", {"id": ["a"], "image": ["x.png"], "conversations": turns})
    return (["convert", str(src), str(old_output(t / "out.jsonl")), "--to", "llava"],
            [str(src), "column 'image' is string"])


def convert_parquet_null_conversations_row(t: Path) -> tuple[list[str], list[str]]:
    turns = [[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a."}], None]
    src = write_parquet(t / "in.parquet", {"id": ["a", "b"], "conversations": turns},
                        pa.schema([("id", pa.string()), ("conversations", TURNS)]))
    return (["convert", str(src), str(t / "out.jsonl"), "--to", "llava"],
            [f"{src}: row 1 (id 'b')", "'conversations' must be a list, got null"])


def convert_truncated_json(t: Path) -> tuple[list[str], list[str]]:
    src = t / "in.json"
    text = json.dumps([record(0, None), record(1, None)]).encode()
    src.write_bytes(text[: len(text) - 30])
    return (["convert", str(src), str(old_output(t / "m.json")), "--to", "messages"],
            [str(src), "not valid JSON after 1 records"])


def convert_not_utf8_jsonl(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "in.jsonl", [record(0, None), b'{"id": "r1", "note": "caf\xe9"}'])
    return (["convert", str(src), str(old_output(t / "m.jsonl")), "--to", "messages"],
            [f"{src}:2", "invalid UTF-8 at byte 26 of the line"])


def convert_folder_as_input_file(t: Path) -> tuple[list[str], list[str]]:
    (t / "d.jsonl").mkdir()
    return (["convert", str(t / "d.jsonl"), str(t / "o.jsonl"), "--to", "messages"],
            [str(t / "d.jsonl"), "is a folder, expected a .jsonl file"])


def convert_record_not_an_object_wds(t: Path) -> tuple[list[str], list[str]]:
    src = llava_with_images(t, [record(0), b"[1, 2, 3]"])
    return (["convert", str(src), str(t / "wds"), "--to", "wds", "--image-root", str(t / "img")],
            [f"{src}:2", "the record must be an object, got list"])


# ---- validate and filter (refused: the input cannot be read, or an output would destroy an input) ---------

def validate_truncated_json(t: Path) -> tuple[list[str], list[str]]:
    src = t / "in.json"
    text = json.dumps([record(0, None), record(1, None)]).encode()
    src.write_bytes(text[: len(text) - 30])
    return ["validate", str(src)], [str(src), "not valid JSON after 1 records"]


def validate_not_utf8_json_list(t: Path) -> tuple[list[str], list[str]]:
    src = t / "in.json"
    src.write_bytes(b'[' + json.dumps(record(0, None)).encode() + b', {"id": "caf\xe9"}]')
    return ["validate", str(src)], [str(src), "after 1 records", "invalid bytes in UTF-8"]


def validate_folder_as_input_file(t: Path) -> tuple[list[str], list[str]]:
    (t / "d.json").mkdir()
    return ["validate", str(t / "d.json")], [str(t / "d.json"), "is a folder, expected a .json file"]


def validate_report_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "in.jsonl", [record(0, None)])
    return ["validate", str(src), "--report", str(src)], [str(src), "--report would overwrite the input"]


def filter_args(src: Path, out: Path, rejects: Path, *more: str) -> list[str]:
    return ["filter", str(src), "--out", str(out), "--rejects", str(rejects), "--no-spelling", *more]


def filter_output_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = json_list(t / "f.json", [record(0, None)])
    return filter_args(src, src, t / "r.jsonl"), [str(src), "--out would overwrite the input"]


def filter_rejects_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "f.jsonl", [record(0, None)])
    return filter_args(src, t / "k.jsonl", src), [str(src), "--rejects would overwrite the input"]


def filter_out_and_rejects_one_file(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "f.jsonl", [record(0, None)])
    x = old_output(t / "x.jsonl")
    return filter_args(src, x, x), [str(x), "--out and --rejects name the same path"]


def filter_report_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "f.jsonl", [record(0, None)])
    return (filter_args(src, t / "k.jsonl", t / "r.jsonl", "--report", str(src)),
            [str(src), "--report would overwrite the input"])


def filter_out_is_a_folder(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "f.jsonl", [record(0, None)])
    out = old_folder(t / "kept.jsonl")
    return filter_args(src, out, t / "r.jsonl"), [str(out), "--out is a folder"]


def filter_truncated_jsonl(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "f.jsonl", [record(0, None), record(1, None), b'{"id": "r2", "conversations": [{"from"'])
    return filter_args(src, old_output(t / "k.jsonl"), t / "r.jsonl"), [f"{src}:3", "not valid JSON"]


def filter_folder_as_input_file(t: Path) -> tuple[list[str], list[str]]:
    (t / "d.jsonl").mkdir()
    return filter_args(t / "d.jsonl", t / "k.jsonl", t / "r.jsonl"), [str(t / "d.jsonl"), "is a folder"]


def filter_not_utf8_json_list(t: Path) -> tuple[list[str], list[str]]:
    src = t / "f.json"
    src.write_bytes(b'[' + json.dumps(record(0, None)).encode() + b', {"id": "caf\xe9"}]')
    return (filter_args(src, old_output(t / "k.json"), t / "r.json"),
            [str(src), "after 1 records", "invalid bytes in UTF-8"])


def pad_boxes_not_utf8(t: Path) -> tuple[list[str], list[str]]:
    return ["pad-boxes", "--width", "640", "--height", "480"], ["stdin: not valid UTF-8 (line 2, byte 25)"]


def check_fix_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "c.jsonl", [record(0, None)])
    return ["check", str(src), "--target", "llava", "--fix", str(src)], [str(src), "would overwrite the input"]


def check_truncated_json(t: Path) -> tuple[list[str], list[str]]:
    src = t / "c.json"
    src.write_text(json.dumps([record(0, None), record(1, None)])[:-30])
    return ["check", str(src), "--target", "llama-factory"], [str(src), "not valid JSON"]


def check_folder_as_input_file(t: Path) -> tuple[list[str], list[str]]:
    (t / "c.json").mkdir()
    return ["check", str(t / "c.json"), "--target", "ms-swift"], [str(t / "c.json"), "folder"]


def mix_recipe_names_a_missing_file(t: Path) -> tuple[list[str], list[str]]:
    jsonl(t / "a.jsonl", [record(0, None)])
    recipe = t / "r.yaml"
    recipe.write_text("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: all\n"
                      "  - json_path: gone.jsonl\n    sampling_strategy: first:5\n")
    return ["mix", str(recipe), "--out", str(old_output(t / "m.jsonl"))], [f"{recipe}:4", "gone.jsonl"]


def mix_out_is_a_source(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0, None)])
    recipe = t / "r.yaml"
    recipe.write_text("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: all\n")
    return ["mix", str(recipe), "--out", str(src)], [str(src)]


def mix_bad_strategy(t: Path) -> tuple[list[str], list[str]]:
    jsonl(t / "a.jsonl", [record(0, None)])
    recipe = t / "r.yaml"
    recipe.write_text("datasets:\n  - json_path: a.jsonl\n    sampling_strategy: sometimes:3\n")
    return ["mix", str(recipe), "--out", str(t / "m.jsonl")], [f"{recipe}:3", "sometimes:3"]


def _instances(t: Path) -> Path:
    path = t / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "img.png", "width": 8, "height": 8}],
                                "annotations": [{"id": 5, "image_id": 1, "category_id": 18, "bbox": [1, 1, 4, 4]}],
                                "categories": [{"id": 18, "name": "dog"}]}))
    return path


def audit_out_is_input(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0)])
    return (["audit", str(src), "--coco-instances", str(_instances(t)), "--out", str(src)],
            [str(src), "would overwrite the input"])


def audit_truncated_annotations(t: Path) -> tuple[list[str], list[str]]:
    src = jsonl(t / "a.jsonl", [record(0)])
    instances = _instances(t)
    instances.write_text(instances.read_text()[:-20])
    return (["audit", str(src), "--coco-instances", str(instances), "--out", str(old_output(t / "o.jsonl"))],
            [str(instances)])


STDIN = {"pad_boxes_not_utf8": b"[0.1, 0.2, 0.3, 0.4]\ncaf\xe9 [0.5, 0.5, 0.6, 0.6]\n"}
STRICT_UTF8 = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8:strict"}

REFUSED: dict[str, Case] = {f.__name__: f for f in (
    convert_output_is_input_jsonl, convert_output_is_input_json, convert_output_is_input_via_symlink,
    convert_parquet_folder_holds_input, convert_wds_folder_holds_input, convert_wds_folder_holds_image_root,
    convert_report_is_input, convert_symlink_out_of_root_parquet, convert_symlink_out_of_root_wds,
    convert_non_image_bytes_parquet, convert_empty_image_parquet, convert_empty_image_wds,
    convert_dotdot_to_wds_after_a_shard_was_opened, convert_image_of_wrong_type_parquet,
    convert_extra_key_changes_type_parquet, convert_turn_value_int_parquet, convert_turn_value_int_messages,
    convert_messages_content_42, convert_messages_images_of_wrong_type, convert_parquet_int_conversations,
    convert_parquet_string_image, convert_parquet_null_conversations_row, convert_truncated_json,
    convert_not_utf8_jsonl, convert_folder_as_input_file, convert_record_not_an_object_wds,
    validate_truncated_json, validate_not_utf8_json_list, validate_folder_as_input_file, validate_report_is_input,
    filter_output_is_input, filter_rejects_is_input, filter_out_and_rejects_one_file, filter_report_is_input,
    filter_out_is_a_folder, filter_truncated_jsonl, filter_folder_as_input_file, filter_not_utf8_json_list,
    pad_boxes_not_utf8, check_fix_is_input, check_truncated_json, check_folder_as_input_file,
    mix_recipe_names_a_missing_file, mix_out_is_a_source, mix_bad_strategy, audit_out_is_input,
    audit_truncated_annotations)}


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every path under `root`: a file's bytes, a link's target, None for a folder."""
    def state(p: Path) -> bytes | str | None:
        return f"-> {os.readlink(p)}" if p.is_symlink() else p.read_bytes() if p.is_file() else None
    return {p.relative_to(root).as_posix(): state(p) for p in sorted(root.rglob("*"))}


def cli(args: list[str], stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m visinstruct ARGS` (conftest's run_cli); with `stdin`, those bytes piped in, text out."""
    if stdin is None:
        return run_cli(*args, env=env)
    result = subprocess.run([sys.executable, "-m", "visinstruct", *args], input=stdin or b"", capture_output=True,
                            env=env, timeout=300)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode("utf-8", "replace"),
                                       result.stderr.decode("utf-8", "replace"))


def command(name: str) -> str:
    return name.split("_")[0].replace("pad", "pad-boxes")


@pytest.mark.parametrize("name", sorted(REFUSED), ids=lambda n: f"{command(n)}:{n.split('_', 1)[1]}")
def test_refused_in_one_line_and_nothing_written(tmp_path: Path, name: str) -> None:
    args, parts = REFUSED[name](tmp_path)
    before = snapshot(tmp_path)
    result = cli(args, STDIN.get(name), STRICT_UTF8)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("visinstruct: error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert snapshot(tmp_path) == before  # no output, no temporary file; inputs and old outputs as they were


# ---- flag values ---------------------------------------------------------------------------------------

FLAGS = [("--width", "nan"), ("--width", "inf"), ("--width", "-5"), ("--width", "0"), ("--height", "nan"),
         ("--height", "-inf"), ("--height", "1e400")]


@pytest.mark.parametrize("flag, value", FLAGS, ids=[f"pad-boxes:{f}={v}" for f, v in FLAGS])
def test_pad_boxes_refuses_impossible_sizes(flag: str, value: str) -> None:
    sizes = {"--width": "640", "--height": "480", flag: value}
    result = cli(["pad-boxes", *[f"{name}={size}" for name, size in sizes.items()]], b"[0.1, 0.2, 0.3, 0.4]\n")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"visinstruct pad-boxes: error: argument {flag}: must be a finite number above 0"), last
    assert value in last


# ---- accepted and handled ------------------------------------------------------------------------------

def test_pad_boxes_reads_utf8_whatever_the_locale() -> None:
    text = "Кот [0.1, 0.2, 0.3, 0.4] 猫\n".encode()
    for env in (STRICT_UTF8, {**os.environ, "LC_ALL": "C", "PYTHONIOENCODING": "ascii:strict"}):
        result = cli(["pad-boxes", "--width", "100", "--height", "50"], text, env)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout == "Кот [0.1, 0.35, 0.3, 0.45] 猫\n"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("subcommand", ["convert", "validate", "filter"])
def test_a_byte_order_mark_is_skipped(tmp_path: Path, suffix: str, subcommand: str) -> None:
    rows = [record(0, None), record(1, None)]
    src = tmp_path / f"bom{suffix}"
    src.write_bytes(BOM + (json.dumps(rows) if suffix == ".json" else
                           "".join(json.dumps(r) + "\n" for r in rows)).encode())
    out = tmp_path / f"out{suffix}"
    args = {"convert": ["convert", str(src), str(out), "--to", "messages"],
            "validate": ["validate", str(src)],
            "filter": filter_args(src, out, tmp_path / "r.jsonl")}[subcommand]
    result = cli(args)
    assert result.returncode == 0, result.stderr + result.stdout
    if subcommand == "validate":
        assert "2 records read, 0 invalid" in result.stdout
    elif subcommand == "filter":
        assert read_records(out) == rows
    else:
        assert [r["id"] for r in read_records(out)] == ["r0", "r1"] and "messages" in read_records(out)[0]


def test_svit_like_first_record_with_odd_turns_is_detected_not_a_traceback(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "odd.jsonl", [{"image_id": 1, "conversations": [5]}])
    result = cli(["convert", str(src), str(tmp_path / "o.jsonl"), "--to", "messages"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"visinstruct: error: {src}:1 (id None): conversations[0] must be an "
                                          "object, got int"]


def test_validate_and_filter_see_an_image_that_is_not_a_path(tmp_path: Path) -> None:
    src = jsonl(tmp_path / "in.jsonl", [record(0, None), record(1, 5), record(2, ["a.png", 7])])
    checked = cli(["validate", str(src)])
    assert checked.returncode == 1 and "Traceback" not in checked.stderr + checked.stdout
    assert "record 1 (id 'r1'): bad_image: 5 is not an image path" in checked.stdout
    assert "record 2 (id 'r2'): bad_image: 7 is not an image path" in checked.stdout
    assert "3 records read, 2 invalid" in checked.stdout
    kept, rejects = tmp_path / "k.jsonl", tmp_path / "r.jsonl"
    filtered = cli(filter_args(src, kept, rejects))
    assert filtered.returncode == 0, filtered.stderr
    assert [r["id"] for r in read_records(kept)] == ["r0"]
    assert [(r["id"], r["reject_stage"], r["reject_reason"].split(":")[0]) for r in read_records(rejects)] == [
        ("r1", "structure", "bad_image"), ("r2", "structure", "bad_image")]


def test_validate_flags_a_symlink_out_of_the_image_root(tmp_path: Path) -> None:
    root = escaping_link(tmp_path)
    src = jsonl(tmp_path / "in.jsonl", [record(0), record(1, "link.png")])
    result = cli(["validate", str(src), "--image-root", str(root)])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "record 1 (id 'r1'): bad_image_path: 'link.png'" in result.stdout
    assert "record 0" not in result.stdout


def test_links_inside_the_image_root_still_convert(tmp_path: Path) -> None:
    png(tmp_path / "img" / "real" / "a.png")
    os.symlink("real/a.png", tmp_path / "img" / "alias.png")
    src = jsonl(tmp_path / "in.jsonl", [record(0, "alias.png")])
    result = cli(["convert", str(src), str(tmp_path / "o.parquet"), "--to", "parquet",
                  "--image-root", str(tmp_path / "img")])
    assert result.returncode == 0, result.stderr
    row = pq.read_table(tmp_path / "o.parquet").to_pylist()[0]
    assert row["image"]["bytes"] == (tmp_path / "img" / "real" / "a.png").read_bytes()


def test_int_and_float_in_one_key_become_a_float_column(tmp_path: Path) -> None:
    src = llava_with_images(tmp_path, [record(0, score=1), record(1, score=2.5), record(2, score=None)])
    result = cli(["convert", str(src), str(tmp_path / "o.parquet"), "--to", "parquet",
                  "--image-root", str(tmp_path / "img")])
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "o.parquet")
    assert table.schema.field("score").type == pa.float64()
    assert table.column("score").to_pylist() == [1.0, 2.5, None]


def test_a_huge_answer_is_rejected_by_the_heuristics_with_bounded_memory(tmp_path: Path) -> None:
    """A 50 MB gpt answer: the heuristics stage rejects it as too long; the whole run stays under 500 MB."""
    words = ("the cat sits on a red mat near the window and looks at birds flying over green trees " * 600_000)
    answer = words[:50_000_000].rstrip() + "."
    src = jsonl(tmp_path / "big.jsonl", [record(0, None), record(1, None, answer=answer)])
    kept, rejects = tmp_path / "k.jsonl", tmp_path / "r.jsonl"
    script = ("import resource, subprocess, sys; "
              "code = subprocess.run(sys.argv[1:]).returncode; "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "visinstruct", "filter", str(src),
                             "--out", str(kept), "--rejects", str(rejects), "--stages", "structure,heuristics",
                             "--no-progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak_mb = int(result.stdout.split()[-1])
    assert peak_mb < 500, f"peak RSS {peak_mb} MB"
    assert [r["id"] for r in read_records(kept)] == ["r0"]
    with rejects.open("rb") as handle:
        rejected = json.loads(handle.readline())
    assert rejected["id"] == "r1"
    assert rejected["reject_reason"] == f"too_long: answer of {len(answer)} characters (> 8000)"
