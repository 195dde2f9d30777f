"""Kubernetes wire knowledge: request parsing, RBAC rule matching, Status bodies, stream protocols."""
