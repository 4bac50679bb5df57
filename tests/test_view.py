"""`visinstruct view`: the offset index, the scans, the markup, the HTTP server, and the page in a real
headless Chromium (Debian's /usr/bin/chromium driven by Playwright; nothing downloads a browser).

`VISINSTRUCT_DOCS_SCREENSHOT=1 pytest tests/test_view.py -k screenshot` also writes docs/viewer.png.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from conftest import REPO
from visinstruct.core.errors import UserError
from visinstruct.view import api, caseless, index, jsonscan
from visinstruct.view.dataset import OffsetDataset, ParquetDataset, open_dataset
from visinstruct.view.markup import segments
from visinstruct.view.query import Query
from visinstruct.view.server import ViewServer, make_server, start

CHROMIUM = Path("/usr/bin/chromium")
LANGS = ("en", "ru", "zh")
QUESTIONS = {"en": "What is on the table?", "ru": "Что лежит на столе?", "zh": "桌子上有什么？"}
ANSWERS = {"en": "A cup of tea and a book.", "ru": "Чашка чая и книга.", "zh": "一杯茶和一本书。"}
NATIVE_BOX = [0.1, 0.2, 0.45, 0.9]
BALL_BOX = [0.6, 0.55, 0.72, 0.8]
PADDED_BOX = [0.3, 0.1, 0.7, 0.5]
BAND_BOX = [0.05, 0.1, 0.4, 0.9]


# ---- data made here ------------------------------------------------------------------------------------

def _photo(path: Path, size: tuple[int, int]) -> None:
    """A flat drawing (sky, grass, a brown 'dog', a red 'ball'): small as PNG, plain to look at."""
    width, height = size
    image = Image.new("RGB", size, (150, 200, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, height * 0.6, width, height], fill=(110, 170, 90))
    draw.ellipse([width * 0.12, height * 0.3, width * 0.43, height * 0.85], fill=(140, 95, 60))
    draw.ellipse([width * 0.62, height * 0.58, width * 0.7, height * 0.76], fill=(220, 50, 40))
    image.save(path)


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def make_records(count: int) -> list[dict[str, Any]]:
    """Two referring records (native markup, LLaVA-1.5 plain box), a needle, one escaping image, fillers."""
    box = ", ".join(str(v) for v in NATIVE_BOX)
    ball = ", ".join(str(v) for v in BALL_BOX)
    records = [
        {"id": "ref-native", "image": "wide.png", "task": "referring_qa", "lang": "en", "source": "svit",
         "conversations": _turns("Where is the dog?", f"The <st>dog<ed> [{box}] lies on the grass near the "
                                                     f"<st>ball<ed> [{ball}].")},
        {"id": "ref-llava15", "image": "tall.png", "task": "refcoco", "lang": "en", "source": "llava15",
         "conversations": _turns("Please provide the bounding box coordinate of the region this sentence "
                                 "describes: brown dog.", "[" + ", ".join(str(v) for v in PADDED_BOX) + "]")},
        {"id": "escapes", "image": "../outside.png", "task": "conversation", "lang": "en", "source": "bad",
         "conversations": _turns("Is this image shown?", "No, its path leaves the image root.")},
    ]
    for i in range(len(records), count):
        lang = LANGS[i % 3]
        answer = "There is a purple giraffe behind the fence." if i == 137 else ANSWERS[lang]
        if i == 3:  # a bare box reaching into the band a padded 640 × 320 image has: in the native frame
            answer = "A cup of tea [" + ", ".join(str(v) for v in BAND_BOX) + "] and a book."
        records.append({"id": f"needle-{i}" if i == 137 else f"{i:06d}-conversation-0", "image": "wide.png",
                        "task": "conversation" if i % 2 else "complex_reasoning", "lang": lang,
                        "source": f"coco-{i % 4}", "conversations": _turns(QUESTIONS[lang], answer)})
    return records


REJECTS = [
    ("refusal", "heuristics", "refusal: As an AI language model"),
    ("too_long", "heuristics", "too_long: 9120 characters > 8000"),
    ("too_long", "heuristics", "too_long: 8800 characters > 8000"),
    ("spelling", "spelling", "spelling: misspelt 'teh' in turn 1; no complete human+gpt pair left"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A jsonl of 200 records, images under a root, a file outside the root, a rejects file of filter."""
    base = tmp_path_factory.mktemp("view")
    root = base / "images"
    root.mkdir()
    _photo(root / "wide.png", (640, 320))
    _photo(root / "tall.png", (240, 480))
    (base / "outside.png").write_bytes((root / "wide.png").read_bytes())
    (root / "notes.txt").write_text("not an image")
    os.symlink(base / "outside.png", root / "link-out.png")
    records = base / "records.jsonl"
    records.write_text("".join(json.dumps(r, ensure_ascii=i % 2 == 0) + "\n" for i, r in enumerate(make_records(200))))
    rejects = base / "rejects.jsonl"
    rows = [{"id": f"rej-{k}", "image": "wide.png", "conversations": _turns("What is it?", f"Answer {k}."),
             "lang": "en", "reject_stage": stage, "reject_reason": reason}
            for k, (_, stage, reason) in enumerate(REJECTS)]
    rejects.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"base": base, "root": root, "records": records, "rejects": rejects}


