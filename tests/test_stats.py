"""`visinstruct stats`: exact counts on a file written here, the dataset card's YAML and tables, the HTML report
in a real headless Chromium (offline, no console errors, plots, thumbnails, escaped text), bad input."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from visinstruct.cli import main
from visinstruct.core.tokens import estimate_tokens
from visinstruct.core.yaml_text import scalar, size_category
from visinstruct.stats.rejects import reason_code
from visinstruct.stats.tally import Histogram, Reservoir

yaml = pytest.importorskip("yaml")  # the 'filter' extra; scripts/setup.sh installs it
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = "<script>window.__pwned = 1</script>"
OUTSIDE = '<img src="http://example.com/x.png">'


def _turns(questions: list[str], answers: list[str], tag: str = "<image>\n") -> list[dict[str, str]]:
    turns = []
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        turns += [{"from": "human", "value": (tag if i == 0 else "") + q}, {"from": "gpt", "value": a}]
    return turns


def _images(folder: Path) -> dict[str, tuple[int, int]]:
    """Three images of known sizes (one RGBA PNG), and a file that is not an image."""
    folder.mkdir()
    sizes = {"a.jpg": (640, 480), "b.png": (300, 500), "c.jpg": (1000, 200)}
    for name, size in sizes.items():
        mode = "RGBA" if name.endswith(".png") else "RGB"
        Image.new(mode, size, (200, 40, 40, 128) if mode == "RGBA" else (30, 90, 160)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return sizes


def _dataset(tmp_path: Path) -> tuple[Path, list[dict]]:
    """60 planned records plus the planted odd ones; returns the jsonl path and the records."""
    records = []
    for i in range(60):
        rounds = 1 + i % 3
        questions = [f"What is object {k} doing?" for k in range(rounds)]
        answers = ["It is standing near the window. " * (1 + (i + k) % 5) for k in range(rounds)]
        records.append({"id": f"r{i}", "image": ["a.jpg", "b.png", "c.jpg"][i % 3],
                        "conversations": _turns(questions, answers),
                        "task": ["conversation", "complex_reasoning", "detail_description"][i % 3],
                        "lang": ["en", "en", "ru", "zh"][i % 4], "source": "coco2014-val"})
    records += [
        # one image, no <image> tag (LLaVA-Instruct-ru's val split): a mismatch
        {"id": "untagged", "image": "a.jpg", "conversations": _turns(["Где кот?"], ["На столе."], tag=""),
         "task": "conversation", "lang": "ru", "source": "ru-val"},
        # two tags for one image: a mismatch
        {"id": "twice", "image": "b.png", "conversations": _turns(["<image>\nCompare."], ["Same."]),
         "task": "conversation", "lang": "en", "source": "coco2014-val"},
        # text only, no tag: fine; no task, no lang, no source (falls back to the file name)
        {"id": "text-only", "conversations": _turns(["Tell a joke."], ["Why did the cat sit?"], tag="")},
        # two images, two tags: fine
        {"id": "multi", "image": ["a.jpg", "c.jpg"], "conversations": _turns(
            ["<image>\nWhich is wider?"], ["The second one."]), "task": "conversation", "lang": "en",
         "source": "multi"},
        # escaping the root, a missing file, a file that is not an image
        {"id": "escape", "image": "../secret.jpg", "conversations": _turns(["Q?"], ["A."]),
         "task": "conversation", "lang": "en", "source": "coco2014-val"},
        {"id": "missing", "image": "nope.jpg", "conversations": _turns(["Q?"], ["A."]),
         "task": "conversation", "lang": "en", "source": "coco2014-val"},
        {"id": "broken", "image": "broken.jpg", "conversations": _turns([SCRIPT], [OUTSIDE]),
         "task": "conversation", "lang": "en", "source": "coco2014-val"},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path, records


def _rejects(tmp_path: Path) -> Path:
    rows = [{"id": "x1", "reject_stage": "heuristics", "reject_reason": "refusal: As an AI"},
            {"id": "x2", "reject_stage": "heuristics", "reject_reason": "refusal: I cannot see"},
            {"id": "x3", "reject_stage": "structure", "reject_reason": "empty_value: turn 2"},
            {"id": "u1", "status": "rejected", "reason": "no question/answer labels found in the reply"},
            {"id": "u2", "status": "failed", "reason": "HTTP 503 after 5 attempts"},
            {"id": "u3", "status": "failed", "reason": "HTTP 500 after 6 attempts"}]
    path = tmp_path / "rejects.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["stats", *args, "--no-progress"])
    return code, capsys.readouterr().err


def _stats(tmp_path: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[dict, list[dict], Path]:
    data, records = _dataset(tmp_path)
    _images(tmp_path / "img")
    out = tmp_path / "stats.json"
    code, err = _run(capsys, str(data), "--image-root", str(tmp_path / "img"), "--rejects",
                     str(_rejects(tmp_path)), "--json", str(out), *extra)
    assert code == 0, err
    return json.loads(out.read_text()), records, data


def test_counts_are_exact(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stats, records, data = _stats(tmp_path, capsys)
    assert stats["records"] == 67
    assert stats["by_task"] == {"conversation": 26, "complex_reasoning": 20, "detail_description": 20,
                                "(none)": 1}
    assert stats["by_lang"] == {"en": 35, "ru": 16, "zh": 15, "(none)": 1}
    assert stats["by_source"] == {"coco2014-val": 64, "data.jsonl": 1, "multi": 1, "ru-val": 1}
    assert stats["rounds_per_record"] == {"1": 27, "2": 20, "3": 20}
    assert stats["images_per_record"] == {"0": 1, "1": 65, "2": 1}
    assert stats["image_token_mismatch"] == {"records": 2, "by_kind": {"0 <image> for 1 image": 1,
                                                                       "2 <image> for 1 image": 1}}
    assert stats["examples"]["<image> tokens ≠ images"] == [f"{data}:61", f"{data}:62"]
    assert stats["image_files"] == {"ok": 64, "escapes the root": 1, "missing": 1, "unreadable": 1}
    width, height = stats["histograms"]["image_width"], stats["histograms"]["image_height"]
    assert (width["min"], width["max"], height["min"], height["max"]) == (300, 1000, 200, 500)
    assert width["count"] == 64 and width["total"] == 20 * (640 + 300 + 1000) + 2 * 640 + 300 + 1000
    # characters and estimated tokens per turn, recomputed here from the records
    texts = {"human": [], "gpt": []}
    for record in records:
        for turn in record["conversations"]:
            value = turn["value"]
            texts[turn["from"]].append(value.replace("<image>", "").strip() if "<image>" in value else value)
    for role in ("human", "gpt"):
        chars, tokens = stats["histograms"][f"chars_{role}"], stats["histograms"][f"tokens_{role}"]
        assert chars["count"] == len(texts[role]) and chars["total"] == sum(map(len, texts[role]))
        assert tokens["total"] == sum(map(estimate_tokens, texts[role]))
        assert chars["max"] == max(map(len, texts[role])) and chars["min"] == min(map(len, texts[role]))
    assert stats["histograms"]["messages"]["total"] == sum(len(r["conversations"]) for r in records)
    assert stats["made"]["rejects"]["rejected"] == 6
    assert stats["made"]["rejects"]["by_reason"] == {
        "generate failed: HTTP # after # attempts": 2, "heuristics: refusal": 2,
        "generate rejected: no question/answer labels found in the reply": 1, "structure: empty_value": 1}
    assert not stats["problems"] and stats["tokens_exact"] is False


def test_json_list_and_parquet_give_the_same_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The same records as a .json list and as HF parquet shards (image bytes embedded, `{bytes, path}`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, records = _dataset(tmp_path)
    _images(tmp_path / "img")
    plain = [r for r in records if isinstance(r.get("image"), str) and "source" in r]
    as_json, as_parquet = tmp_path / "d.json", tmp_path / "shards"
    as_json.write_text(json.dumps(plain))
    as_parquet.mkdir()
    rows = [dict(r, image={"bytes": b"\xff\xd8" + b"x" * 500, "path": r["image"]}) for r in plain]
    for k in range(2):
        pq.write_table(pa.Table.from_pylist(rows[k::2]), as_parquet / f"train-{k}.parquet", row_group_size=7)
    found = []
    for path in (as_json, as_parquet):
        out = tmp_path / f"{path.name}.stats.json"
        code, err = _run(capsys, str(path), "--json", str(out), "--image-root", str(tmp_path / "img"),
                         "--card", str(tmp_path / f"{path.name}.md"))
        assert code == 0, err
        found.append(json.loads(out.read_text()))
    keys = ("records", "by_task", "by_lang", "by_source", "rounds_per_record", "image_token_mismatch", "image_files")
    json_counts, parquet_counts = ({k: s[k] for k in keys} for s in found)
    assert json_counts == parquet_counts
    assert found[0]["records"] == len(plain) == 65
    assert found[0]["histograms"]["chars_gpt"] == found[1]["histograms"]["chars_gpt"]
    head = yaml.safe_load((tmp_path / "shards.md").read_text().split("---\n")[1])
    assert {"name": "image", "dtype": "image"} in head["dataset_info"]["features"]
    assert head["configs"][0]["data_files"][0]["path"] == ["shards/**/*.parquet"]


def test_parquet_image_bytes_are_not_read(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from visinstruct.stats.inputs import _columns, read_parquet

    rows = [{"id": "1", "image": [{"bytes": b"x" * 100, "path": "a.jpg"}, {"bytes": b"y", "path": "b.jpg"}],
             "conversations": [{"from": "human", "value": "<image>\n<image>\nHi"}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    assert list(read_parquet(tmp_path / "m.parquet")) == [
        (f"{tmp_path / 'm.parquet'}: row 0", {"id": "1", "image": ["a.jpg", "b.jpg"],
                                                "conversations": rows[0]["conversations"]})]
    handle = pq.ParquetFile(tmp_path / "m.parquet")
    assert _columns(handle.schema) == ["id", "image.list.element.path", "conversations"]


def test_a_real_tokenizer_counts_exactly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "what": 1, "is": 2, "it": 3, "a": 4, "cat": 5}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    data = tmp_path / "d.jsonl"
    turns = _turns(["what is it"], ["it is a cat ."])
    data.write_text(json.dumps({"id": "1", "image": "x.jpg", "conversations": turns}) + "\n")
    out = tmp_path / "s.json"
    code, err = _run(capsys, str(data), "--tokenizer", str(tmp_path), "--json", str(out))
    assert code == 0, err
    stats = json.loads(out.read_text())
    assert stats["tokens_exact"] and stats["tokens_method"] == f"tokenizer {tmp_path}"
    assert stats["histograms"]["tokens_human"]["total"] == 3 and stats["histograms"]["tokens_gpt"]["total"] == 5
    assert stats["histograms"]["tokens_record"]["total"] == 8


def _ledger(path: Path) -> None:
    """A generate ledger with the real schema: two models, one failed unit."""
    from visinstruct.generate.ledger import Ledger

    ledger = Ledger(path)
    for i in range(5):
        model = "Qwen2-VL-7B-Instruct" if i < 4 else "gpt-4o-mini"
        request = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 512,
                   "seed": i, "temperature": 0.7}
        if i == 3:
            ledger.record_failure(f"k{i}", f"u{i}", request, "HTTP 500", 5)
        else:
            ledger.record_answer(f"k{i}", f"u{i}", request, "Question:\nA?\n===\nAnswer:\nB.", "stop", 100, 40, 1)
    ledger.close()


def _filter_report(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> Path:
    """A real `visinstruct filter` report (the structure stage needs no extra)."""
    report = tmp_path / "filter.report.json"
    code = main(["filter", str(data), "--out", str(tmp_path / "kept.jsonl"), "--rejects",
                 str(tmp_path / "filter.rejects.jsonl"), "--stages", "structure", "--report", str(report),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    return report


def _table(text: str, heading: str) -> dict[str, str]:
    """The first two columns of the Markdown table under `heading`."""
    section = text.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {cells[0].strip(): cells[1].strip() for cells in rows}


def test_card_header_parses_with_counts_and_how_it_was_made(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, _ = _dataset(tmp_path)
    _ledger(tmp_path / "gen.ledger.sqlite")
    report = _filter_report(tmp_path, data, capsys)
    card = tmp_path / "card" / "README.md"
    code, err = _run(capsys, str(data), "--card", str(card), "--ledger", str(tmp_path / "gen.ledger.sqlite"),
                     "--filter-report", str(report), "--rejects", str(_rejects(tmp_path)), "--license", "cc-by-4.0")
    assert code == 0, err
    text = card.read_text("utf-8")
    assert text.startswith("---\n")
    head = yaml.safe_load(text.split("---\n")[1])
    assert head["license"] == "cc-by-4.0" and head["language"] == ["en", "ru", "zh"]
    assert head["size_categories"] == ["n<1K"]
    assert head["task_categories"] == ["visual-question-answering", "image-text-to-text"]
    assert head["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": ["data.jsonl"]}]}]
    features = {f["name"]: f for f in head["dataset_info"]["features"]}
    assert features["conversations"]["list"] == [{"name": "from", "dtype": "string"},
                                                 {"name": "value", "dtype": "string"}]
    assert features["image"] == {"name": "image", "sequence": "string"}  # one record has a list of images
    assert features["task"]["dtype"] == "string" and head["dataset_info"]["splits"][0]["num_examples"] == 67
    assert _table(text, "### By task") == {"conversation": "26", "complex_reasoning": "20",
                                          "detail_description": "20", "(none)": "1", "**total**": "**67**"}
    assert _table(text, "### By language")["ru"] == "16"
    teachers = re.findall(r"^\| (Qwen2-VL-7B-Instruct|gpt-4o-mini) \| (\d+) \| (\d+) \| ([\d,]+) \|", text, re.M)
    assert teachers == [("Qwen2-VL-7B-Instruct", "3", "1", "300"), ("gpt-4o-mini", "1", "0", "100")]
    assert "Sampling: temperature 0.7, max_tokens 512 (5 units)." in text
    assert re.search(r"^\| structure \| 67 \| \d+ \| \d+ \| .*image_token_mismatch", text, re.M), text
    assert "| heuristics: refusal | 2 |" in text


@pytest.mark.parametrize("n, bucket", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                       (665_298, "100K<n<1M"), (4_200_000, "1M<n<10M"),
                                       (10**12, "n>1T")])
def test_size_categories(n: int, bucket: str) -> None:
    assert size_category(n) == bucket


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_card_yaml_scalars_read_back_as_the_same_string(text: str) -> None:
    assert yaml.safe_load(f"key: {scalar(text)}\n")["key"] == text


@pytest.mark.parametrize("text", ["yes", "No", "1.5", "0x1F", "1_000", "a: b", "#x", "- a", "null", "~", "",
                                  " lead", "n<1K", "10K<n<100K", "[x]", "{a}", "'q'", '"q"', "a\nb", "\u0085"])
def test_card_yaml_tricky_scalars(text: str) -> None:
    assert yaml.safe_load(f"key: {scalar(text)}\n")["key"] == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**7), max_size=300))
def test_histogram_bins_are_exact_after_widening(values: list[int]) -> None:
    hist = Histogram()
    for value in values:
        hist.add(value)
    bins = hist.bins()
    assert sum(c for _, _, c in bins) == len(values) and hist.total == sum(values)
    for start, end, count in bins:
        assert count == sum(start <= v < end for v in values)
    if values:
        assert hist.low == min(values) and hist.high == max(values)
        median = sorted(values)[(len(values) - 1) // 2]  # the quantile is the upper edge of the median's bin
        assert median <= hist.quantile(0.5) < median + hist.width


def test_reservoir_is_seeded_and_bounded() -> None:
    picks = []
    for _ in range(2):
        sample = Reservoir(5, seed=3)
        for i in range(10_000):
            sample.offer(i)
        picks.append(sample.items)
    assert picks[0] == picks[1] and len(picks[0]) == 5 and len(set(picks[0])) == 5
    counts = [0] * 10
    for seed in range(2000):
        sample = Reservoir(1, seed=seed)
        for i in range(10):
            sample.offer(i)
        counts[sample.items[0]] += 1
    assert min(counts) > 130  # ~200 each when uniform


def test_reason_codes() -> None:
    assert reason_code("refusal: As an AI") == "refusal"
    assert reason_code("<st> at 12 is never closed with <ed>") == "<st> at # is never closed with <ed>"
    assert reason_code("box [0.1, 0.2, 1.5, 0.9] is not 4 numbers in [0, 1]") == "box [#] is not # numbers in [#]"
    assert len(reason_code("x" * 500)) == 80


# ---- the HTML report in a real browser ------------------------------------------------------------------

def _browser():
    """Playwright driving Debian's Chromium; a clear failure (not a skip) when either is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium for these tests)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run scripts/setup.sh (the 'dev' extra pins playwright)")
    return sync_playwright()


