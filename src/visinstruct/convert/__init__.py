"""Conversions between the formats LLaVA-data users hold."""
