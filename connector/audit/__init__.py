"""Audit events and session recordings."""
