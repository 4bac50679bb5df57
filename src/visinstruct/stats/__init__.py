"""`visinstruct stats`: what is in a record file — counts, lengths, `<image>` checks, image sizes and reject
reasons, gathered in one streaming pass — written as JSON, a Hugging Face dataset card and an offline HTML
report. Imports `core` only."""

from .run import StatsOptions, compute_stats, stats, summary_lines, write_outputs

__all__ = ["StatsOptions", "compute_stats", "stats", "summary_lines", "write_outputs"]