def test_html_report_offline_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, _ = _dataset(tmp_path)
    _images(tmp_path / "img")
    html = tmp_path / "report.html"
    code, err = _run(capsys, str(data), "--image-root", str(tmp_path / "img"), "--rejects",
                     str(_rejects(tmp_path)), "--html", str(html), "--sample", "67")
    assert code == 0, err
    source = html.read_text("utf-8")
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", source)
    url = html.as_uri()
    with _browser() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            problems, requests = [], []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))

            def route(request_route) -> None:
                requests.append(request_route.request.url)
                if request_route.request.url == url:
                    request_route.continue_()
                else:
                    request_route.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            assert requests == [url], requests  # nothing but the page itself was asked for
            assert not problems, problems
            assert page.locator("figure.plot svg").count() >= 11
            assert page.locator("svg rect.bar").count() > 40
            captions = page.locator("figcaption").all_inner_texts()
            for title in ("Characters per gpt turn", "Tokens per record", "Records by task", "Records by language",
                          "Records by source", "Reject reasons", "Rounds per record", "Image long side"):
                assert any(c.startswith(title) for c in captions), (title, captions)
            widths = page.evaluate("Array.from(document.querySelectorAll('.thumbs img'))"
                                   ".map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            assert len(widths) == 64 and all(ok and 0 < w <= 256 and 0 < h <= 256 for ok, w, h in widths)
            assert page.evaluate("window.__pwned") is None and page.locator("script").count() == 0
            shown = page.evaluate("Array.from(document.querySelectorAll('.turn')).map(t => t.textContent)")
            assert "human<image>\n" + SCRIPT in shown and "gpt" + OUTSIDE in shown  # text, not markup
            assert page.locator(".noimg").all_inner_texts() == ["no image", "../secret.jpg (escapes the root)",
                                                                "nope.jpg (missing)", "broken.jpg (unreadable)"]
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot))
            with Image.open(shot) as image:
                assert image.size == (1300, 900) and len(image.convert("L").getcolors(256)) > 20
        finally:
            browser.close()


