"""Bad input to `generate`, as a user meets it: every case exits non-zero with one line naming the file, the
record and the problem, prints no traceback, sends nothing, and leaves every file where it was (no output,
no temporary file, a pre-existing output byte-for-byte as it was). Refused API keys stop the run early.
Boxes: a caps-boxes box outside [0, 1] or inverted stops the run (a wrong file); a COCO or Visual Genome box
with no area or wholly outside its image is dropped and counted (common in real data)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from conftest import make_caps_boxes, read_records, run_cli
from teacher_server import ServerThread, TeacherServer
from visinstruct.sources.coco import load_caps_boxes
from visinstruct.sources.scene import Dropped, scene_text
from visinstruct.sources.visual_genome import load_vg

OLD_OUTPUT = b'[{"id": "made-by-an-earlier-run"}]\n'

Made = tuple[list[str], list[str]]  # generate's arguments, and the parts its one-line error must hold
Case = Callable[[Path, Path], Made]  # (the test's folder, a pre-existing output in it) -> Made


# ---- inputs the cases write -----------------------------------------------------------------------------

def caps(folder: Path, lines: list[dict | str | bytes], name: str = "caps.jsonl") -> Path:
    """A caps-boxes jsonl: dicts are dumped, str/bytes lines written as they are."""
    path = folder / name
    path.write_bytes(b"".join((json.dumps(x).encode() if isinstance(x, dict) else
                               x.encode() if isinstance(x, str) else x) + b"\n" for x in lines))
    return path


def row(i: int, *boxes: list[float]) -> dict:
    """One caps-boxes record with a caption and these boxes (all 'cat')."""
    return {"id": f"img{i}", "image": f"img{i}.jpg", "captions": [f"A cat on mat {i}."],
            "instances": [{"category": "cat", "bbox": box} for box in boxes]}


def coco(folder: Path, images: int = 2, captions: bool = True, boxes: list[list[float]] | None = None,
         ) -> tuple[Path, Path]:
    """Official-style COCO captions and instances files (written indented: one key per line)."""
    imgs = [{"id": i, "file_name": f"COCO_{i:012d}.jpg", "width": 640, "height": 480} for i in range(1, images + 1)]
    caps_doc = {"images": imgs, "annotations": [{"id": 10 + i, "image_id": i, "caption": f"A dog, picture {i}."}
                                                for i in range(1, images + 1)] if captions else []}
    boxes = boxes if boxes is not None else [[10, 20, 100, 80]]
    inst_doc = {"images": imgs, "categories": [{"id": 1, "name": "dog"}],
                "annotations": [{"id": 100 + k, "image_id": 1, "category_id": 1, "bbox": b}
                                for k, b in enumerate(boxes)]}
    cap_path, inst_path = folder / "captions.json", folder / "instances.json"
    cap_path.write_text(json.dumps(caps_doc, indent=1))
    inst_path.write_text(json.dumps(inst_doc, indent=1))
    return cap_path, inst_path


def vg(folder: Path, objects: list | None = None, images: int = 1) -> Path:
    """A Visual Genome folder with `images` images (objects as given for image 1)."""
    root = folder / "vg"
    root.mkdir()
    ids = range(1, images + 1)
    data = {"image_data": [{"image_id": i, "width": 800, "height": 600, "url": f"http://x/VG_100K/{i}.jpg"}
                           for i in ids],
            "objects": [{"image_id": i, "objects": objects if objects is not None and i == 1 else
                         [{"object_id": 10 * i, "x": 80, "y": 60, "w": 160, "h": 120, "names": ["car"]}]}
                        for i in ids],
            "region_descriptions": [{"id": i, "regions": [{"phrase": "a red car", "x": 80, "y": 60, "width": 160,
                                                           "height": 120}]} for i in ids]}
    for name, doc in data.items():
        (root / f"{name}.json").write_text(json.dumps(doc, indent=1))
    return root


def not_utf8_at_line(path: Path, line: int) -> None:
    """Put a 0xff byte into `path` at the start of its line `line` (inside a string when the line has one)."""
    lines = path.read_bytes().split(b"\n")
    target = lines[line - 1]
    quote = target.find(b'"')
    lines[line - 1] = target[:quote + 1] + b"\xff" + target[quote + 1:] if quote >= 0 else b"\xff" + target
    path.write_bytes(b"\n".join(lines))


def cut(path: Path, keep: float = 0.6) -> None:
    """Truncate a file, as an interrupted download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def image_list(folder: Path, lines: list[str], name: str = "list.txt") -> Path:
    """An `--images` list file."""
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ---- the cases ------------------------------------------------------------------------------------------

