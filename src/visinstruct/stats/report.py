"""The HTML report: one self-contained page (inline CSS and SVG, images as data URLs, a Content-Security-Policy
that forbids every outside request) with the plots and a sample of records beside their thumbnails."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..core.records import IMAGE_TOKEN, images_of
from .collect import Sampled
from .images import image_size, thumbnail_url
from .svg import bar_chart, histogram

TURN_CHARS = 3000  # longer turns are cut in the sample, with the number of characters left out
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232b;background:#f4f5f7}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}main{padding:12px 24px;max-width:1400px}
h2{font-size:17px;margin:22px 0 8px;border-bottom:1px solid #ccd;padding-bottom:4px}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.plot{background:#fff;border:1px solid #dde;border-radius:6px;margin:0;padding:8px}
.plot figcaption{font-weight:600;margin-bottom:4px}.note{font-weight:400;color:#667}
svg text{font-size:12px;fill:#333}.bar{fill:#3f7cb8}.axis{stroke:#99a}
.numbers{display:flex;flex-wrap:wrap;gap:10px}.num{background:#fff;border:1px solid #dde;border-radius:6px;
padding:8px 14px}.num b{display:block;font-size:20px}
table{border-collapse:collapse;background:#fff}td,th{border:1px solid #dde;padding:3px 8px;text-align:left}
td.n{text-align:right}.samples{display:grid;grid-template-columns:repeat(auto-fill,minmax(620px,1fr));gap:10px}
.sample{display:flex;gap:12px;background:#fff;border:1px solid #dde;border-radius:6px;padding:10px;min-width:0}
.thumbs{flex:0 0 200px}.thumbs img{max-width:200px;display:block;margin-bottom:4px;border-radius:3px}
.noimg{color:#889;font-style:italic}.meta{color:#556;font-size:12px;margin-bottom:6px}
.turn{margin:4px 0;white-space:pre-wrap;word-break:break-word}.role{font-weight:600;margin-right:6px}
.human .role{color:#8a4b00}.gpt .role{color:#1f5f2a}.tag{background:#e6eefc;border-radius:3px;padding:0 2px}
"""


def _numbers(stats: dict[str, Any]) -> str:
    """The headline numbers."""
    hists, mismatch = stats["histograms"], stats["image_token_mismatch"]["records"]
    items = [("records", f"{stats['records']:,}"), ("turns", f"{hists['messages']['total']:,}"),
             ("tokens" + ("" if stats["tokens_exact"] else " (est.)"), f"{hists['tokens_record']['total']:,}"),
             ("tasks", f"{len(stats['by_task']):,}"), ("languages", f"{len(stats['by_lang']):,}"),
             ("<image> ≠ images", f"{mismatch:,}")]
    if stats.get("made", {}).get("rejects"):
        items.append(("rejected", f"{stats['made']['rejects']['rejected']:,}"))
    return '<div class="numbers">' + "".join(f'<div class="num"><b>{escape(v)}</b>{escape(k)}</div>'
                                             for k, v in items) + "</div>"


