"""The web console for the people who review access: sign-in, pages, and the rights policies give them.

It lives under `/console/` on the connector's own aiohttp app and is off unless `console.enabled: true`.
"""