def out_is_caps_boxes(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)], "data.jsonl")
    return ["--caps-boxes", str(c), "--out", str(c)], [str(c), "--out would overwrite the input --caps-boxes"]


def out_is_coco_captions(d: Path, out: Path) -> Made:
    cap, inst = coco(d)
    return (["--coco-captions", str(cap), "--coco-instances", str(inst), "--out", str(cap)],
            [str(cap), "--out would overwrite the input --coco-captions"])


def out_is_coco_instances(d: Path, out: Path) -> Made:
    cap, inst = coco(d)
    return (["--coco-captions", str(cap), "--coco-instances", str(inst), "--out", str(inst)],
            [str(inst), "--out would overwrite the input --coco-instances"])


def out_is_image_list(d: Path, out: Path) -> Made:
    listing = image_list(d, ["a.jpg"], "images.json")
    return ["--images", str(listing), "--out", str(listing)], [str(listing), "--out would overwrite the input --images"]


def out_inside_image_folder(d: Path, out: Path) -> Made:
    (d / "photos").mkdir()
    (d / "photos" / "a.png").write_bytes(b"not read: refused before")
    inner = d / "photos" / "out.json"
    return ["--images", str(d / "photos"), "--out", str(inner)], [str(inner), "inside the --images folder"]


def out_is_vg_file(d: Path, out: Path) -> Made:
    root = vg(d)
    return (["--vg", str(root), "--out", str(root / "objects.json")],
            [str(root / "objects.json"), "--out would overwrite the input --vg objects.json"])