def _plots(stats: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The sections of plots, each a title and its figures."""
    h = stats["histograms"]
    unit = "tokens" if stats["tokens_exact"] else "tokens (est.)"

    def hist(title: str, key: str, what: str) -> str:
        return histogram(title, h[key]["bins"], h[key]["bin_width"], what,
                         f"n = {h[key]['count']:,}, median ≈ {h[key]['p50'] or 0:,}, max {h[key]['max'] or 0:,}")

    counts = [bar_chart("Records by task", stats["by_task"]), bar_chart("Records by language", stats["by_lang"]),
              bar_chart("Records by source", stats["by_source"])]
    lengths = [hist("Characters per gpt turn", "chars_gpt", "chars"),
               hist("Characters per human turn", "chars_human", "chars"),
               hist("Tokens per record", "tokens_record", unit),
               bar_chart("Rounds per record (a human turn and its gpt answer)", stats["rounds_per_record"])]
    images = [bar_chart("Images per record", stats["images_per_record"]),
              bar_chart("<image> tokens vs images", {"match": stats["records"] - stats["image_token_mismatch"][
                  "records"], **stats["image_token_mismatch"]["by_kind"]})]
    if stats.get("image_files"):
        images += [bar_chart("Image files (per reference)", stats["image_files"]),
                   hist("Image long side", "image_long_side", "px")]
    sections = [("Counts", counts), ("Lengths", lengths), ("Images", images)]
    rejects = stats.get("made", {}).get("rejects")
    if rejects:
        sections.append(("Rejected", [bar_chart("Reject reasons (stage: reason)", rejects["by_reason"],
                                                f"{rejects['rejected']:,} in {Path(rejects['file']).name}")]))
    if stats["problems"]:
        sections.append(("Problems", [bar_chart("Records with problems", stats["problems"])]))
    return sections


def _text(value: str) -> str:
    """A turn's text, escaped, cut to TURN_CHARS, with `<image>` marked."""
    cut = value[:TURN_CHARS] + (f"… ({len(value) - TURN_CHARS:,} more characters)" if len(value) > TURN_CHARS
                                else "")
    marker = escape(IMAGE_TOKEN)
    return escape(cut).replace(marker, f'<span class="tag">{marker}</span>')


def _sample(item: Sampled, image_root: Path | None) -> str:
    """One sampled record: thumbnails (or why none) beside its conversation."""
    record = item.record
    thumbs = []
    for relative in images_of(record):
        url = thumbnail_url(image_root, relative) if image_root else None
        name = escape(str(relative))
        if url:
            thumbs.append(f'<img src="{url}" alt="{name}" title="{name}">')
            continue
        found = image_size(image_root, relative) if image_root else "no --image-root"
        why = found if isinstance(found, str) else "unreadable"
        thumbs.append(f'<div class="noimg">{name} ({escape(why)})</div>')
    meta = " · ".join(escape(f"{k}: {record[k]}") for k in ("id", "task", "lang", "source") if k in record)
    turns = []
    for turn in record.get("conversations") or []:
        if isinstance(turn, dict):
            role = str(turn.get("from"))
            kind = "gpt" if role in ("gpt", "assistant") else "human"
            turns.append(f'<div class="turn {kind}"><span class="role">{escape(role)}</span>'
                         f'{_text(str(turn.get("value")))}</div>')
    return (f'<div class="sample"><div class="thumbs">{"".join(thumbs) or "<div class=noimg>no image</div>"}</div>'
            f'<div><div class="meta">{meta}<br>{escape(item.where)}</div>{"".join(turns)}</div></div>')


def _made_table(stats: dict[str, Any]) -> str:
    """Teacher and filter stages, when the ledger or the filter report was given."""
    made, rows = stats.get("made") or {}, []
    for teacher in (made.get("ledger") or {}).get("teachers", []):
        rows.append(f"<tr><td>teacher</td><td>{escape(teacher['model'])}</td><td class=n>{teacher['answered']:,} "
                    f"answered, {teacher['failed']:,} failed</td></tr>")
    for stage in (made.get("filter_report") or {}).get("stages", []):
        rows.append(f"<tr><td>filter stage</td><td>{escape(stage['stage'])}</td><td class=n>{stage['in']:,} in, "
                    f"{stage['out']:,} out, {stage['rejected']:,} rejected</td></tr>")
    return f"<h2>How it was made</h2><table>{''.join(rows)}</table>" if rows else ""


def report_html(stats: dict[str, Any], sample: list[Sampled], image_root: Path | None, title: str) -> str:
    """The whole page."""
    files = ", ".join(Path(f).name for f in stats["files"])
    body = [f"<header><h1>{escape(title)}</h1><p>{escape(files)} · tokens {escape(stats['tokens_method'])}</p>"
            "</header><main>", _numbers(stats)]
    for name, figures in _plots(stats):
        body.append(f'<h2>{escape(name)}</h2><div class="grid">{"".join(figures)}</div>')
    body.append(_made_table(stats))
    body.append(f"<h2>Sample of {len(sample)} records (uniform, seeded)</h2>")
    items = [_sample(item, image_root) for item in sorted(sample, key=lambda s: s.index)]
    body.append(f'<div class="samples">{"".join(items)}</div>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f"<link rel=\"icon\" href=\"data:,\"><title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</main></body></html>\n")
