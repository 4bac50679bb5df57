"""HF parquet (images embedded, the LLaVA-NeXT-Data layout) ⇄ LLaVA json/jsonl + an image folder.

Image bytes are copied as they are: never decoded, never re-encoded; a file's extension comes from the
bytes' signature. Parquet → LLaVA is a step over row groups, in two passes: file names are handed out
first, in the driver (so ids that sanitize alike never overwrite each other), then each row group is an
item that a worker expands into its records, writing its images. LLaVA → parquet reads each record's
image bytes in a stateless step; the driver writes the shards.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.errors import UserError
from ..core.inputs import read_splits, record_splits
from ..core.io import AtomicDir, AtomicFile, inside, shard_name, write_bytes
from ..core.step import Item, Step
from .checks import check_llava, check_turns, kind, require_image
from .files import NameBook, image_extension, safe_stem
from .shards import ShardPlan


@dataclass
class Group:
    """One row group to convert, with the file-name stems already handed out for its rows."""

    file: Path
    index: int
    first_row: int
    stems: list[list[str]]  # per row: one stem per image
    images_out: Path


def _open(path: Path) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({exc})") from None
    missing = {"id", "conversations"} - set(parquet.schema_arrow.names)
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(sorted(missing))} "
                        f"(has: {', '.join(parquet.schema_arrow.names)})")
    _check_columns(path, parquet.schema_arrow)
    return parquet


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def _is_image(dtype: pa.DataType) -> bool:
    """The HF `Image` feature: a struct with a binary `bytes` field."""
    if not pa.types.is_struct(dtype) or dtype.get_field_index("bytes") < 0:
        return False
    data = dtype.field("bytes").type
    return pa.types.is_binary(data) or pa.types.is_large_binary(data)


def _is_list(dtype: pa.DataType) -> bool:
    return pa.types.is_list(dtype) or pa.types.is_large_list(dtype)


def _check_columns(path: Path, schema: pa.Schema) -> None:
    """`conversations` is a list of {from, value} strings; `image` an Image struct, a list of them, or null."""
    turns = schema.field("conversations").type
    turn = turns.value_type if _is_list(turns) else None
    if turn is None or not pa.types.is_struct(turn) or not all(
            turn.get_field_index(key) >= 0 and _is_text(turn.field(key).type) for key in ("from", "value")):
        raise UserError(f"{path}: column 'conversations' is {turns}; expected a list of {{from, value}} strings")
    if "image" in schema.names:
        image = schema.field("image").type
        if not (pa.types.is_null(image) or _is_image(image) or (_is_list(image) and _is_image(image.value_type))):
            raise UserError(f"{path}: column 'image' is {image}; expected the image struct {{bytes, path}} "
                            "(an HF Image), a list of them, or null")


def _image_counts(parquet: pq.ParquetFile, index: int) -> list[int]:
    """Images per row. One image per row (or none) is assumed without reading the bytes: a row without
    an image only leaves its reserved name unused. Lists of images are read to count them."""
    rows = parquet.metadata.row_group(index).num_rows
    if "image" not in parquet.schema_arrow.names or pa.types.is_null(parquet.schema_arrow.field("image").type):
        return [0] * rows
    dtype = parquet.schema_arrow.field("image").type
    if not (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)):
        return [1] * rows
    column = parquet.read_row_group(index, columns=["image"]).column("image")
    return pc.fill_null(pc.list_value_length(column), 0).to_pylist()


def plan(files: list[Path], images_out: Path) -> list[Group]:
    """Pass 1: read ids and image counts only, and give every image a unique file-name stem."""
    book, groups, row = NameBook(), [], 0
    for path in files:
        parquet = _open(path)
        for index in range(parquet.num_row_groups):
            ids = parquet.read_row_group(index, columns=["id"]).column("id").to_pylist()
            stems = []
            for offset, (row_id, count) in enumerate(zip(ids, _image_counts(parquet, index), strict=True)):
                base = safe_stem(str(row_id), f"row{row + offset}")
                stems.append([book.claim(base if count == 1 else f"{base}-{k}") for k in range(count)])
            groups.append(Group(path, index, row, stems, images_out))
            row += len(ids)
    return groups


def _struct_images(column: pa.ChunkedArray) -> list[list[memoryview]]:
    """Per row, the image bytes of a struct<bytes, path> column as zero-copy views into arrow's buffer."""
    array = column.combine_chunks()
    data = array.flatten()[array.type.get_field_index("bytes")]  # the struct's nulls carried into the child
    valid = data.is_valid().to_pylist()
    width = "q" if pa.types.is_large_binary(data.type) else "i"
    _, offset_buffer, value_buffer = data.buffers()
    if offset_buffer is None:  # an empty group
        return [[] for _ in range(len(data))]
    offsets = memoryview(offset_buffer).cast("B").cast(width)[data.offset: data.offset + len(data) + 1]
    values = memoryview(value_buffer) if value_buffer is not None else memoryview(b"")
    return [[values[offsets[i]:offsets[i + 1]]] if valid[i] else [] for i in range(len(data))]