@pytest.fixture(scope="module")
def server(data: dict[str, Path]) -> Iterator[ViewServer]:
    view = make_server(data["records"], data["root"], data["rejects"], 0, log=lambda _: None)
    start(view)
    yield view
    view.shutdown()
    view.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# ---- the offset index ----------------------------------------------------------------------------------

def _write_rows(path: Path, start: int, stop: int, mode: str = "w") -> None:
    with path.open(mode) as handle:
        for i in range(start, stop):
            handle.write(json.dumps({"id": i, "t": "x" * (i % 13)}) + "\n")


def test_index_of_200k_rows_is_built_once_reused_and_rebuilt_on_change(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "big.jsonl"
    _write_rows(source, 0, 200_000)
    first = index.load_or_build(source, "jsonl")
    stored = index.beside(source)
    assert first.built and first.file == stored and stored.name == ".big.jsonl.viewindex"
    assert len(first) == 200_000 and first.dense
    written = stored.stat().st_mtime_ns
    again = index.load_or_build(source, "jsonl")
    assert not again.built and len(again) == 200_000 and stored.stat().st_mtime_ns == written
    assert isinstance(again.offsets, np.memmap) and again.offsets.dtype == np.uint64
    dataset = OffsetDataset(source, "jsonl", lambda _: None)
    assert [dataset.record(r)["id"] for r in (0, 123_456, 199_999)] == [0, 123_456, 199_999]
    _write_rows(source, 200_000, 200_010, "a")  # appended: size and mtime change
    grown = index.load_or_build(source, "jsonl")
    assert grown.built and len(grown) == 200_010
    dataset.refresh()
    assert len(dataset) == 200_010 and dataset.record(200_009)["id"] == 200_009
    info = source.stat()  # same size, new mtime: stale too
    os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns + 5_000_000_000))
    assert index.load_or_build(source, "jsonl").built
    assert not index.load_or_build(source, "jsonl").built
    dataset.close()


