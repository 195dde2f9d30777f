"""AWS: EKS cluster discovery and EKS bearer tokens."""
