"""LLaVA records → parquet shards in the Hugging Face layout: images embedded as bytes (the `Image` feature,
declared in the schema's `huggingface` metadata), one schema for every shard, row groups of at most GROUP_ROWS
rows or GROUP_BYTES image bytes. A sink is given the Survey of the records first (columns, shard sizes) and
then the records one by one: memory holds one row group, never a shard. `convert --to parquet|hf-folder` and
`mix --out FOLDER` both write through here.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import UserError
from .image_format import require_image
from .io import AtomicDir, AtomicFile, inside, shard_name
from .parquet_survey import Survey
from .step import Item

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


SCALARS = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "number": pa.float64(),
           "bool": pa.bool_()}


def image_value(record: dict, root: Path, where: str) -> Any:
    """The `image` cell of a record: `{bytes, path}` read from under `root` (a list of them for a list of
    paths, None without an image); an unreadable or non-image file is a UserError naming `where`."""
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
        self.group_bytes += sum(len(value["bytes"]) for value in image_list(image))
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


def image_list(value: Any) -> list[dict[str, Any]]:
    """The `{bytes, path}` values of one row's image cell (none, one, or a list)."""
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]