# ---- bad input --------------------------------------------------------------------------------------------

def _one_line(code: int, err: str, *parts: str) -> None:
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data, _ = _dataset(tmp_path)
    html, card = tmp_path / "r.html", tmp_path / "README.md"
    _one_line(*_run(capsys, str(tmp_path / "none.jsonl"), "--html", str(html)), "none.jsonl", "not found")
    _one_line(*_run(capsys, str(data), "--html", str(data)), "--html would overwrite the input")
    _one_line(*_run(capsys, str(data), "--html", str(html), "--card", str(html)), "name the same path")
    _one_line(*_run(capsys, str(data), "--image-root", str(tmp_path / "nowhere")), "not a folder")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(data.read_text().replace('"id": "r7"', '"id": r7', 1))
    _one_line(*_run(capsys, str(broken), "--html", str(html), "--card", str(card)), f"{broken}:8", "not valid JSON")
    not_sqlite = tmp_path / "ledger.sqlite"
    not_sqlite.write_text("hello " * 200)
    _one_line(*_run(capsys, str(data), "--card", str(card), "--ledger", str(not_sqlite)), "not a visinstruct generate")
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    _one_line(*_run(capsys, str(data), "--card", str(card), "--ledger", str(empty)), "no such table: units")
    _one_line(*_run(capsys, str(data), "--card", str(card), "--ledger", str(tmp_path / "x.sqlite")), "not found")
    report = tmp_path / "report.json"
    report.write_text('{"stage": "filter"}')
    _one_line(*_run(capsys, str(data), "--card", str(card), "--filter-report", str(report)), "not a visinstruct report")
    _one_line(*_run(capsys, str(data), "--card", str(card), "--rejects", str(tmp_path / "r.txt")), "--rejects expects")
    (tmp_path / "tok.json").write_text("{}")
    _one_line(*_run(capsys, str(data), "--card", str(card), "--tokenizer", str(tmp_path / "tok.json")),
              "not a tokenizers tokenizer.json")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    _one_line(*_run(capsys, str(tmp_path / "bad.parquet"), "--card", str(card)), "not a readable parquet file")
    (tmp_path / "x.txt").write_text("x")
    _one_line(*_run(capsys, str(tmp_path / "x.txt")), "expected .json, .jsonl")
    assert not html.exists() and not card.exists() and not list(tmp_path.glob(".*.tmp"))
    card.write_text("old card")  # a failing run leaves an existing output as it was
    _one_line(*_run(capsys, str(broken), "--card", str(card)), "not valid JSON")
    assert card.read_text() == "old card"


