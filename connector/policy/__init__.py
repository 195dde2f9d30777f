"""Policies: who may do what on which socket, and the engine that decides each request."""