def _list_images(column: pa.ChunkedArray) -> list[list[bytes]]:
    """Per row, the image bytes of a list<struct<bytes, path>> column (several images per row)."""
    return [[image["bytes"] for image in (row or []) if image is not None and image.get("bytes") is not None]
            for row in column.to_pylist()]


def _read_group(group: Group) -> tuple[list[dict[str, Any]], list[list[Any]], bool]:
    try:
        table = pq.ParquetFile(group.file).read_row_group(group.index)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{group.file}: row group {group.index} cannot be read ({exc})") from None
    if "image" not in table.column_names or pa.types.is_null(table.schema.field("image").type):
        plain = table.drop_columns([name for name in ("image",) if name in table.column_names])
        return plain.to_pylist(), [[] for _ in range(table.num_rows)], False
    column = table.column("image")
    multi = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    images = _list_images(column) if multi else _struct_images(column)
    return table.drop_columns(["image"]).to_pylist(), images, multi


def convert_group(group: Group) -> list[dict[str, Any]]:
    """Pass 2 for one row group: write its images (bytes as they are), return its LLaVA records."""
    rows, images, multi = _read_group(group)
    records = []
    for offset, (row, row_images, stems) in enumerate(zip(rows, images, group.stems, strict=True)):
        check_turns(row, f"{group.file}: row {group.first_row + offset} (id {row.get('id')!r})")
        names = []
        for data, stem in zip(row_images, stems, strict=False):
            ext = image_extension(bytes(data[:16]))
            if ext is None:
                where = f"{group.file}: row {group.first_row + offset} (id {row.get('id')!r})"
                raise UserError(f"{where}: image bytes are not a known image format (starts {bytes(data[:8])!r})")
            write_bytes(group.images_out / f"{stem}{ext}", data, fsync=False)
            names.append(f"{stem}{ext}")
        if names:
            row = {"id": row["id"], "image": names if multi else names[0],
                   **{k: v for k, v in row.items() if k != "id"}}
        records.append(row)
    return records


class ParquetGroupStep(Step):
    """Stateless flat-map: a planned row group in, its LLaVA records out (its images written on the way)."""

    name = "parquet_to_llava"
    batch_size = 1  # one row group (thousands of images) is a batch's worth of work

    def process(self, items: list[Item]) -> list[Item]:
        out = []
        for item in items:
            group: Group = item.record
            out += [Item(item.index, record, f"{group.file}: row {group.first_row + k}")
                    for k, record in enumerate(convert_group(group))]
        self.stats["row_groups"] += len(items)
        return out


@dataclass
class GroupSplit:
    """The planned row groups as one input split (they are small descriptors, not data)."""

    groups: list[Group]

    def read(self) -> Iterator[Item]:
        for group in self.groups:
            yield Item(-1, group, f"{group.file}: row group {group.index}")


# ---- LLaVA → parquet -------------------------------------------------------------------------------

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
CONVERSATIONS = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))