def test_odd_records_are_counted_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "odd.json"
    rows = [[1, 2], {"id": "a"}, {"id": "b", "conversations": [{"from": "robot", "value": "x"}, "hi"]},
            {"id": "c", "conversations": _turns(["Q"], ["A"]), "image": "a.jpg", "source": "s|p", "task": 3}]
    data.write_text(json.dumps(rows))
    out, card = tmp_path / "s.json", tmp_path / "README.md"
    code, err = _run(capsys, str(data), "--json", str(out), "--card", str(card), "--sample", "0")
    assert code == 0, err
    stats = json.loads(out.read_text())
    assert stats["problems"] == {"turn without a known role and a text value": 2, "no conversations list": 1,
                                 "record is not an object": 1}
    assert stats["examples"]["record is not an object"] == [f"{data}: record 0"]
    assert stats["by_task"] == {"(none)": 3, "3": 1} and "| s\\|p | 1 | 25.0% |" in card.read_text()
    assert stats["by_source"] == {"odd.json": 3, "s|p": 1}


def test_sample_is_uniform_and_seeded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from visinstruct.stats import StatsOptions, compute_stats

    path = tmp_path / "many.jsonl"
    rng = random.Random(1)
    path.write_text("".join(json.dumps({"id": str(i), "conversations": _turns(["q"], ["a" * rng.randint(1, 9)],
                                                                             tag="")}) + "\n" for i in range(3000)))
    first = [s.index for s in compute_stats([path], StatsOptions(sample=10, seed=5, progress=False))[1]]
    again = [s.index for s in compute_stats([path], StatsOptions(sample=10, seed=5, progress=False))[1]]
    other = [s.index for s in compute_stats([path], StatsOptions(sample=10, seed=6, progress=False))[1]]
    assert first == again != other and len(set(first)) == 10 and max(first) > 1000
