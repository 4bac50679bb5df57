"""Filters: look at one record and keep it, rewrite it, or reject it with a reason."""