def _feature(dtype: pa.DataType) -> Any:
    """The HF `datasets` feature description of an arrow type (for the schema's `huggingface` metadata)."""
    if dtype == IMAGE_STRUCT:
        return {"_type": "Image"}
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return {"feature": _feature(dtype.value_type), "_type": "List"}
    if pa.types.is_struct(dtype):
        return {field.name: _feature(field.type) for field in dtype}
    names = {pa.string(): "string", pa.large_string(): "large_string", pa.int64(): "int64", pa.float64(): "float64",
             pa.bool_(): "bool", pa.int32(): "int32", pa.binary(): "binary", pa.null(): "null"}
    return {"dtype": names.get(dtype, str(dtype)), "_type": "Value"}


CARD_KEYS = ("task", "lang", "source")  # counted in the survey for a dataset card
CARD_VALUES = 1000  # distinct values counted per key; later new values are not


@dataclass
class Survey:
    """Pass 1 over LLaVA records: how many, which extra keys (and the type of each), whether any has
    several images, the rows of each shard, and value counts of the card keys."""

    count: int = 0
    extras: tuple[str, ...] = ()
    multi_image: bool = False
    kinds: dict[str, str] | None = None  # extra key → one JSON type (int and float together: number)
    shards: list[int] = field(default_factory=list)  # rows per shard (from the ShardPlan)
    with_images: int = 0  # records with at least one image
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # CARD_KEYS → value → records


SCALARS = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "number": pa.float64(),
           "bool": pa.bool_()}


def _merge_kind(key: str, seen: dict[str, tuple[str, str]], value: Any, where: str) -> None:
    """Record the type of `value` under `key`; a second, different type is refused (a column has one)."""
    found = kind(value)
    if found == "null":
        return
    if key not in seen:
        seen[key] = (found, where)
        return
    first, first_where = seen[key]
    if found == first or (found in ("int", "float") and first == "number"):
        return
    if {found, first} == {"int", "float"}:
        seen[key] = ("number", first_where)
        return
    raise UserError(f"{where}: key {key!r} is {found} here but {first} at {first_where}; "
                    "a parquet column holds one type")


def _count_card_keys(counts: dict[str, dict[str, int]], record: dict[str, Any]) -> None:
    for key in CARD_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            seen = counts.setdefault(key, {})
            if value in seen or len(seen) < CARD_VALUES:
                seen[value] = seen.get(value, 0) + 1


def survey(src: Path, plan: ShardPlan | None = None) -> Survey:
    """Read every record once (before anything is written): check its shape, learn the columns, and place it
    in a shard of `plan`."""
    extras: dict[str, None] = {}
    seen: dict[str, tuple[str, str]] = {}
    result = Survey()
    for item in read_splits(record_splits(src)):
        record = item.record
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise UserError(f"{item.where}: not a LLaVA record (needs a 'conversations' list)")
        result.count += 1
        result.multi_image |= isinstance(record.get("image"), list)
        result.with_images += record.get("image") not in (None, [])
        _count_card_keys(result.counts, record)
        for key, value in record.items():
            if key not in ("id", "image", "conversations"):
                extras.setdefault(key)
                _merge_kind(key, seen, value, item.where)
        if plan is not None:
            plan.add(record, f"{item.where} (id {record.get('id')!r})")
    result.extras = tuple(extras)
    result.kinds = {key: first for key, (first, _) in seen.items()}
    result.shards = plan.finish() if plan is not None else [result.count]
    return result


def _image_value(record: dict, root: Path, where: str) -> Any:
    paths = record.get("image")
    if paths is None:
        return None
    single = not isinstance(paths, list)
    values = []
    for relative in [paths] if single else paths:
        path = inside(root, relative, where)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{where}: cannot read image {path} ({exc.strerror or exc})") from None
        require_image(data, path, where)
        values.append({"bytes": data, "path": relative})
    return values[0] if single else values