def test_index_goes_to_the_cache_when_it_cannot_be_written_beside(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = tmp_path / "r.jsonl"
    _write_rows(source, 0, 100)
    index.beside(source).mkdir()  # something that is not our index file sits where it would go
    built = index.load_or_build(source, "jsonl")
    assert built.built and built.file == index.in_cache(source)
    assert built.file.is_relative_to(tmp_path / "cache" / "visinstruct" / "view")
    assert not index.load_or_build(source, "jsonl").built
    index.beside(source).rmdir()
    (tmp_path / "stale.jsonl").write_text("{}\n")
    index.beside(tmp_path / "stale.jsonl").write_bytes(b"garbage, not an npy file")
    assert len(index.load_or_build(tmp_path / "stale.jsonl", "jsonl")) == 1  # a broken cache is rebuilt


def test_jsonl_with_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    source = tmp_path / "odd.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"id": 1}\r\n\r\n   \n{"id": 2}\n  {"id": 3}\n\n{"id": 4}')
    dataset = OffsetDataset(source, "jsonl", lambda _: None)
    assert [dataset.record(r)["id"] for r in range(len(dataset))] == [1, 2, 3, 4]
    assert not dataset.index.dense and dataset.line(0) is None
    assert dataset.where(2, exact=True) == f"{source}:5" and dataset.where(3, exact=True) == f"{source}:7"
    assert dataset.where(3) == f"{source}: record 3 (byte 43)"  # no pass over the file to show a record
    assert [row for row, _ in dataset.stream(1)] == [1, 2, 3]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        OffsetDataset(bad, "jsonl", lambda _: None).record(1)


TRICKY = [
    {"id": "a", "v": 'quote " and backslash \\ and \\" both'},
    {"id": "b", "v": "brackets ] } [ { , inside a string", "n": [[1, 2], {"k": [3]}]},
    {"id": "c", "v": "ends with a backslash \\"},
    {"id": "d", "v": "юникод 中文 \u2028 emoji 🐕"},
    {"id": "e", "v": ""},
    5,
    [1, [2, "]"]],
]


@pytest.mark.parametrize("ascii_only", [True, False])
def test_json_list_scanner_finds_every_item_at_any_block_size(tmp_path: Path, ascii_only: bool) -> None:
    source = tmp_path / "list.json"
    source.write_bytes(b"\xef\xbb\xbf \n" + json.dumps(TRICKY, indent=2, ensure_ascii=ascii_only).encode() + b"\n")
    dataset = OffsetDataset(source, "json", lambda _: None)
    assert [dataset.record(r) for r in range(len(dataset))] == TRICKY
    data = source.read_bytes()
    whole = index.build(source, "json")[0]
    for size in (1, 2, 3, 5, 7, 64):
        scanner = jsonscan.ListScanner("x")
        scanner.position = 3
        for at in range(3, len(data), size):
            scanner.feed(data[at:at + size])
        assert np.array_equal(scanner.finish(), whole), size


@pytest.mark.parametrize("text, message", [
    ('{"id": 1}', "not a JSON list"),
    ('[{"id": 1}, {"id": 2}', "never closed"),
    ('[{"id": 1}] [2]', "closed early or followed"),
    ('[{"id": 1}] x', "data after the end"),
    ("   ", "empty file"),
])
def test_a_broken_json_list_is_one_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    source = tmp_path / "broken.json"
    source.write_text(text)
    with pytest.raises(UserError, match=message) as caught:
        open_dataset(source)
    assert str(source) in str(caught.value)


def test_empty_json_list_and_empty_jsonl(tmp_path: Path) -> None:
    (tmp_path / "e.json").write_text("[ \n ]")
    (tmp_path / "e.jsonl").write_text("")
    assert len(open_dataset(tmp_path / "e.json")) == 0 and len(open_dataset(tmp_path / "e.jsonl")) == 0
    assert api.search(open_dataset(tmp_path / "e.jsonl"), Query(text="x"), 0, 10, 1)["done"]


# ---- scans, queries, markup ----------------------------------------------------------------------------

def test_search_is_a_time_boxed_scan_that_continues(tmp_path: Path) -> None:
    source = tmp_path / "scan.jsonl"
    with source.open("w") as handle:
        for i in range(150_000):
            text = "a purple giraffe" if i in (149_990, 149_995) else "a cup of tea"
            lang = "ru" if i == 149_995 else "en"
            record = {"id": i, "lang": lang, "conversations": [{"from": "gpt", "value": text}]}
            handle.write(json.dumps(record) + "\n")
    dataset = open_dataset(source)
    first = api.search(dataset, Query(text="Purple GIRAFFE"), 0, 10, 0.0)
    assert not first["done"] and first["rows"] == [] and 0 < first["next"] < 150_000
    found, cursor, done = [], first["next"], False
    while not done:
        answer = api.search(dataset, Query(text="purple giraffe"), cursor, 10, 0.05)
        found += [row["row"] for row in answer["rows"]]
        cursor, done = answer["next"], answer["done"]
    assert found == [149_990, 149_995]
    answer = api.search(dataset, Query(text="giraffe", lang="ru"), 0, 10, 5.0)
    assert [row["row"] for row in answer["rows"]] == [149_995] and answer["done"]
    one = api.search(dataset, Query(text="giraffe"), 0, 1, 5.0)
    assert [row["row"] for row in one["rows"]] == [149_990] and one["next"] == 149_991 and not one["done"]


ESCAPED = {"id": "x-Ω-7", "lang": "ru", "source": "a/b", "task": "conversation", "reject_stage": "heuristics",
           "reject_reason": "too_long: 9000 > 8000",
           "conversations": [{"from": "human", "value": "Где \"ЖИРАФ\"?\n"}, {"from": "gpt", "value": "Там."}]}
PLAIN = {**ESCAPED, "conversations": [{"from": "human", "value": "Где ЖИРАФ?"}, {"from": "gpt", "value": "Там."}]}


@pytest.mark.parametrize("record", [ESCAPED, PLAIN])
@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_query_raw_test_never_misses_a_match(record: dict, ensure_ascii: bool) -> None:
    raw = json.dumps(record, ensure_ascii=ensure_ascii).encode()
    assert (b"\\" in raw) == (record is ESCAPED or ensure_ascii)  # the plain UTF-8 row takes the byte test
    matching = [Query(text="жираф"), Query(id="Ω-7"), Query(source="a/b"), Query(lang="ru", task="conversation"),
                Query(reason="too_long"), Query(reason="heuristics"), Query(text="там", reason="too_long", lang="ru")]
    if record is ESCAPED:
        matching.append(Query(text='"жираф"?'))
    for query in matching:
        assert query.test(raw)[0], query
    for query in (Query(text="giraffe"), Query(id="y"), Query(lang="en"), Query(reason="refusal"),
                  Query(text="human"), Query(task="conv"), Query(reason="too")):
        assert not query.test(raw)[0], query


ALPHABET = "aAbBiIkKsSzZé \n\"\\/\t\u0130\u0131\u212a\u2126ßẞΣσςжЖзЗ中文ё"


@settings(max_examples=400, deadline=None)
@given(st.text(ALPHABET, max_size=12), st.text(ALPHABET, max_size=12), st.text(ALPHABET, min_size=1, max_size=4),
       st.booleans(), st.sampled_from(["same", "upper", "lower", "swap"]), st.sampled_from(["", "ru", "é", "A"]),
       st.booleans())
def test_the_raw_test_agrees_with_the_exact_one(before: str, after: str, word: str, ensure_ascii: bool,
                                               case: str, lang: str, escape_a: bool) -> None:
    """Whatever the text, its case and its escapes: when a record matches, its raw bytes (row or chunk) may."""
    text = before + word + after
    query = Query(text={"same": word, "upper": word.upper(), "lower": word.lower(), "swap": word.swapcase()}[case],
                  lang=lang)
    record = {"id": "r", "lang": lang, "conversations": [{"from": "gpt", "value": text}]}
    raw = json.dumps(record, ensure_ascii=ensure_ascii).encode()
    if escape_a:  # a writer that escapes an ASCII letter (json.dumps writes hex digits in lower case)
        raw = raw.replace(b"A", b"\\u0041")
    assert json.loads(raw) == record
    if query.matches(record):
        assert query.may_match(raw) and query.may_match(raw + b"\n" + raw)
    pattern = caseless.pattern(query.text.lower())
    if pattern is not None and query.text.lower() in text.lower():
        assert pattern.search(text.encode())


def test_markup_pieces_and_boxes() -> None:
    boxes: list[dict] = []
    text = ("<image>\nThe <st>cups<ed> [0.1, 0.2, 0.3, 0.4] and [0.5, 0.5, 0.6, 0.6] and <st>sun<ed> "
            "and a list [1, 2, 3, 4] then [0.12,0.3,0.5,0.9]")
    pieces = segments(text, boxes, 1)
    kinds = [p["t"] for p in pieces]
    assert kinds == ["image", "text", "ref", "text", "ref", "text", "box"]
    assert [b["label"] for b in boxes] == ["cups", "cups", "#3"]
    assert [b["xyxy"] for b in boxes] == [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6], [0.12, 0.3, 0.5, 0.9]]
    assert [p["box"] for p in pieces[2]["boxes"] if p["t"] == "box"] == [0, 1]
    assert pieces[4] == {"t": "ref", "v": "sun", "boxes": []}
    assert "[1, 2, 3, 4]" in pieces[5]["v"]  # not a box: numbers above 1
    cut = segments("x" * 100_005, [], 0)
    assert cut[-1]["t"] == "cut" and "5 more characters" in cut[-1]["v"]


