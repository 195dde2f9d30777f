"""The one error authentication raises."""


class AuthenticationError(Exception):
    """Credentials were missing or invalid.

    `public_message` is safe to show the client (it ends up in a 401 Status); `detail` says exactly what
    failed (bad signature, unknown kid, expired at ...) and goes only to the log and the audit event, so
    an attacker learns nothing from probing.
    """

    def __init__(self, public_message: str, detail: str = "", *, reason: str = "invalid"):
        super().__init__(detail or public_message)
        self.public_message = public_message
        self.detail = detail or public_message
        self.reason = reason
