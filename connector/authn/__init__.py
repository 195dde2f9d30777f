"""Client authentication: OIDC id_tokens, service tokens, client certificates (see authenticator.py)."""