def test_parquet_folder_rows_and_embedded_images(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    _photo(tmp_path / "p.png", (64, 32))
    png = (tmp_path / "p.png").read_bytes()
    for shard in range(2):
        table = pa.table({
            "id": [f"{shard}-{i}" for i in range(30)],
            "image": [{"bytes": png, "path": f"{shard}-{i}.png"} for i in range(30)],
            "conversations": [_turns("What?", f"Row {shard}-{i} answer.") for i in range(30)],
            "lang": ["en" if i % 2 else "zh" for i in range(30)],
        })
        pq.write_table(table, folder / f"train-{shard:05d}-of-00002.parquet", row_group_size=7)
    dataset = open_dataset(folder)
    assert isinstance(dataset, ParquetDataset) and len(dataset) == 60
    assert dataset.record(37)["id"] == "1-7" and dataset.record(37)["image"] == "1-7.png"
    assert dataset.image(37, 0) == png and dataset.image(37, 1) is None
    answer = api.search(dataset, Query(text="row 1-2", lang="zh"), 0, 50, 5.0)
    assert [r["id"] for r in answer["rows"]] == ["1-2", "1-20", "1-22", "1-24", "1-26", "1-28"] and answer["done"]
    detail = api.detail(dataset, "main", 37, tmp_path)
    assert detail["images"] == [{"path": "1-7.png", "url": "/rowimage?ds=main&row=37&k=0"}]
    view = ViewServer(0, {"main": dataset}, tmp_path)
    start(view)
    try:
        status, body = _get(view.url + "rowimage?ds=main&row=37&k=0")
        assert status == 200 and body == png
        assert _get(view.url + "rowimage?ds=main&row=37&k=3")[0] == 404
    finally:
        view.shutdown()
        view.close()


# ---- the HTTP server -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "../outside.png", "%2e%2e/outside.png", "%2E%2E%2Foutside.png", "..%2f..%2f..%2fetc%2fpasswd",
    "../../../../etc/passwd", "/etc/passwd", "%2Fetc%2Fpasswd", "link-out.png", "notes.txt", "a%00.png", "",
])
def test_image_paths_outside_the_root_are_refused(server: ViewServer, path: str) -> None:
    status, body = _get(server.url + "image?path=" + path)
    assert status == 403 and b"refused" in body and b"PNG" not in body


