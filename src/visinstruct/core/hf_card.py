"""The README.md of a Hugging Face dataset folder: a YAML header that `datasets` and the Hub read (configs with
the split's data files, the features of the parquet schema, split sizes, language, task and size categories)
and a short body with the counts by task, language and source."""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from .parquet_survey import CARD_KEYS, Survey
from .parquet_write import ShardWriter
from .yaml_text import dump, size_category

_LANGUAGE = re.compile(r"[a-z]{2,3}")  # ISO 639-1/639-3 codes, as the Hub's `language` takes them


def yaml_feature(feature: dict[str, Any]) -> dict[str, Any]:
    """One feature in the card's YAML form, from the JSON form stored in the parquet's `huggingface` metadata
    (`{"_type": "List", "feature": …}` → `{"list": …}`, `Image` → `dtype: image`, a struct → its named fields)."""
    kind = feature.get("_type")
    if kind == "Value":
        return {"dtype": feature["dtype"]}
    if kind == "List":
        inner = yaml_feature(feature["feature"])
        simple = inner.get("dtype") if list(inner) == ["dtype"] else None
        return {"list": simple or inner.get("struct") or inner}
    if kind is not None:
        return {"dtype": re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()}  # Image → image
    return {"struct": [{"name": name, **yaml_feature(value)} for name, value in feature.items()]}


def features(schema: pa.Schema) -> list[dict[str, Any]]:
    """`dataset_info.features` of the written parquet schema (the same features its metadata declares)."""
    stored = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    return [{"name": name, **yaml_feature(value)} for name, value in stored.items()]


def header(found: Survey, written: ShardWriter, split: str) -> dict[str, Any]:
    """The card's YAML header as a dict (`num_bytes`: the rows as arrow holds them, as `datasets` counts)."""
    head: dict[str, Any] = {}
    languages = sorted(lang for lang in found.counts.get("lang", {}) if _LANGUAGE.fullmatch(lang))
    if languages:
        head["language"] = languages
    visual = ["visual-question-answering", "image-text-to-text"]
    head["task_categories"] = visual if found.with_images else ["text-generation"]
    head["size_categories"] = [size_category(found.count)]
    head["configs"] = [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"}]}]
    assert written.schema is not None
    head["dataset_info"] = {"features": features(written.schema),
                            "splits": [{"name": split, "num_bytes": written.arrow_bytes,
                                        "num_examples": found.count}],
                            "download_size": written.file_bytes, "dataset_size": written.arrow_bytes}
    return head


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def counts_table(key: str, counts: dict[str, int], total: int, rows: int = 30) -> list[str]:
    """`| key | records | share |`, the `rows` most frequent values, then the rest as one row."""
    lines = [f"| {key} | records | share |", "|---|---:|---:|"]
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    for value, n in ranked[:rows]:
        lines.append(f"| {_cell(value)} | {n:,} | {100 * n / total:.1f}% |")
    rest = total - sum(n for _, n in ranked[:rows])
    if rest:
        lines.append(f"| (other or none) | {rest:,} | {100 * rest / total:.1f}% |")
    return [*lines, ""]


def card_text(name: str, found: Survey, written: ShardWriter, split: str,
              made_by: str = "`visinstruct convert --to hf-folder`") -> str:
    """The whole README.md: YAML header, what the folder holds, how to load it, counts; `made_by` ends the
    sentence that says which command wrote the folder."""
    images = "a list of images, `List(Image)`" if found.multi_image else "an `Image`"
    lines = ["---", *dump(header(found, written, split)), "---", "", f"# {_cell(name)}", "",
             f"{found.count:,} visual instruction records in the LLaVA layout: `id`, `image` ({images}, "
             f"null for text-only records; {found.with_images:,} records have images), `conversations` "
             "(alternating `human`/`gpt` turns, `<image>` where an image goes), and the records' other keys as "
             f"columns. Split `{split}`: {len(found.shards)} parquet shard(s) under `data/`, images embedded "
             f"as bytes. Written by {made_by}.", "",
             "```python", "from datasets import load_dataset", "",
             f'data = load_dataset("path/to/this/folder", split="{split}")', "```", ""]
    for key in CARD_KEYS:
        counts = found.counts.get(key)
        if counts:
            lines += [f"## By {key}", "", *counts_table(key, counts, found.count)]
    return "\n".join(lines).rstrip("\n") + "\n"
