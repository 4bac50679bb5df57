"""HF parquet (images embedded, the LLaVA-NeXT-Data layout) ⇄ LLaVA json/jsonl + an image folder.

Image bytes are copied as they are: never decoded, never re-encoded; a file's extension comes from the
bytes' signature. Parquet → LLaVA is a step over row groups, in two passes: file names are handed out
first, in the driver (so ids that sanitize alike never overwrite each other), then each row group is an
item that a worker expands into its records, writing its images. LLaVA → parquet reads each record's
image bytes in a stateless step; the driver writes the shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..core.errors import UserError
from ..core.image_format import image_extension
from ..core.inputs import read_splits, record_splits
from ..core.io import write_bytes
from ..core.parquet_survey import Survey, check_turns
from ..core.parquet_write import image_value
from ..core.shards import ShardPlan
from ..core.step import Item, Step
from .checks import check_llava
from .files import NameBook, safe_stem


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


# ---- LLaVA → parquet (the writer is core.parquet_write, shared with mix) ---------------------------------

def survey(src: Path, plan: ShardPlan | None = None) -> Survey:
    """Read every record once (before anything is written): check its shape, learn the columns, and place it
    in a shard of `plan`."""
    result = Survey()
    for item in read_splits(record_splits(src)):
        result.add(item.record, item.where)
        if plan is not None:
            plan.add(item.record, f"{item.where} (id {item.record.get('id')!r})")
    return result.finish(plan)


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
            value = image_value(record, self.root, where)
            item.extra = {"image": [value] if self.multi and isinstance(value, dict) else value}
        return items
