"""Benchmarks: each measures a design against a baseline taken in the same run."""
