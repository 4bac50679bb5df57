"""The spine: the import graph, the one atomic writer, optional dependencies checked up front, no hangs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from visinstruct.cli import main
from visinstruct.core.io import AtomicFile, RecordWriter, read_jsonl, write_bytes
from visinstruct.core.step import Step

PACKAGE = REPO / "src" / "visinstruct"
# what each top-level part may import besides itself (stages never import each other)
ALLOWED = {
    "core": set(),
    "sources": {"core"},
    "teachers": {"core"},
    "exec": {"core"},
    "filters": {"core", "exec", "sources", "grounding"},
    "convert": {"core", "exec"},
    "mix": {"core"},
    "check": {"core"},
    "stats": {"core"},
    "view": {"core"},
    "grounding": {"core", "sources"},  # a library (like sources): mentions, counts, boxes vs annotations
    "audit": {"core", "sources", "grounding"},
    "generate": {"core", "exec", "sources", "teachers", "grounding"},
}


def _imports(path: Path) -> set[str]:
    """The top-level visinstruct parts a module imports (relative or absolute)."""
    parts = set()
    package = path.relative_to(PACKAGE).parts[:-1]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                names = base + (node.module.split(".") if node.module else [])
                if names:
                    parts.add(names[0])
                elif node.module is None:
                    parts.update(alias.name for alias in node.names)
            elif node.module and node.module.startswith("visinstruct."):
                parts.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            parts.update(a.name.split(".")[1] for a in node.names if a.name.startswith("visinstruct."))
    return parts


def test_no_stage_imports_another_stage() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0]
        if top not in ALLOWED:
            continue  # cli.py, __main__.py and __init__.py may import anything
        for part in _imports(path) - {top}:
            if part not in ALLOWED[top]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {part}")
    assert not wrong, wrong


def test_every_write_goes_through_the_atomic_writer() -> None:
    """Outside core/io.py no module opens a file for writing, writes bytes/text directly or renames."""
    patterns = ('open("w', "open('w", '"wb"', "'wb'", ".write_bytes(", ".write_text(", "os.replace(", ".rename(")
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == "core/io.py":
            continue
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            if any(p in line for p in patterns):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not found, found


def test_atomic_file_keeps_the_old_output_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), RecordWriter(target) as writer:
        writer.write({"a": 1})
        raise RuntimeError("half-way")
    assert target.read_text() == "old\n" and not list(tmp_path.glob(".*.tmp"))
    (tmp_path / ".out.jsonl.4242.tmp").write_text("left by a killed run")
    write_records_path = tmp_path / "out.jsonl"
    with RecordWriter(write_records_path) as writer:
        writer.write({"a": 2})
    assert target.read_text() == '{"a":2}\n' and not list(tmp_path.glob(".*.tmp"))
    write_bytes(tmp_path / "sub" / "x.bin", b"xyz")
    assert (tmp_path / "sub" / "x.bin").read_bytes() == b"xyz"
    with AtomicFile(tmp_path / "y.bin") as handle:
        handle.write(b"1")
        assert not (tmp_path / "y.bin").exists()
    assert (tmp_path / "y.bin").read_bytes() == b"1"


def test_jsonl_ranges_cover_every_line_once_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * (i % 7)}) for i in range(200)]
    path.write_text("\n".join(lines[:100]) + "\n\n" + "\n".join(lines[100:]) + "\n")
    size = path.stat().st_size
    for step in (1, 17, 300, size):
        got = [(line, rec["n"]) for start in range(0, size, step)
               for line, rec in read_jsonl(path, start, min(start + step, size))]
        assert [n for _, n in got] == list(range(200))
        assert got[100][0] == 102 and got[0][0] == 1  # the blank line 101 is counted
    from visinstruct.core.inputs import read_splits, record_splits

    for split_bytes in (97, 1000):
        items = list(read_splits(record_splits(path, split_bytes)))
        assert [i.record["n"] for i in items] == list(range(200)) and [i.index for i in items] == list(range(200))
        assert items[100].where == f"{path}:102" and items[199].where == f"{path}:201"


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str],
         hidden: tuple[str, ...] = ()) -> tuple[int, str]:
    for module in hidden:
        monkeypatch.setitem(sys.modules, module, None)
    code = main(args)
    return code, capsys.readouterr().err


def _records(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    turns = [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A red bicycle."}]
    path.write_text("".join(json.dumps({"id": str(i), "image": "a.jpg", "conversations": turns}) + "\n"
                            for i in range(5)))
    return path


@pytest.mark.parametrize("flags, hidden, extra", [
    (["--stages", "structure,language"], ("py3langid",), "filter"),
    (["--stages", "structure,spelling"], ("spylls",), "filter"),
    (["--stages", "structure,dedup", "--image-dup", "4", "--image-root", "."], ("imagehash",), "filter"),
    (["--executor", "ray"], ("ray",), "ray"),
])
def test_missing_extra_is_one_line_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture, flags: list[str],
                                                   hidden: tuple[str, ...], extra: str) -> None:
    out = tmp_path / "k.jsonl"
    code, err = _cli(monkeypatch, capsys, ["filter", str(_records(tmp_path)), "--out", str(out),
                                           "--rejects", str(tmp_path / "r.jsonl"), *flags], hidden)
    assert code == 2 and f"pip install 'visinstruct[{extra}]'" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_missing_yaml_and_missing_embedded_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "f.yaml"
    config.write_text("stages: [structure]\n")
    code, err = _cli(monkeypatch, capsys, ["filter", str(_records(tmp_path)), "--out", str(tmp_path / "k.jsonl"),
                                           "--rejects", str(tmp_path / "r.jsonl"), "--config", str(config)], ("yaml",))
    assert code == 2 and "pip install 'visinstruct[filter]'" in err and "yaml" in err
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
                                    "annotations": [{"image_id": 1, "caption": "A dog."}]}))
    code, err = _cli(monkeypatch, capsys, ["generate", "--coco-captions", str(captions), "--out",
                                           str(tmp_path / "o.json")], ("transformers",))
    assert code == 2 and "pip install 'visinstruct[embedded]'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o.json").exists() and not list(tmp_path.glob("*.sqlite*"))
    code, err = _cli(monkeypatch, capsys, ["validate", str(_records(tmp_path)), "--executor", "ray"], ("ray",))
    assert code == 2 and "pip install 'visinstruct[ray]'" in err


@pytest.mark.parametrize("script", [
    # an unknown stage with two workers used to hang forever
    "from visinstruct.cli import main; sys.exit(main(['filter', IN, '--out', OUT, '--rejects', REJ, "
    "'--stages', 'structure,bogus', '--workers', '2']))",
    # a missing language-id package with two workers used to hang too
    "sys.modules['py3langid'] = None; from visinstruct.cli import main; "
    "sys.exit(main(['filter', IN, '--out', OUT, '--rejects', REJ, '--workers', '2']))",
])
def test_former_hangs_return_within_seconds(tmp_path: Path, script: str) -> None:
    prelude = (f"import sys; IN = {str(_records(tmp_path))!r}; OUT = {str(tmp_path / 'o.jsonl')!r}; "
               f"REJ = {str(tmp_path / 'r.jsonl')!r}; ")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", prelude + script], capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "bogus" in result.stderr or "visinstruct[filter]" in result.stderr


def test_a_worker_failure_comes_back_as_one_line(tmp_path: Path) -> None:
    """A step that fails inside a pool worker (here: setup) is reported by the driver, not hung on."""
    source = _records(tmp_path)
    bad = tmp_path / "allow.txt"  # not UTF-8: the driver sees a file, each worker fails to read it in setup
    bad.write_bytes(b"ok\n\xff\xfe\n")
    result = subprocess.run([sys.executable, "-m", "visinstruct", "filter", str(source), "--out",
                             str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl"), "--workers", "2",
                             "--allowlist", str(bad), "--stages", "structure,spelling"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "cannot read the allowlist" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "o.jsonl").exists()


class _DyingStep(Step):
    """A stateless step whose worker process dies on the first batch (as the OOM killer would do it)."""

    name, batch_size = "dies", 2

    def process(self, items: list) -> list:
        import os

        os._exit(1)


def test_a_dead_worker_process_is_one_error_not_a_hang(tmp_path: Path) -> None:
    from visinstruct.core.errors import UserError
    from visinstruct.core.inputs import record_splits
    from visinstruct.core.report import Tally
    from visinstruct.exec.local import LocalExecutor

    started = time.monotonic()
    with pytest.raises(UserError, match="a worker process died"):
        list(LocalExecutor(2).run(record_splits(_records(tmp_path)), [_DyingStep()], Tally(["dies"])))
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("to", ["wds", "parquet"])
def test_failed_sharded_convert_leaves_the_old_output_and_no_shards(tmp_path: Path, to: str) -> None:
    from PIL import Image

    from conftest import run_cli

    images = tmp_path / "img"
    images.mkdir()
    records = []
    for i in range(30):
        if i != 27:  # record 27's image is missing: the run fails after several shards were written
            Image.new("RGB", (8, 8), (i * 8, 0, 0)).save(images / f"{i}.png")
        records.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red."}]})
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("an earlier run's output")
    result = run_cli("convert", str(source), str(out), "--to", to, "--image-root", str(images), "--shard-size", "5")
    assert result.returncode == 2 and "27.png" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "in.jsonl", "out"]
    (images / "27.png").write_bytes((images / "26.png").read_bytes())
    result = run_cli("convert", str(source), str(out), "--to", to, "--image-root", str(images), "--shard-size", "5")
    assert result.returncode == 0, result.stderr
    assert len(list(out.iterdir())) == 6 and not (out / "previous.txt").exists()
