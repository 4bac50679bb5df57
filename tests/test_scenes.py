"""Scenes from official COCO files and from LLaVA caps-boxes jsonl; clear errors for bad files."""

import json
from pathlib import Path

import pytest

from conftest import run_cli
from visinstruct.core.errors import UserError
from visinstruct.sources.coco import load_caps_boxes, load_coco
from visinstruct.sources.scene import scene_text


def write_coco(tmp_path: Path) -> tuple[Path, Path]:
    images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 640, "height": 480},
              {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 500, "height": 375}]
    captions = {"images": images, "annotations": [
        {"id": 1, "image_id": 42, "caption": "A dog runs on the beach.\n"},
        {"id": 2, "image_id": 42, "caption": "  A brown dog near the sea. "},
        {"id": 3, "image_id": 7, "caption": "An empty white room."}]}
    instances = {"images": images, "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
                 "annotations": [
                     {"id": 10, "image_id": 42, "category_id": 18, "bbox": [100.0, 120.0, 200.0, 150.0]},
                     # touches the right and bottom edges (and overshoots by rounding noise)
                     {"id": 11, "image_id": 42, "category_id": 1, "bbox": [440.5, 280.25, 199.6, 200.0]}]}
    cap_path, inst_path = tmp_path / "captions_val2014.json", tmp_path / "instances_val2014.json"
    cap_path.write_text(json.dumps(captions))
    inst_path.write_text(json.dumps(instances))
    return cap_path, inst_path


def test_coco_scene_text_has_exactly_the_normalized_boxes(tmp_path: Path) -> None:
    cap_path, inst_path = write_coco(tmp_path)
    scenes = list(load_coco(cap_path, inst_path, image_prefix="coco/val2014/", source="coco2014-val"))
    assert [s.image_id for s in scenes] == ["000000000042", "000000000007"]
    dog = scenes[0]
    assert dog.image == "coco/val2014/COCO_val2014_000000000042.jpg"
    assert scene_text(dog, "full") == (
        "A dog runs on the beach.\nA brown dog near the sea.\n\n"
        "dog: [0.156, 0.25, 0.469, 0.562]\n"
        "person: [0.688, 0.584, 1.0, 1.0]")
    assert scene_text(dog, "captions") == "A dog runs on the beach.\nA brown dog near the sea."
    empty = scenes[1]
    assert empty.boxes == [] and scene_text(empty, "full") == "An empty white room."


def test_caps_boxes_real_file(val80: Path) -> None:
    scenes = list(load_caps_boxes(val80, source="val80"))
    assert len(scenes) == 80
    assert sum(len(s.boxes) for s in scenes) == 476
    assert sum(1 for s in scenes if not s.boxes) == 3
    first = scenes[0]
    assert first.image_id == "000000296284" and first.image == "000000296284.jpg"
    assert scene_text(first, "full").splitlines()[6] == "donut: [0.37, 0.584, 0.504, 0.709]"


@pytest.mark.parametrize("mutate, message", [
    (lambda c, i: i["annotations"].append({"id": 99, "image_id": 42, "category_id": 18, "bbox": [1, 2, 3]}),
     "annotations[2] (id 99, image_id 42) has a bbox that is not 4 numbers"),
    (lambda c, i: i["annotations"].append({"id": 98, "image_id": 5, "category_id": 18, "bbox": [1, 2, 3, 4]}),
     "annotations[2] (id 98, image_id 5) refers to an image not in the captions file"),
    (lambda c, i: i["annotations"].append({"id": 97, "image_id": 42, "category_id": 3, "bbox": [1, 2, 3, 4]}),
     "unknown category_id 3"),
    (lambda c, i: c["images"][1].pop("width"), "images[1] (id 7) has no positive width/height"),
    (lambda c, i: c["annotations"].append({"image_id": 42}), "annotations[3] (image_id 42) has no 'caption'"),
    (lambda c, i: c.pop("annotations"), "expected a JSON object with a 'annotations' list"),
])
def test_malformed_coco_names_file_and_entry(tmp_path: Path, mutate, message: str) -> None:
    cap_path, inst_path = write_coco(tmp_path)
    captions, instances = json.loads(cap_path.read_text()), json.loads(inst_path.read_text())
    mutate(captions, instances)
    cap_path.write_text(json.dumps(captions))
    inst_path.write_text(json.dumps(instances))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        list(load_coco(cap_path, inst_path))


def test_cli_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "caps.jsonl"
    bad.write_text('{"id": "1", "image": "a.jpg", "captions": ["x"], "instances": []}\n{"id": 2, "image"\n')
    result = run_cli("generate", "--caps-boxes", str(bad), "--out", str(tmp_path / "o.json"), "--dry-run")
    assert result.returncode == 2
    assert f"{bad}:2: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
    bad.write_text('{"id": "1", "image": "a.jpg", "captions": ["x"]}\n{"id": "1", "image": "b.jpg", "captions": []}\n')
    result = run_cli("generate", "--caps-boxes", str(bad), "--out", str(tmp_path / "o.json"), "--dry-run")
    assert result.returncode == 2 and f"{bad}:2: duplicate id '1'" in result.stderr
    result = run_cli("generate", "--caps-boxes", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and "missing.jsonl: file not found" in result.stderr
    truncated = tmp_path / "captions.json"
    truncated.write_text('{"images": [{"id": 1,')
    result = run_cli("generate", "--coco-captions", str(truncated), "--out", str(tmp_path / "o.json"))
    assert result.returncode == 2 and "captions.json: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr
