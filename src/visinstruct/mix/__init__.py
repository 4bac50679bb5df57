"""Mixtures: a LLaVA-NeXT data recipe (sources × sampling strategies, plus targets, exclusions and dedup)
resolved to exact rows, written with its provenance and a lock that reproduces it byte for byte."""
