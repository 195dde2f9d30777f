"""EKS Access Connector: SSO, fine-grained policy and session recording in front of Kubernetes APIs."""

__version__ = "0.1.0"
