"""The dataset card: a README.md in the Hugging Face layout — a YAML header (configs, features, license,
language, task categories, size category) and tables of counts, lengths, images and how the data was made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.yaml_text import dump, size_category
from .inputs import is_parquet

TASK_CATEGORIES = ["visual-question-answering", "image-text-to-text"]
_NOT_LANGS = {"(none)", "(other)"}
_DTYPES = {"string": "string", "int64": "int64", "float64": "float64", "bool": "bool"}


def data_path(path: Path, card: Path) -> str:
    """An input's path as the card's data_files names it: relative to the card's folder (a parquet folder as
    a glob of its shards), or just its name when it lies elsewhere."""
    try:
        relative = path.resolve().relative_to(card.parent.resolve()).as_posix()
    except ValueError:
        relative = path.name
    return f"{relative}/**/*.parquet" if path.is_dir() else relative


def features(columns: dict[str, list[str]], parquet: bool) -> list[dict[str, Any]]:
    """HF `dataset_info.features` for the LLaVA columns and every other column of one scalar type."""
    found = []
    for name, kinds in columns.items():
        kinds = [k for k in kinds if k != "null"]
        if name == "conversations":
            found.append({"name": name, "list": [{"name": "from", "dtype": "string"},
                                                 {"name": "value", "dtype": "string"}]})
        elif name == "image" and parquet:
            found.append({"name": name, "dtype": "image"})
        elif name == "image" and "list" in kinds:
            found.append({"name": name, "sequence": "string"})
        elif set(kinds) <= {"int64", "float64"} and len(kinds) == 2:
            found.append({"name": name, "dtype": "float64"})
        elif len(kinds) == 1 and kinds[0] in _DTYPES:
            found.append({"name": name, "dtype": _DTYPES[kinds[0]]})
    return found


def header(stats: dict[str, Any], inputs: list[Path], card: Path, license: str, name: str | None) -> dict:
    """The card's YAML header as a dict."""
    languages = [lang for lang in stats["by_lang"] if lang not in _NOT_LANGS]
    head: dict[str, Any] = {}
    if name:
        head["pretty_name"] = name
    head["license"] = license
    if languages:
        head["language"] = languages
    head["task_categories"] = TASK_CATEGORIES
    head["size_categories"] = [size_category(stats["records"])]
    head["configs"] = [{"config_name": "default", "data_files": [
        {"split": "train", "path": [data_path(p, card) for p in inputs]}]}]
    head["dataset_info"] = {"features": features(stats["columns"], any(is_parquet(p) for p in inputs)),
                            "splits": [{"name": "train", "num_examples": stats["records"]}]}
    return head


