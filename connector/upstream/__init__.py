"""Sockets (exposed clusters) and the credentials the connector uses to reach them."""

from connector.upstream.resolve import resolve_socket, upstream_for_eks_cluster
from connector.upstream.upstream import SocketError, Upstream

__all__ = ["SocketError", "Upstream", "resolve_socket", "upstream_for_eks_cluster"]
