"""Grounding: object mentions, counts and boxes in answers, matched to an image's annotations (en/ru/zh).

A library shared by `audit` (the report), `filter --stages grounding` and generate's `presence` task.
"""
