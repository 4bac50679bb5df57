"""Shared by every stage: records, I/O, errors, optional dependencies, boxes, referring markup, steps, reports."""
