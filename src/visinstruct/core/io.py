"""The one I/O layer: streaming record readers with file:line errors, the one atomic writer, shard names,
and the one path-safety check. Every stage reads and writes through here.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import ijson
import orjson

from .errors import UserError

RECORD_SUFFIXES = (".json", ".jsonl")
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark, which some editors write first: skipped by every reader
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def output_format(path: Path) -> str:
    """`json` (a list) or `jsonl`, chosen by the file extension."""
    suffix = path.suffix.lower()
    if suffix in RECORD_SUFFIXES:
        return suffix[1:]
    raise UserError(f"{path}: expected a .json or .jsonl file")


# ---- the atomic writer ---------------------------------------------------------------------------------

class AtomicFile:
    """A file written under a temporary name in the same folder, fsynced and renamed into place on success.

    On an exception the temporary file is removed and a pre-existing file at `path` is left untouched.
    Temporary names are unique (`.<name>.<random>.tmp`); a durable write (`fsync=True`, the default) first
    removes the temporaries that runs killed while writing the same path left behind. `fsync=False` is for
    bulk files (images) whose index file is fsynced after them: a kill never leaves half a file.
    """

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path, self.fsync = path, fsync
        self.tmp: Path | None = None
        self.handle: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.fsync:
                for stale in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.tmp"):
                    stale.unlink(missing_ok=True)
            fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        self.tmp, self.handle = Path(name), os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        assert self.handle is not None and self.tmp is not None
        if kind is not None:
            self._discard()
            return
        try:
            self.handle.flush()
            if self.fsync:
                os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self._discard()
            raise UserError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self.handle.close()
        remove_quietly(self.tmp)


class AtomicDir:
    """A folder built under a temporary name beside `path` (shards, a model cache). On success it replaces
    `path` — a folder or file already there is moved aside first and removed only after the new one is in
    place; on failure the temporary folder is removed and `path` is left as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> Path:
        try:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp.mkdir(parents=True)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        return self.tmp

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = self.path.with_name(f".{self.path.name}.{os.getpid()}.old")
        try:
            if self.path.exists():
                os.replace(self.path, old)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise UserError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            remove_quietly(old)


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary folder for spill files (not outputs), removed with everything in it when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def open_scratch(path: Path) -> IO[bytes]:
    """A spill file inside a `scratch_dir` folder, opened for writing (it is never an output)."""
    return path.open("wb")


def write_bytes(path: Path, data: bytes | memoryview, fsync: bool = True) -> None:
    """Write one whole file atomically (see AtomicFile)."""
    with AtomicFile(path, fsync) as handle:
        handle.write(data)


