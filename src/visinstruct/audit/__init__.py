"""`visinstruct audit`: answers checked against the annotations they were made from (absent objects, wrong
counts, boxes that match nothing), with CHAIR over the file."""

from .run import AuditOptions, audit, rejects_path, summary_lines

__all__ = ["AuditOptions", "audit", "rejects_path", "summary_lines"]
