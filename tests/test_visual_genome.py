"""Visual Genome scenes: streaming lockstep read, attributes, COCO captions by coco_id, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visinstruct.core.errors import UserError
from visinstruct.sources.scene import scene_text
from visinstruct.sources.visual_genome import load_vg


def write_vg(folder: Path, with_attributes: bool = True) -> Path:
    """Two VG images: one linked to COCO (id 9), one not; an attributed object; an edge-touching region."""
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"image_id": 1, "width": 800, "height": 600, "coco_id": 9,
               "url": "https://cs.stanford.edu/people/rak248/VG_100K/1.jpg"},
              {"image_id": 2, "width": 400, "height": 500, "coco_id": None,
               "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/2.jpg"}]
    objects = [{"image_id": 1, "objects": [
                   {"object_id": 10, "x": 80, "y": 60, "w": 160, "h": 120, "names": ["car"]},
                   {"object_id": 11, "x": 400, "y": 300, "w": 400, "h": 300, "names": ["tree"]},
                   {"object_id": 12, "x": 80, "y": 60, "w": 160, "h": 120, "names": ["car"]}]},
               {"image_id": 2, "objects": [{"object_id": 20, "x": 0, "y": 0, "w": 100, "h": 50, "names": ["sign"]}]}]
    regions = [{"id": 1, "regions": [
                   {"region_id": 100, "image_id": 1, "phrase": "a red car parked on the street.", "x": 80, "y": 60,
                    "width": 160, "height": 120},
                   # touches the right and bottom edges, and overshoots them
                   {"region_id": 101, "image_id": 1, "phrase": "green  leaves of a tree", "x": 600, "y": 450,
                    "width": 210, "height": 160}]},
               {"id": 2, "regions": [{"region_id": 200, "image_id": 2, "phrase": "a stop sign", "x": 0, "y": 0,
                                      "width": 100, "height": 50}]}]
    attributes = [{"image_id": 1, "attributes": [{"object_id": 10, "names": ["car"], "attributes": ["red", "shiny"],
                                                  "x": 80, "y": 60, "w": 160, "h": 120}]},
                  {"image_id": 2, "attributes": []}]
    for name, data in (("image_data", images), ("objects", objects), ("region_descriptions", regions)):
        (folder / f"{name}.json").write_text(json.dumps(data))
    if with_attributes:
        (folder / "attributes.json").write_text(json.dumps(attributes))
    coco = {"images": [{"id": 9, "file_name": "x.jpg", "width": 800, "height": 600}],
            "annotations": [{"image_id": 9, "caption": "A red car by a tree.\n"},
                            {"image_id": 9, "caption": "A car parked near a big tree."}]}
    (folder / "captions.json").write_text(json.dumps(coco))
    return folder


def test_scene_text_has_three_sections(tmp_path: Path) -> None:
    folder = write_vg(tmp_path / "vg")
    scenes = list(load_vg(folder, folder / "captions.json", image_prefix="vg/", source="vg"))
    assert [s.image for s in scenes] == ["vg/VG_100K/1.jpg", "vg/VG_100K_2/2.jpg"]
    first, second = scenes
    assert (first.width, first.height) == (800, 600)
    assert scene_text(first, "full") == (
        "A red car by a tree.\nA car parked near a big tree.\n\n"
        "red shiny car: [0.1, 0.1, 0.3, 0.3]\ntree: [0.5, 0.5, 1.0, 1.0]\n\n"
        "a red car parked on the street: [0.1, 0.1, 0.3, 0.3]\n"
        "green leaves of a tree: [0.75, 0.75, 1.0, 1.0]")
    assert scene_text(first, "regions") == (
        "red shiny car: [0.1, 0.1, 0.3, 0.3]\ntree: [0.5, 0.5, 1.0, 1.0]\n\n"
        "a red car parked on the street: [0.1, 0.1, 0.3, 0.3]\n"
        "green leaves of a tree: [0.75, 0.75, 1.0, 1.0]")
    # no coco_id: no captions; the captions view falls back to the region phrases
    assert second.captions == []
    assert scene_text(second, "captions") == "a stop sign"
    assert scene_text(second, "full") == (
        "a stop sign\n\nsign: [0.0, 0.0, 0.25, 0.1]\n\na stop sign: [0.0, 0.0, 0.25, 0.1]")


def test_without_attributes_file_and_without_captions(tmp_path: Path) -> None:
    folder = write_vg(tmp_path / "vg", with_attributes=False)
    first = next(load_vg(folder))
    assert first.captions == [] and first.boxes[0].category == "car"


def test_out_of_order_and_broken_files_name_the_entry(tmp_path: Path) -> None:
    folder = write_vg(tmp_path / "vg")
    regions = json.loads((folder / "region_descriptions.json").read_text())
    (folder / "region_descriptions.json").write_text(json.dumps(regions[::-1]))
    with pytest.raises(UserError, match=r"region_descriptions.json: entry 1 \(image 1\) is out of image_data"):
        list(load_vg(folder))
    (folder / "region_descriptions.json").write_text(json.dumps(regions)[:-30])
    with pytest.raises(UserError, match=r"region_descriptions\.json: not valid JSON"):
        list(load_vg(folder))
    (folder / "region_descriptions.json").unlink()
    with pytest.raises(UserError, match=r"has no region_descriptions\.json"):
        list(load_vg(folder))


def test_bad_box_names_file_and_image(tmp_path: Path) -> None:
    folder = write_vg(tmp_path / "vg")
    objects = json.loads((folder / "objects.json").read_text())
    del objects[1]["objects"][0]["w"]
    (folder / "objects.json").write_text(json.dumps(objects))
    with pytest.raises(UserError, match=r"objects.json: image 2: an entry needs numeric x, y, w, h"):
        list(load_vg(folder))
