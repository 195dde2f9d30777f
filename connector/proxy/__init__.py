"""The connector's HTTPS server: routing, header hygiene, forwarding, upgrades."""
