"""Benchmarks whose figures are quoted in the README (`make bench`)."""
