"""Helpers shared by the tests (each module one job)."""