def cell(value: Any) -> str:
    """Text safe inside a Markdown table cell (pipes, newlines and angle brackets escaped)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def _count(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def count_table(title: str, what: str, counts: dict[str, int], total: int) -> list[str]:
    """A `| what | count | share |` table with a total row."""
    lines = [f"### {title}", "", f"| {what} | count | share |", "|---|---:|---:|"]
    for key, n in counts.items():
        lines.append(f"| {cell(key)} | {n:,} | {100 * n / max(total, 1):.1f}% |")
    lines += [f"| **total** | **{total:,}** | 100% |", ""]
    return lines


def length_table(hists: dict[str, dict[str, Any]], unit: str) -> list[str]:
    """Min, median, 95th percentile, max and mean of the length histograms."""
    rows = [("characters per human turn", "chars_human"), ("characters per gpt turn", "chars_gpt"),
            (f"tokens per human turn ({unit})", "tokens_human"), (f"tokens per gpt turn ({unit})", "tokens_gpt"),
            (f"tokens per record ({unit})", "tokens_record"), ("turns per record", "messages")]
    lines = ["| | min | median | p95 | max | mean |", "|---|---:|---:|---:|---:|---:|"]
    for label, key in rows:
        h = hists[key]
        if h["count"]:
            lines.append(f"| {label} | {_count(h['min'])} | {_count(h['p50'])} | {_count(h['p95'])} | "
                         f"{_count(h['max'])} | {h['mean']:,} |")
    return [*lines, ""]


def images_section(stats: dict[str, Any]) -> list[str]:
    """Images per record, the `<image>` check and (with an image root) image files and sizes."""
    lines = ["## Images", "", "| images per record | records |", "|---:|---:|"]
    lines += [f"| {cell(k)} | {n:,} |" for k, n in stats["images_per_record"].items()]
    mismatch = stats["image_token_mismatch"]
    lines += ["", f"`<image>` tokens equal the number of images in {stats['records'] - mismatch['records']:,} of "
              f"{stats['records']:,} records."]
    if mismatch["records"]:
        lines += ["", "| mismatch | records |", "|---|---:|"]
        lines += [f"| {cell(k)} | {n:,} |" for k, n in mismatch["by_kind"].items()]
    files, hists = stats.get("image_files"), stats["histograms"]
    if files:
        lines += ["", "| image files (per reference) | count |", "|---|---:|"]
        lines += [f"| {cell(k)} | {n:,} |" for k, n in files.items()]
        if hists["image_width"]["count"]:
            w, h = hists["image_width"], hists["image_height"]
            lines += ["", f"Image sizes: width {w['min']:,}–{w['max']:,} px (median ≈ {w['p50']:,}), "
                      f"height {h['min']:,}–{h['max']:,} px (median ≈ {h['p50']:,})."]
    return [*lines, ""]


def made_section(made: dict[str, Any]) -> list[str]:
    """How it was made: the teacher from the ledger, the filter stages, the reject reasons."""
    lines: list[str] = []
    ledger, report, rejects = made.get("ledger"), made.get("filter_report"), made.get("rejects")
    if ledger:
        lines += ["### Teacher", "", f"From the generation ledger `{Path(ledger['file']).name}`:", "",
                  "| teacher model | units answered | units failed | prompt tokens | completion tokens |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {cell(t['model'])} | {t['answered']:,} | {t['failed']:,} | {t['prompt_tokens']:,} | "
                  f"{t['completion_tokens']:,} |" for t in ledger["teachers"]]
        settings = [", ".join(f"{k} {s[k]}" for k in ("temperature", "top_p", "max_tokens") if s[k] is not None)
                    + f" ({s['units']:,} units)" for s in ledger["sampling"]]
        lines += ["", "Sampling: " + "; ".join(settings) + "." if settings else "", ""]
    if report:
        lines += ["### Filters", "", f"`visinstruct {report['stage']}`: {_count(report['records_in'])} records in, "
                  f"{_count(report['records_out'])} kept.", "",
                  "| stage | in | out | rejected | reasons |", "|---|---:|---:|---:|---|"]
        for s in report["stages"]:
            reasons = ", ".join(f"{cell(code)} {n:,}" for code, n in s["by_reason"].items())
            lines.append(f"| {cell(s['stage'])} | {s['in']:,} | {s['out']:,} | {s['rejected']:,} | {reasons} |")
        lines.append("")
    if rejects and not rejects["rejected"]:
        lines += ["### Rejected", "", f"Nothing: `{Path(rejects['file']).name}` is empty.", ""]
    elif rejects:
        lines += [f"### Rejected ({rejects['rejected']:,} in `{Path(rejects['file']).name}`)", "",
                  "| stage: reason | count |", "|---|---:|"]
        lines += [f"| {cell(k)} | {n:,} |" for k, n in rejects["by_reason"].items()]
        lines.append("")
    return ["## How it was made", "", *lines] if lines else []


def card_text(stats: dict[str, Any], inputs: list[Path], card: Path, license: str = "other",
              name: str | None = None) -> str:
    """The whole card: header, summary, counts tables, lengths, images, how it was made."""
    title = name or inputs[0].stem
    n = stats["records"]
    langs = ", ".join(lang for lang in stats["by_lang"] if lang not in _NOT_LANGS) or "not given"
    unit = "exact" if stats["tokens_exact"] else "estimated"
    lines = ["---", *dump(header(stats, inputs, card, license, name)), "---", "", f"# {cell(title)}", "",
             f"{n:,} visual instruction records in the LLaVA format (`id`, `image`, `conversations` of alternating "
             f"`human`/`gpt` turns), languages: {cell(langs)}. The tables below were counted by "
             "`visinstruct stats`.", "",
             "## Counts", ""]
    lines += count_table("By task", "task", stats["by_task"], n)
    lines += count_table("By language", "language", stats["by_lang"], n)
    lines += count_table("By source", "source", stats["by_source"], n)
    lines += ["## Conversations", "", f"Tokens: {stats['tokens_method']}. Median and p95 are exact to one "
              "histogram bin.", "", *length_table(stats["histograms"], unit)]
    lines += images_section(stats)
    lines += made_section(stats.get("made") or {})
    return "\n".join(lines).rstrip("\n") + "\n"
