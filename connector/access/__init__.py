"""Just-in-time access requests: where they are stored (the rules are in connector.policy.access)."""
