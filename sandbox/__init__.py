"""The one-command local run: embedded AWS (moto), emulated EKS API servers and the connector."""