def write_json(path: Path, value: Any) -> None:
    """A JSON document (a report, a lock file), indented, written atomically."""
    write_bytes(path, orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


class RecordWriter:
    """Streams records as a .json list or .jsonl through an AtomicFile: a reader never sees half a file.

    `digest` is the SHA-256 of the records written (each one's JSON + newline: the same whatever the framing).
    """

    def __init__(self, path: Path) -> None:
        self.path, self.format, self.count = path, output_format(path), 0
        self.file = AtomicFile(path)
        self.digest = hashlib.sha256()

    def __enter__(self) -> RecordWriter:
        self.handle = self.file.__enter__()
        if self.format == "json":
            self.handle.write(b"[")
        return self

    def write(self, record: Any) -> None:
        """Append one record."""
        self.write_raw(orjson.dumps(record))

    def write_raw(self, data: bytes) -> None:
        """Append one record already serialized with orjson."""
        self.digest.update(data + b"\n")
        if self.format == "json":
            self.handle.write(b"\n" if self.count == 0 else b",\n")
        self.handle.write(data)
        if self.format == "jsonl":
            self.handle.write(b"\n")
        self.count += 1

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        if kind is None and self.format == "json":
            try:
                self.handle.write(b"\n]\n")
            except BaseException as exc:
                self.file.__exit__(type(exc), exc, None)
                raise
        self.file.__exit__(kind, error, trace)


class LineAppender:
    """A .jsonl file that grows as work finishes: each call appends whole lines in one write.

    Opened lazily (nothing is created or truncated before the first line), after cutting the file back to
    `keep` bytes — the size a ledger vouches for — so that a line half-written by a killed process, or lines
    whose unit the ledger does not count as written, are dropped and written again.
    """

    def __init__(self, path: Path, keep: int) -> None:
        self.path, self.keep, self.fd = path, keep, -1
        self.end = self.promised = keep  # bytes written; bytes written once the promised lines are
        self.broken: str | None = None  # why writing stopped

    def promise(self, size: int) -> int:
        """The file's size once `size` more bytes are written after those promised before (written later)."""
        self.promised += size
        return self.promised

    @staticmethod
    def encode(records: Iterable[Any]) -> bytes:
        """The lines of these records."""
        return b"".join(orjson.dumps(record) + b"\n" for record in records)

    def append(self, records: Iterable[Any]) -> int:
        """Write these records as lines; returns the file's size after them."""
        return self.write(self.encode(records))

    def write(self, data: bytes, expect: int | None = None) -> int:
        """Write encoded lines (see `encode`); returns the file's size after them. `expect`: the size they were
        promised to end at. After a failed write nothing more is written (the file may end in a torn line,
        which the ledger does not vouch for)."""
        if self.broken is not None:
            raise UserError(self.broken)
        if expect is not None and self.end + len(data) != expect:
            self.broken = (f"{self.path}: lines out of step with the ledger (at {self.end:,} bytes, expected to "
                           f"end at {expect:,}); what was answered is in the ledger: re-run to continue")
            raise UserError(self.broken)
        try:
            if self.fd < 0:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
                os.ftruncate(self.fd, self.keep)
                os.lseek(self.fd, self.keep, os.SEEK_SET)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.broken = (f"{self.path}: cannot write ({exc.strerror or exc}); what was answered is in the "
                           "ledger: re-run to continue")
            raise UserError(self.broken) from None
        self.end += len(data)
        self.promised = max(self.promised, self.end)
        return self.end

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


def write_records(path: Path, records: Iterable[Any]) -> int:
    """Write all records atomically; returns how many."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count


def shard_name(stem: str, rank: int, world: int, suffix: str) -> str:
    """`stem-00003-of-00016.suffix`: the name of rank `rank`'s shard among `world`."""
    return f"{stem}-{rank:05d}-of-{world:05d}{suffix}"


# ---- readers -------------------------------------------------------------------------------------------

def open_input(path: Path) -> IO[bytes]:
    """An input file for reading; a missing file, a folder or an unreadable file is a one-line UserError."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({exc.strerror or exc})") from None


def read_jsonl(path: Path, start: int = 0, end: int | None = None,
               lines_before: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line whose first byte lies in [start, end).
    `lines_before` (the newlines before `start`, see `newlines_before`) spares counting them here."""
    with open_input(path) as handle:
        line_no = 0
        if start > 0:
            handle.seek(start - 1)
            # the line that straddles `start` belongs to the previous range
            skipped = handle.read(1) != b"\n" and handle.readline().endswith(b"\n")
            before = newlines_before(path, [start])[0] if lines_before is None else lines_before
            line_no = before + skipped
        while end is None or handle.tell() < end:
            line = handle.readline()
            if not line:
                return
            line_no += 1
            if line_no == 1 and line.startswith(BOM):
                line = line[len(BOM):]
            if line.strip():
                try:
                    yield line_no, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise _line_error(f"{path}:{line_no}", line, exc) from None


def _line_error(where: str, line: bytes, exc: Exception) -> UserError:
    """A bad JSONL line: invalid UTF-8 (with the byte) or invalid JSON (with orjson's reason)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return UserError(f"{where}: not valid JSON: invalid UTF-8 at byte {bad.start + 1} of the line")
    return UserError(f"{where}: not valid JSON ({exc})")


def decode_utf8(data: bytes, name: str) -> str:
    """`data` as text; bytes that are not UTF-8 are a one-line error naming `name`, the line and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        raise UserError(f"{name}: not valid UTF-8 (line {line}, byte {bad.start + 1})") from None


def newlines_before(path: Path, offsets: list[int]) -> list[int]:
    """For each offset (ascending), how many newlines the file has before it: one pass over the file."""
    counts, total, position = [], 0, 0
    with open_input(path) as handle:
        for offset in offsets:
            while position < offset:
                block = handle.read(min(1 << 20, offset - position))
                if not block:
                    break
                total += block.count(b"\n")
                position += len(block)
            counts.append(total)
    return counts


def read_json_list(path: Path) -> Iterator[Any]:
    """The items of a top-level JSON list, streamed with ijson (memory does not grow with the file)."""
    with open_input(path) as handle:
        start = _skip_bom(handle)
        head = handle.read(4096).lstrip(b" \t\r\n")
        if head[:1] != b"[":
            raise UserError(f"{path}: the top level is not a JSON list of records "
                            f"(starts with {head[:20].decode('utf-8', 'replace')!r}); use .jsonl for one per line")
        handle.seek(start)
        count = 0
        try:
            for item in ijson.items(handle, "item", use_float=True):
                yield item
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            where = f" near byte {handle.tell():,}" if not handle.closed else ""
            raise UserError(f"{path}: not valid JSON after {count} records{where} ({_reason(exc)})") from None


def _skip_bom(handle: IO[bytes]) -> int:
    """Move past a UTF-8 byte order mark at the start of the file; returns where the JSON starts."""
    if handle.read(len(BOM)) == BOM:
        return len(BOM)
    handle.seek(0)
    return 0


def _reason(exc: Exception) -> str:
    """The first line of a parser's message (yajl's comes as bytes, with a multi-line excerpt)."""
    raw = exc.args[0] if exc.args else ""
    text = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    return reason.replace("UTF8", "UTF-8")


def read_records(path: Path) -> Iterator[Any]:
    """Records from a .json list (streamed) or .jsonl; errors name the file and the line or record."""
    if output_format(path) == "jsonl":
        return (value for _, value in read_jsonl(path))
    return read_json_list(path)


def read_json(path: Path) -> Any:
    """A whole JSON document (an annotation file), with a one-line error naming the file."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected a file")
    try:
        data = path.read_bytes()
        return orjson.loads(data[len(BOM):] if data.startswith(BOM) else data)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def stream_items(path: Path, prefix: str = "item") -> Iterator[Any]:
    """The items under `prefix` of a large JSON document, streamed; errors name the file and the item."""
    with open_input(path) as handle:
        _skip_bom(handle)
        count = 0
        try:
            for item in ijson.items(handle, prefix, use_float=True):
                yield item
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not valid JSON after entry {count} ({_reason(exc)})") from None


# ---- paths ---------------------------------------------------------------------------------------------

def safe_relative(relative: Any) -> Path | None:
    """`relative` as a Path when it is a non-empty relative path that stays inside its root, else None."""
    if not isinstance(relative, str) or not relative:
        return None
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        return None
    return candidate


def inside(root: Path, relative: Any, where: str) -> Path:
    """`root / relative`, refusing absolute paths, paths that climb out of the root, and paths that leave
    it through a symbolic link (resolved here, links inside the root are fine)."""
    candidate = safe_relative(relative)
    if candidate is None:
        if not isinstance(relative, str) or not relative:
            raise UserError(f"{where}: image path must be a non-empty string, got {relative!r}")
        raise UserError(f"{where}: image path {relative!r} escapes the image root (absolute or '..')")
    path = root / candidate
    if not stays_inside(root, candidate):
        raise UserError(f"{where}: image path {relative!r} escapes the image root through a symbolic link "
                        f"(to {os.path.realpath(path)})")
    return path


def stays_inside(root: Path, relative: Path) -> bool:
    """True when `root / relative` (a `safe_relative` path), symbolic links resolved, is still under `root`.
    Resolving is done only when a part below the root is a link: a plain path costs one lstat per part."""
    current = str(root)
    for part in relative.parts:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISLNK(os.lstat(current).st_mode):
                continue
        except OSError:
            return True  # a missing part leads nowhere; reading the file fails with its own message
        real_root = _real_root(str(root))
        real = os.path.realpath(os.path.join(real_root, relative))
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)
    return True


@functools.lru_cache(maxsize=16)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def remove_quietly(path: Path) -> None:
    """Delete a file if it is there (cleanup paths must never raise)."""
    with contextlib.suppress(OSError):
        path.unlink()


def _same(a: Path, b: Path) -> bool:
    """True when both paths name one file (or one future file): same resolved path, or same inode."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _covers(folder: Path, path: Path) -> bool:
    """True when `path` lies inside `folder` (an output folder that would be replaced whole)."""
    return folder.resolve() in path.resolve().parents


def check_paths(inputs: dict[str, Path | None], outputs: dict[str, Path | None],
                folders: frozenset[str] = frozenset()) -> None:
    """Refuse an output that is one of the inputs (or holds one, for output folders) and two outputs at one path.

    `inputs`/`outputs` map a flag name (for the message) to its path; None entries are ignored. `folders` names
    the outputs that are folders replaced whole.
    """
    ins = [(name, path) for name, path in inputs.items() if path is not None]
    outs = [(name, path) for name, path in outputs.items() if path is not None]
    for name, out in outs:
        for in_name, path in ins:
            what = f"the input {in_name}" if in_name.startswith("-") else in_name  # a flag, or "the input"
            if _same(out, path):
                raise UserError(f"{out}: {name} would overwrite {what} ({path}); choose another output path")
            if name in folders and _covers(out, path):
                raise UserError(f"{out}: {name} is a folder holding {what} ({path}) and would be replaced "
                                "whole; choose another output path")
    for i, (name, out) in enumerate(outs):
        for other_name, other in outs[i + 1:]:
            if _same(out, other) or (name in folders and _covers(out, other)) or (
                    other_name in folders and _covers(other, out)):
                raise UserError(f"{out}: {name} and {other_name} name the same path; give each its own")
    for name, out in outs:
        if name not in folders and out.is_dir():
            raise UserError(f"{out}: {name} is a folder; give a file path")