def ledger_is_input(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    return (["--caps-boxes", str(c), "--out", str(out), "--ledger", str(c)],
            [str(c), "--ledger would overwrite the input --caps-boxes"])


def ledger_is_out(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    return ["--caps-boxes", str(c), "--out", str(out), "--ledger", str(out)], [str(out), "--out and --ledger"]


def report_is_input(d: Path, out: Path) -> Made:
    cap, _ = coco(d)
    return (["--coco-captions", str(cap), "--out", str(out), "--report", str(cap)],
            [str(cap), "--report would overwrite the input --coco-captions"])


def empty_caps_boxes(d: Path, out: Path) -> Made:
    c = d / "caps.jsonl"
    c.write_bytes(b"")
    return ["--caps-boxes", str(c), "--out", str(out)], [f"no scenes in {c}"]


def blank_caps_boxes(d: Path, out: Path) -> Made:
    c = caps(d, ["", "   ", ""])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"no scenes in {c}"]


def coco_without_images(d: Path, out: Path) -> Made:
    cap, _ = coco(d, images=0)
    return ["--coco-captions", str(cap), "--out", str(out)], [f"no scenes in {cap}"]


def coco_without_captions(d: Path, out: Path) -> Made:
    cap, inst = coco(d, captions=False)
    return ["--coco-captions", str(cap), "--coco-instances", str(inst), "--out", str(out)], [f"no scenes in {cap}"]


def vg_without_images(d: Path, out: Path) -> Made:
    root = vg(d, images=0)
    return ["--vg", str(root), "--out", str(out)], [f"no scenes in {root / 'image_data.json'}"]


def empty_image_folder(d: Path, out: Path) -> Made:
    folder = d / "photos"
    folder.mkdir()
    (folder / ".hidden.jpg").write_bytes(b"x")
    return ["--images", str(folder), "--out", str(out)], [f"no images in {folder}"]


def image_list_of_comments(d: Path, out: Path) -> Made:
    listing = image_list(d, ["# nothing yet", ""])
    return ["--images", str(listing), "--out", str(out)], [f"no images in {listing}"]


def caps_boxes_folder(d: Path, out: Path) -> Made:
    (d / "caps").mkdir()
    return ["--caps-boxes", str(d / "caps"), "--out", str(out)], [f"{d / 'caps'}: --caps-boxes expects a file"]


def coco_captions_folder(d: Path, out: Path) -> Made:
    (d / "annotations").mkdir()
    return (["--coco-captions", str(d / "annotations"), "--out", str(out)],
            [f"{d / 'annotations'}: --coco-captions expects a file"])


def coco_instances_folder(d: Path, out: Path) -> Made:
    cap, _ = coco(d)
    (d / "instances").mkdir()
    return (["--coco-captions", str(cap), "--coco-instances", str(d / "instances"), "--out", str(out)],
            [f"{d / 'instances'}: --coco-instances expects a file"])


def vg_is_a_file(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    return ["--vg", str(c), "--out", str(out)], [f"{c}: --vg expects the Visual Genome folder"]


def vg_objects_folder(d: Path, out: Path) -> Made:
    root = vg(d)
    (root / "objects.json").unlink()
    (root / "objects.json").mkdir()
    return ["--vg", str(root), "--out", str(out)], [f"{root / 'objects.json'}: expected a file, got a folder"]


def out_is_a_folder(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    (d / "out.jsonl").mkdir()
    return ["--caps-boxes", str(c), "--out", str(d / "out.jsonl")], [f"{d / 'out.jsonl'}: --out is a folder"]


def ledger_is_a_folder(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    (d / "ledger").mkdir()
    return (["--caps-boxes", str(c), "--out", str(out), "--ledger", str(d / "ledger")],
            [f"{d / 'ledger'}: --ledger is a folder"])


def ledger_not_sqlite(d: Path, out: Path) -> Made:
    c = caps(d, [row(1)])
    notes = d / "notes.txt"
    notes.write_text("my notes, not a ledger\n" * 200)
    return ["--caps-boxes", str(c), "--out", str(out), "--ledger", str(notes)], [str(notes), "not a usable ledger"]


def caps_box_outside(d: Path, out: Path) -> Made:
    c = caps(d, [row(1, [0.1, 0.1, 0.5, 0.5]), row(2, [0.2, 0.2, 0.3, 0.3], [1.2, 1.3, 1.5, 1.9])])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:2", "instances[1]", "[1.2, 1.3, 1.5, 1.9]",
                                                         "outside [0, 1]"]


def caps_box_inverted(d: Path, out: Path) -> Made:
    c = caps(d, [row(1), row(2), row(3, [0.8, 0.2, 0.3, 0.9])])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:3", "instances[0]", "inverted"]


def caps_box_in_pixels(d: Path, out: Path) -> Made:
    c = caps(d, [row(1, [10, 20, 200, 240])])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:1", "outside [0, 1]"]


def caps_box_negative(d: Path, out: Path) -> Made:
    c = caps(d, [row(1), row(2, [-0.25, 0.1, 0.5, 0.5])])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:2", "outside [0, 1]"]


def caps_boxes_not_utf8(d: Path, out: Path) -> Made:
    c = caps(d, [row(1), row(2), row(3)])
    not_utf8_at_line(c, 2)
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:2", "UTF-8"]


def caps_boxes_truncated(d: Path, out: Path) -> Made:
    c = caps(d, [row(1), row(2), json.dumps(row(3))[:30]])
    return ["--caps-boxes", str(c), "--out", str(out)], [f"{c}:3", "not valid JSON"]


def coco_captions_not_utf8(d: Path, out: Path) -> Made:
    cap, _ = coco(d)
    not_utf8_at_line(cap, 5)
    return ["--coco-captions", str(cap), "--out", str(out)], [f"{cap}:5", "not UTF-8", "byte offset"]


def coco_captions_truncated(d: Path, out: Path) -> Made:
    cap, _ = coco(d)
    cut(cap)
    return ["--coco-captions", str(cap), "--out", str(out)], [str(cap), "not valid JSON", "line "]


def coco_instances_not_utf8(d: Path, out: Path) -> Made:
    cap, inst = coco(d)
    not_utf8_at_line(inst, 9)
    return (["--coco-captions", str(cap), "--coco-instances", str(inst), "--out", str(out)],
            [f"{inst}:9", "not UTF-8", "byte offset"])


def coco_instances_truncated(d: Path, out: Path) -> Made:
    cap, inst = coco(d)
    cut(inst)
    return (["--coco-captions", str(cap), "--coco-instances", str(inst), "--out", str(out)],
            [str(inst), "not valid JSON", "line "])


def vg_objects_not_utf8(d: Path, out: Path) -> Made:
    root = vg(d, images=3)
    not_utf8_at_line(root / "objects.json", 30)
    return ["--vg", str(root), "--out", str(out)], [str(root / "objects.json"), "not valid JSON after entry"]


def vg_objects_truncated(d: Path, out: Path) -> Made:
    root = vg(d, images=3)
    cut(root / "objects.json")
    return ["--vg", str(root), "--out", str(out)], [str(root / "objects.json"), "not valid JSON after entry 0"]


def vg_objects_not_objects(d: Path, out: Path) -> Made:
    root = vg(d, objects=["car", "tree"])
    return ["--vg", str(root), "--out", str(out)], [f"{root / 'objects.json'}: image 1", "list of objects"]


def image_list_not_utf8(d: Path, out: Path) -> Made:
    listing = image_list(d, ["a.jpg", "b.jpg"])
    not_utf8_at_line(listing, 2)
    return ["--images", str(listing), "--out", str(out)], [f"{listing}:2", "not UTF-8"]


CASES: dict[str, Case] = {f.__name__: f for f in (
    out_is_caps_boxes, out_is_coco_captions, out_is_coco_instances, out_is_image_list, out_is_vg_file,
    out_inside_image_folder,
    ledger_is_input, ledger_is_out, report_is_input,
    empty_caps_boxes, blank_caps_boxes, coco_without_images, coco_without_captions, vg_without_images,
    empty_image_folder, image_list_of_comments,
    caps_boxes_folder, coco_captions_folder, coco_instances_folder, vg_is_a_file, vg_objects_folder,
    out_is_a_folder, ledger_is_a_folder, ledger_not_sqlite,
    caps_box_outside, caps_box_inverted, caps_box_in_pixels, caps_box_negative,
    caps_boxes_not_utf8, caps_boxes_truncated, coco_captions_not_utf8, coco_captions_truncated,
    coco_instances_not_utf8, coco_instances_truncated, vg_objects_not_utf8, vg_objects_truncated,
    vg_objects_not_objects, image_list_not_utf8)}

FLAGS = [("--retries", "-1"), ("--concurrency", "0"), ("--timeout", "0"), ("--timeout", "nan"), ("--rpm", "-1"),
         ("--tpm", "inf"), ("--temperature", "nan"), ("--temperature", "-0.5"), ("--top-p", "1.5"),
         ("--samples-per-image", "0"), ("--backoff", "nan"), ("--price-in", "-1"), ("--max-tokens", "0"),
         ("--limit", "0")]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for folders)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def generate(teacher: ServerThread, args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("generate", *args, "--base-url", teacher.base_url, "--model", "m", "--no-progress", env=env)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_one_line_nothing_written(tmp_path: Path, teacher: ServerThread, name: str) -> None:
    out = tmp_path / "out.json"
    out.write_bytes(OLD_OUTPUT)
    args, parts = CASES[name](tmp_path, out)
    before = snapshot(tmp_path)
    result = generate(teacher, args)
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("visinstruct: error: "), result.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert snapshot(tmp_path) == before  # no output, no temp file, no ledger; old output and inputs untouched
    assert teacher.server.received == []  # refused before anything was sent


@pytest.mark.parametrize("flag, value", FLAGS, ids=[f"{f}={v}" for f, v in FLAGS])
def test_impossible_flag_values_are_refused_by_name(tmp_path: Path, teacher: ServerThread, flag: str,
                                                   value: str) -> None:
    c = caps(tmp_path, [row(1)])
    out = tmp_path / "out.json"
    out.write_bytes(OLD_OUTPUT)
    before = snapshot(tmp_path)
    result = generate(teacher, ["--caps-boxes", str(c), "--out", str(out), flag, value])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("visinstruct generate: error: argument ") and flag in last and value in last, last
    assert snapshot(tmp_path) == before and teacher.server.received == []


# ---- boxes that are dropped and counted, and boxes that are kept -----------------------------------------

class Recorder(TeacherServer):
    """The test teacher, also keeping what each request showed it (the last user turn)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        self.scenes = [*getattr(self, "scenes", []), body["messages"][-1]["content"]]
        return await super().handle(request)


def test_coco_boxes_without_area_or_outside_are_dropped_and_counted(tmp_path: Path) -> None:
    imgs = [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}]
    captions = {"images": imgs, "annotations": [{"image_id": 1, "caption": "Animals in a yard."}]}
    boxes = {"keeper": [10, 20, 100, 80], "overhang": [600, 400, 100, 200],  # overhangs: clamped, kept
             "flatwidth": [50, 50, 0, 30], "negheight": [50, 50, 30, -5], "faraway": [700, 10, 20, 20],
             "above": [10, -90, 20, 40]}
    instances = {"images": imgs, "categories": [{"id": k, "name": n} for k, n in enumerate(boxes)],
                 "annotations": [{"id": 100 + k, "image_id": 1, "category_id": k, "bbox": b}
                                 for k, b in enumerate(boxes.values())]}
    cap, inst = tmp_path / "captions.json", tmp_path / "instances.json"
    cap.write_text(json.dumps(captions))
    inst.write_text(json.dumps(instances))
    server = ServerThread(Recorder())
    try:
        result = run_cli("generate", "--coco-captions", str(cap), "--coco-instances", str(inst), "--out",
                         str(tmp_path / "out.json"), "--tasks", "detail_description", "--base-url", server.base_url,
                         "--model", "m", "--report", str(tmp_path / "report.json"))
        scenes = server.server.scenes
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert (f"warning: dropped 4 box(es) that cannot be shown (2 outside its image, 2 zero or negative "
            f"width/height); first: {inst}: annotations[2] (id 102, image_id 1)") in result.stderr
    assert "input boxes dropped: 4 (2 outside its image, 2 zero or negative width/height)" in result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dropped_boxes"] == {"outside its image": 2, "zero or negative width/height": 2}
    assert len(scenes) == 1
    assert "keeper: [0.016, 0.042, 0.172, 0.208]" in scenes[0] and "overhang: [0.938, 0.833, 1.0, 1.0]" in scenes[0]
    assert not any(name in scenes[0] for name in ("flatwidth", "negheight", "faraway", "above"))
    assert len(read_records(tmp_path / "out.json")) == 1


def test_visual_genome_boxes_without_area_or_outside_are_dropped_and_counted(tmp_path: Path) -> None:
    root = vg(tmp_path, objects=[{"x": 80, "y": 60, "w": 160, "h": 120, "names": ["car"]},
                                 {"x": 80, "y": 60, "w": 0, "h": 120, "names": ["sliver"]},
                                 {"x": 900, "y": 60, "w": 10, "h": 10, "names": ["ghost"]},
                                 {"x": "nan", "y": 60, "w": 10, "h": 10, "names": ["nothing"]}])
    dropped = Dropped()
    (scene,) = load_vg(root, dropped=dropped)
    assert [b.category for b in scene.boxes] == ["car"]
    assert dropped.counts == {"zero or negative width/height": 1, "outside its image": 1, "not finite": 1}
    assert dropped.first.startswith(f"{root / 'objects.json'}: image 1: ")


def test_caps_boxes_edge_values_are_kept(tmp_path: Path) -> None:
    c = caps(tmp_path, [row(1, [0, 0, 1, 1], [0.5, 0.25, 0.5, 0.75], [0.9995, 0.2, 1.0004, 0.3])])
    (scene,) = load_caps_boxes(c)
    assert scene_text(scene, "full").splitlines()[2:] == [
        "cat: [0.0, 0.0, 1.0, 1.0]", "cat: [0.5, 0.25, 0.5, 0.75]", "cat: [1.0, 0.2, 1.0, 0.3]"]


# ---- a refused key stops the run ----------------------------------------------------------------------

def ledger_rows(path: Path) -> list[tuple[str, str]]:
    """(unit id, status) of every unit the ledger holds."""
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT unit_id, status FROM units"))


@pytest.mark.parametrize("status, key", [(401, "sk-wrong-0123456789abcdef"), (403, None)])
def test_refused_key_stops_the_run_and_a_good_key_resumes(tmp_path: Path, status: int, key: str | None) -> None:
    scenes = make_caps_boxes(tmp_path / "caps.jsonl", 60)
    out = tmp_path / "out.json"
    out.write_bytes(OLD_OUTPUT)
    server = ServerThread(TeacherServer(api_key="sk-good-key", auth_status=status, latency=0.05))
    args = ["generate", "--caps-boxes", str(scenes), "--out", str(out), "--tasks", "conversation", "--base-url",
            server.base_url, "--model", "m", "--concurrency", "4", "--api-key-env", "BAD_INPUT_KEY", "--no-progress"]
    try:
        if key is None:  # no key at all: the server wants one
            refused = run_cli(*args[:-3], "--no-progress")
        else:
            refused = run_cli(*args, env={**os.environ, "BAD_INPUT_KEY": key})
        sent_refused = len(server.server.received)
        left = out.read_bytes(), [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        rows = ledger_rows(tmp_path / "out.json.ledger.sqlite")
        good = run_cli(*args, env={**os.environ, "BAD_INPUT_KEY": "sk-good-key"})
        sent_good = len(server.server.received) - sent_refused
    finally:
        server.stop()
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    expected = "refused the API key" if key else "wants an API key"
    assert lines[0].startswith("visinstruct: error: the teacher ") and expected in lines[0]
    assert f"HTTP {status}" in lines[0] and "re-run" in lines[0]
    assert key is None or key not in refused.stderr + refused.stdout  # the server echoed it; we never print it
    assert 1 <= sent_refused <= 4 + 1  # at most the requests in flight (concurrency 4)
    assert left == (OLD_OUTPUT, [])  # the old output untouched, no temporary file
    assert rows == []  # nothing recorded for the refused units
    assert good.returncode == 0, good.stderr
    assert sent_good == 60 and "done: 60" in good.stderr and "failed: 0" in good.stderr
    assert len(read_records(out)) == 60


def test_key_revoked_mid_run_keeps_what_was_answered(tmp_path: Path) -> None:
    class Revoking(TeacherServer):
        async def handle(self, request: web.Request) -> web.StreamResponse:
            if len(self.received) >= 10:
                self.api_key = "sk-rotated"
            return await super().handle(request)

    scenes = make_caps_boxes(tmp_path / "caps.jsonl", 60)
    out = tmp_path / "out.jsonl"
    server = ServerThread(Revoking(api_key="sk-first"))
    args = ["generate", "--caps-boxes", str(scenes), "--out", str(out), "--tasks", "conversation", "--base-url",
            server.base_url, "--model", "m", "--concurrency", "1", "--api-key-env", "BAD_INPUT_KEY", "--no-progress"]
    try:
        first = run_cli(*args, env={**os.environ, "BAD_INPUT_KEY": "sk-first"})
        sent_first, written = len(server.server.received), read_records(out)
        rows = ledger_rows(tmp_path / "out.jsonl.ledger.sqlite")
        second = run_cli(*args, env={**os.environ, "BAD_INPUT_KEY": "sk-rotated"})
        sent_second = len(server.server.received) - sent_first
    finally:
        server.stop()
    assert first.returncode != 0 and "the 10 units answered this run are kept" in first.stderr
    assert sent_first == 11
    assert len(written) == 10  # the .jsonl grows as units are answered: the 10 answers are already in it
    assert len(rows) == 10 and {status for _, status in rows} == {"answered"}
    assert second.returncode == 0, second.stderr
    assert sent_second == 50 and "from ledger: 10" in second.stderr
    assert len(read_records(out)) == 60
