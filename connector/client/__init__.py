"""The user side: SSO login, kubeconfig set, and the exec credential plugin."""
