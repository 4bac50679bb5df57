"""Square padding: hand-computed cases and a round-trip property."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visinstruct.core.boxes import find_boxes, pad_box, pad_boxes_in_text, unpad_box


@pytest.mark.parametrize("box, width, height, expected", [
    # landscape 640 x 480: y shifted by 80 px, everything divided by 640
    ([0.1, 0.2, 0.3, 0.4], 640, 480, [0.1, 0.275, 0.3, 0.425]),
    ([0.0, 0.0, 1.0, 1.0], 640, 480, [0.0, 0.125, 1.0, 0.875]),
    # portrait 300 x 600: x shifted by 150 px, divided by 600
    ([0.0, 0.5, 1.0, 1.0], 300, 600, [0.25, 0.5, 0.75, 1.0]),
    ([0.5, 0.0, 0.5, 0.25], 300, 600, [0.5, 0.0, 0.5, 0.25]),
    # square: identity
    ([0.123, 0.456, 0.789, 0.999], 500, 500, [0.123, 0.456, 0.789, 0.999]),
    # touching every edge of a 1000 x 250 image: y range becomes [0.375, 0.625]
    ([0.0, 0.0, 1.0, 1.0], 1000, 250, [0.0, 0.375, 1.0, 0.625]),
    ([0.0, 0.0, 0.001, 0.001], 1000, 250, [0.0, 0.375, 0.001, 0.375]),
])
def test_hand_computed(box, width, height, expected) -> None:
    assert pad_box(box, width, height) == expected


def test_text_several_boxes_separators_markup_and_non_boxes() -> None:
    text = ("<st>dog<ed> [0.1, 0.2, 0.3, 0.4] next to <st>people<ed> [0.5,0.5,0.6,0.6], [0.7 ,\n0.1,0.8, 0.2]\n"
            "values [1, 2, 3], [0.1, 0.2, 0.3], [0.2, 2.5, 0.3, 0.4], [0.5, 0.5, 0.4, 0.6], "
            "[0.1, 0.2, 0.3, 0.4, 0.5] and [0.25, 0.25, 0.75, 0.75]")
    assert pad_boxes_in_text(text, 640, 480) == (
        "<st>dog<ed> [0.1, 0.275, 0.3, 0.425] next to <st>people<ed> [0.5, 0.5, 0.6, 0.575], "
        "[0.7, 0.2, 0.8, 0.275]\n"
        "values [1, 2, 3], [0.1, 0.2, 0.3], [0.2, 2.5, 0.3, 0.4], [0.5, 0.5, 0.4, 0.6], "
        "[0.1, 0.2, 0.3, 0.4, 0.5] and [0.25, 0.3125, 0.75, 0.6875]".replace("0.3125", "0.312")
        .replace("0.6875", "0.688"))


def test_each_box_is_moved_exactly_once() -> None:
    once = pad_boxes_in_text("[0.0, 0.0, 1.0, 1.0] [0.0, 0.0, 1.0, 1.0]", 800, 400)
    assert once == "[0.0, 0.25, 1.0, 0.75] [0.0, 0.25, 1.0, 0.75]"


def test_cli_reads_stdin_writes_stdout() -> None:
    result = subprocess.run([sys.executable, "-m", "visinstruct", "pad-boxes", "--width", "300", "--height", "600"],
                            input="A <st>cat<ed> [0.0, 0.5, 1.0, 1.0] and [1, 2, 3].\n", capture_output=True,
                            text=True)
    assert result.returncode == 0
    assert result.stdout == "A <st>cat<ed> [0.25, 0.5, 0.75, 1.0] and [1, 2, 3].\n"


coordinate = st.floats(0.0, 1.0, allow_nan=False)
size = st.integers(1, 4000)


@given(coordinate, coordinate, coordinate, coordinate, size, size)
def test_pad_then_unpad_returns_the_box(a, b, c, d, width, height) -> None:
    box = [min(a, c), min(b, d), max(a, c), max(b, d)]
    back = unpad_box(pad_box(box, width, height), width, height)
    # rounding to 3 decimals in the padded frame is at most 0.0005 of the long side
    tolerance = 0.0005 * max(width, height) / min(width, height) + 1e-9
    assert all(abs(x - y) <= tolerance for x, y in zip(box, back, strict=True))


@given(coordinate, coordinate, coordinate, coordinate, size, size)
def test_text_round_trip_finds_and_moves_every_box(a, b, c, d, width, height) -> None:
    box = [round(min(a, c), 3), round(min(b, d), 3), round(max(a, c), 3), round(max(b, d), 3)]
    text = f"<st>x<ed> [{box[0]}, {box[1]}, {box[2]}, {box[3]}]"
    assert find_boxes(pad_boxes_in_text(text, width, height)) == [pad_box(box, width, height)]