class ShardWriter:
    """Writes parquet shards with a fixed schema and the HF metadata: each shard is opened on its first row
    group, filled group by group (memory holds one group, not one shard) and renamed into place when closed."""

    def __init__(self, shards: int, survey: Survey, stem: str = "train", file: Path | None = None) -> None:
        self.shards, self.survey, self.stem, self.written = shards, survey, stem, 0
        self.arrow_bytes = self.file_bytes = 0  # the rows in memory as arrow holds them; the shard files
        self.file = file  # one .parquet file instead of a folder of shards
        self.folder: Path | None = None  # set by the sink: the (temporary) folder the shards go to
        self.schema: pa.Schema | None = None
        self._atomic: AtomicFile | None = None
        self._parquet: pq.ParquetWriter | None = None

    def path(self, index: int) -> Path:
        if self.file is not None:
            return self.file
        assert self.folder is not None
        return self.folder / shard_name(self.stem, index, self.shards, ".parquet")

    def _schema(self, columns: dict[str, list], wheres: list[str]) -> pa.Schema:
        image = pa.list_(IMAGE_STRUCT) if self.survey.multi_image else IMAGE_STRUCT
        fields = [("id", pa.string()), ("image", image), ("conversations", CONVERSATIONS)]
        kinds = self.survey.kinds or {}
        for key in self.survey.extras:
            dtype = SCALARS.get(kinds.get(key, "null"))
            if dtype is None:  # lists and objects: the type arrow infers from the first row group
                dtype = _infer(key, columns[key], wheres)
            fields.append((key, pa.string() if pa.types.is_null(dtype) else dtype))
        schema = pa.schema(fields)
        features = {column.name: _feature(column.type) for column in schema}
        return schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})

    def write(self, columns: dict[str, list], wheres: list[str]) -> None:
        """Append one row group to the current shard."""
        self.schema = self.schema or self._schema(columns, wheres)
        try:
            table = pa.Table.from_pydict(columns, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise _misfit(self.schema, columns, wheres, exc) from None
        if self._parquet is None:
            self._atomic = AtomicFile(self.path(self.written))
            self._parquet = pq.ParquetWriter(self._atomic.__enter__(), self.schema)
        self._parquet.write_table(table, row_group_size=max(1, table.num_rows))
        self.arrow_bytes += table.nbytes

    def close_shard(self) -> None:
        """Write the current shard's footer and move it into place."""
        if self._parquet is None or self._atomic is None:
            return
        parquet, atomic = self._parquet, self._atomic
        self._parquet = self._atomic = None
        try:
            parquet.close()
        except BaseException as exc:
            atomic.__exit__(type(exc), exc, None)
            raise
        atomic.__exit__(None, None, None)
        self.file_bytes += atomic.path.stat().st_size
        self.written += 1

    def abort(self) -> None:
        """After a failure: drop the shard being written (its temporary file), keep nothing of it."""
        if self._parquet is not None and self._atomic is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
            self._atomic.__exit__(RuntimeError, None, None)
        self._parquet = self._atomic = None


def _infer(key: str, values: list, wheres: list[str]) -> pa.DataType:
    """Arrow's type for a column of lists or objects; values of different shapes name the record."""
    try:
        return pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        first = None
        for value, where in zip(values, wheres, strict=True):
            try:
                dtype = pa.array([value]).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as bad:
                raise UserError(f"{where}: key {key!r} cannot be stored in parquet ({bad})") from None
            if value is not None and first is not None and dtype != first[0]:
                raise UserError(f"{where}: key {key!r} has another shape than at {first[1]} "
                                "(a parquet column holds one type)") from None
            first = first or ((dtype, where) if value is not None else None)
        raise UserError(f"{wheres[0]}: key {key!r} cannot be stored in parquet ({exc})") from None


def _misfit(schema: pa.Schema, columns: dict[str, list], wheres: list[str], exc: Exception) -> UserError:
    """The first value that does not fit its column's type, named by its record."""
    for column in schema:
        for value, where in zip(columns[column.name], wheres, strict=True):
            try:
                pa.array([value], type=column.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as bad:
                return UserError(f"{where}: key {column.name!r} does not fit the column type {column.type} ({bad})")
    return UserError(f"{wheres[0] if wheres else 'the first record'}: a value does not fit its column ({exc})")


class ReadImagesStep(Step):
    """Stateless: each record's image paths → `{bytes, path}` values read from under the image root."""

    name = "read_images"
    batch_size = 32  # items carry image bytes: keep what is in flight small

    def __init__(self, root: Path, multi: bool) -> None:
        super().__init__()
        self.root, self.multi = root, multi

    def process(self, items: list[Item]) -> list[Item]:
        for item in items:
            record = item.record
            where = check_llava(record, item.where)
            value = _image_value(record, self.root, where)
            item.extra = {"image": [value] if self.multi and isinstance(value, dict) else value}
        return items


GROUP_ROWS = 1000  # rows per parquet row group (the unit parquet → llava hands to a worker)
GROUP_BYTES = 8 << 20  # a row group also ends at this many image bytes: memory holds one group


class ParquetSink:
    """Collects records into parquet shards of the planned sizes (`found.shards`, rows per shard; schema from
    the survey). One `.parquet` file is written atomically; a folder of shards is built under a temporary
    name and replaces OUT only when complete (a failed run leaves OUT as it was). With `folder` the shards go
    there instead, and whoever gave the folder makes it appear atomically (see hf_folder.HfFolderSink)."""

    def __init__(self, out: Path, found: Survey, stem: str = "train", folder: Path | None = None) -> None:
        single = folder is None and out.suffix == ".parquet" and len(found.shards) == 1
        self.writer = ShardWriter(len(found.shards), found, stem, out if single else None)
        self.writer.folder = folder
        self.keys = ("id", "image", "conversations", *found.extras)
        self.out, self.found, self.count, self.in_shard, self.group_bytes = out, found, 0, 0, 0
        self.columns: dict[str, list] = {k: [] for k in self.keys}
        self.wheres: list[str] = []
        self.folder = AtomicDir(out) if folder is None and not single else None

    def __enter__(self) -> ParquetSink:
        if self.folder is not None:
            self.writer.folder = self.folder.__enter__()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        try:
            if kind is None:
                self.flush()
                self.writer.close_shard()
                if self.writer.written != len(self.found.shards):
                    raise UserError(f"{self.out}: the input changed while it was converted "
                                    f"({self.count} records, {self.found.count} counted first)")
        except BaseException as exc:
            kind, error = type(exc), exc
            raise
        finally:
            if kind is not None:
                self.writer.abort()
            if self.folder is not None:
                self.folder.__exit__(kind, error, trace)

    def write(self, item: Item) -> None:
        record = item.record
        if self.writer.written >= len(self.found.shards):
            raise UserError(f"{item.where}: the input changed while it was converted (more records than the "
                            f"{self.found.count} counted first)")
        image = (item.extra or {}).get("image")
        self.columns["id"].append(str(record.get("id", item.index)))
        self.columns["image"].append(image)
        self.columns["conversations"].append(record["conversations"])
        for key in self.found.extras:
            self.columns[key].append(record.get(key))
        self.wheres.append(f"{item.where} (id {record.get('id')!r})")
        self.count += 1
        self.in_shard += 1
        self.group_bytes += sum(len(value["bytes"]) for value in _image_list(image))
        if self.in_shard == self.found.shards[self.writer.written]:
            self.flush()
            self.writer.close_shard()
            self.in_shard = 0
        elif len(self.wheres) >= GROUP_ROWS or self.group_bytes >= GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the rows collected so far as one row group."""
        if self.columns["id"]:
            self.writer.write(self.columns, self.wheres)
            self.columns, self.wheres, self.group_bytes = {k: [] for k in self.keys}, [], 0


def _image_list(value: Any) -> list[dict[str, Any]]:
    """The `{bytes, path}` values of one row's image cell (none, one, or a list)."""
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]
