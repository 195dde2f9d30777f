"""Sockets (exposed clusters) and the credentials the connector uses to reach them."""