def test_images_and_api_over_http(server: ViewServer, data: dict[str, Path]) -> None:
    status, body = _get(server.url + "image?path=wide.png")
    assert status == 200 and body == (data["root"] / "wide.png").read_bytes()
    assert _get(server.url + "image?path=missing.png")[0] == 404
    assert _get(server.url + "image/../../etc/passwd")[0] == 404
    assert _get(server.url + "api/info", {"Host": "evil.example:80"})[0] == 403
    info = json.loads(_get(server.url + "api/info")[1])
    assert info["datasets"]["main"]["count"] == 200 and info["datasets"]["rejects"]["count"] == 4
    assert dict(info["datasets"]["rejects"]["facets"]["reason"]) == {"too_long": 2, "refusal": 1, "spelling": 1}
    record = json.loads(_get(server.url + "api/record?row=2")[1])
    assert record["images"] == [{"path": "../outside.png", "error": "outside the image root"}]
    status, body = _get(server.url + "api/record?row=999")
    assert status == 400 and b"no record 999" in body
    assert _get(server.url + "api/page?start=x")[0] == 400


def _signals_as_a_background_job() -> None:
    """In the child: SIGINT ignored and blocked, as a shell script's `cmd &` (or a test runner) may leave it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.parametrize("inherited", [None, _signals_as_a_background_job])
def test_cli_prints_the_url_and_stops_cleanly(data: dict[str, Path], tmp_path: Path,
                                               inherited: Callable[[], None] | None) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "visinstruct", "view", str(data["records"]), "--image-root",
                             str(data["root"]), "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=inherited)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        assert json.loads(_get(url + "api/info")[1])["datasets"]["main"]["count"] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    result = subprocess.run([sys.executable, "-m", "visinstruct", "view", str(tmp_path / "nope.jsonl")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "nope.jsonl: not found" in result.stderr


# ---- the page in a real browser ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless. Missing is a failure (not a skip): the page is only tested this way."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium) to test the viewer")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run scripts/setup.sh (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: ViewServer) -> Iterator[Any]:
    """A fresh page on the viewer; console errors and page errors are collected and must stay empty."""
    context = browser.new_context(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(server.url)
    tab.wait_for_selector("#box-0")
    yield tab
    context.close()
    assert errors == []


def _rect(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box


def _assert_box(page: Any, index_: int, xyxy: list[float], frame: dict[str, float]) -> None:
    """Box `index_` drawn at xyxy × the frame (the image itself, or the padded square)."""
    x1, y1, x2, y2 = xyxy
    drawn = _rect(page, f"#box-{index_}")
    want = {"x": frame["x"] + x1 * frame["width"], "y": frame["y"] + y1 * frame["height"],
            "width": (x2 - x1) * frame["width"], "height": (y2 - y1) * frame["height"]}
    for key, value in want.items():
        assert abs(drawn[key] - value) <= 1.5, (key, drawn, want)


def _list_ids(page: Any) -> list[str]:
    return page.locator("#list .item .id").all_inner_texts()


def _rows(page: Any) -> list[int]:
    return page.locator("#list .item").evaluate_all("items => items.map(item => Number(item.dataset.row))")


def _done(page: Any, selector: str) -> None:
    """Click and wait until the page of rows or matches it starts is complete."""
    before = page.locator("#status").get_attribute("data-finished")
    page.click(selector)
    page.wait_for_function(f"() => document.getElementById('status').dataset.finished !== '{before}'")


def test_screenshot_image_beside_conversation_with_boxes_in_both_frames(page: Any, tmp_path: Path) -> None:
    assert page.locator("#list .item").count() == 50
    assert page.locator("#where").inner_text().startswith("row 0")
    image, turns = _rect(page, "#img"), _rect(page, "#turns")
    assert image["x"] + image["width"] <= turns["x"] and image["y"] < turns["y"] + turns["height"]
    assert (image["width"], image["height"]) == (512, 256)  # 640 × 320 drawn with a 512 px long side
    assert page.locator(".chip-image").first.inner_text() == "<image>"
    assert page.locator("mark.ref").all_inner_texts() == ["dog", "ball"]
    assert page.locator("#box-0 span").inner_text() == "dog"
    # auto: <st> markup → the native frame, boxes over the image itself
    assert page.locator("#box-0").get_attribute("data-frame") == "native" and page.locator(".pad").count() == 0
    _assert_box(page, 0, NATIVE_BOX, image)
    _assert_box(page, 1, BALL_BOX, image)
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot))
    box = _rect(page, "#box-0")
    pixel = Image.open(shot).convert("RGB").getpixel((round(box["x"] + 1), round(box["y"] + box["height"] / 2)))
    assert all(abs(a - b) <= 40 for a, b in zip(pixel, (0xE6, 0x19, 0x4B), strict=True)), pixel  # the box's red
    if os.environ.get("VISINSTRUCT_DOCS_SCREENSHOT"):  # docs/viewer.png: the same view, filtered to English
        page.fill("#q-lang", "en")  # (machines without a CJK font draw the Chinese rows as boxes)
        _done(page, "#go")
        page.wait_for_selector("#box-1")
        (REPO / "docs").mkdir(exist_ok=True)
        page.screenshot(path=str(REPO / "docs" / "viewer.png"))
        _done(page, "#clear")
        page.wait_for_selector("#box-1")
    # the square-padded frame: the image centred on a 512 square, grey bands above and below
    page.select_option("#frame", "padded")
    stage, image = _rect(page, "#stage"), _rect(page, "#img")
    assert stage["width"] == stage["height"] == 512 and image["y"] - stage["y"] == 128
    assert page.locator(".pad").count() == 2 and page.locator("#box-0").get_attribute("data-frame") == "padded"
    _assert_box(page, 0, NATIVE_BOX, stage)
    # a LLaVA-1.5 record (plain box text, tall image): auto → padded, bands left and right
    page.select_option("#frame", "auto")
    page.locator("#list .item").nth(1).click()
    page.wait_for_function("() => document.querySelector('#box-0')?.dataset.frame === 'padded' && "
                           "document.getElementById('where').textContent.startsWith('row 1 ')")
    stage, image = _rect(page, "#stage"), _rect(page, "#img")
    assert (stage["width"], stage["height"]) == (512, 512) and image["x"] - stage["x"] == 128
    assert page.locator(".boxchip").inner_text() == "[" + ", ".join(str(v) for v in PADDED_BOX) + "]"
    _assert_box(page, 0, PADDED_BOX, stage)
    page.select_option("#frame", "native")
    _assert_box(page, 0, PADDED_BOX, _rect(page, "#img"))
    page.select_option("#frame", "auto")
    page.locator("#list .item").nth(3).click()  # a bare box in the padding band: auto → native
    page.wait_for_function("() => document.querySelector('#box-0')?.dataset.frame === 'native' && "
                           "document.getElementById('where').textContent.startsWith('row 3 ')")
    _assert_box(page, 0, BAND_BOX, _rect(page, "#img"))
    assert "(auto) in the native frame" in page.locator("#frameinfo").inner_text()
    # an image path that leaves the root is not requested: the page says why
    page.locator("#list .item").nth(2).click()
    page.wait_for_selector(".noimg")
    assert "outside the image root" in page.locator(".noimg").inner_text()


def test_filters_and_search_change_what_is_shown(page: Any) -> None:
    page.fill("#q-text", "PURPLE giraffe")
    _done(page, "#go")
    assert _list_ids(page) == ["needle-137"]
    page.wait_for_function("() => document.getElementById('where').textContent.startsWith('row 137 ')")
    assert "purple giraffe" in page.locator("#turns").inner_text()
    assert "1 match on this page" in page.locator("#status").inner_text()
    _done(page, "#clear")
    assert _rows(page) == list(range(50))
    page.fill("#q-lang", "ru")
    page.fill("#q-task", "conversation")
    _done(page, "#go")
    assert _rows(page) == list(range(7, 200, 6))  # ru: i % 3 == 1, conversation: odd i
    assert "Что лежит на столе?" in page.locator("#turns").inner_text()
    _done(page, "#clear")
    page.fill("#q-id", "ref-")
    _done(page, "#go")
    assert _list_ids(page) == ["ref-native", "ref-llava15"]
    page.fill("#q-id", "")
    page.fill("#q-source", "coco-3")
    _done(page, "#go")
    assert _rows(page) == list(range(3, 200, 4)) and page.locator("#next").is_disabled()
    assert "searched to the end" in page.locator("#status").inner_text()
    page.fill("#q-source", "")
    page.fill("#q-text", "cup of TEA")  # the English answers: 66 rows, two pages
    _done(page, "#go")
    assert _rows(page) == list(range(3, 153, 3)) and page.locator("#next").is_enabled()
    _done(page, "#next")
    assert _rows(page) == list(range(153, 200, 3)) and "searched to the end" in page.locator("#status").inner_text()
    _done(page, "#prev")
    assert _rows(page) == list(range(3, 153, 3))
    _done(page, "#clear")
    _done(page, "#ds-rejects")
    assert _list_ids(page) == ["rej-0", "rej-1", "rej-2", "rej-3"]
    page.fill("#q-reason", "too_long")
    _done(page, "#go")
    assert _list_ids(page) == ["rej-1", "rej-2"]
    page.wait_for_function("() => document.getElementById('meta').textContent.includes('rejected: too_long')")
    page.fill("#q-reason", "spelling")
    _done(page, "#go")
    assert _list_ids(page) == ["rej-3"]
    page.fill("#q-reason", "")
    _done(page, "#ds-main")
    assert _rows(page) == list(range(50))
    page.fill("#goto", "137")
    page.press("#goto", "Enter")
    page.wait_for_function("() => document.getElementById('where').textContent.startsWith('row 137 ')")
    assert _rows(page) == list(range(100, 150))
    page.locator("#turns").click()
    page.keyboard.press("j")
    page.wait_for_function("() => document.getElementById('where').textContent.startsWith('row 138 ')")


def test_browser_path_traversal_is_refused(page: Any, server: ViewServer) -> None:
    for path in ("../outside.png", "%2e%2e%2foutside.png", "link-out.png", "/etc/passwd"):
        response = page.request.get(server.url + "image?path=" + path)
        assert response.status == 403, path
    assert page.request.get(server.url + "image?path=wide.png").status == 200
