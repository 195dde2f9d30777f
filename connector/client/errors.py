"""The client's own errors, apart from the modules that raise them.

`client token` runs before every kubectl request, so everything it imports costs every kubectl call;
the SSO module pulls in requests and Authlib (about 80 ms). Callers catch these errors without
importing it.
"""

from __future__ import annotations


class SsoError(Exception):
    """Login or refresh failed; the message says what the user should do."""
