"""A real Kubernetes control plane for the sandbox and the tests: kube-apiserver (1.29 and 1.33)
and etcd built from Kubernetes' own Go modules (`binaries`), EKS-style token authentication through
a token webhook (`token_webhook`), and a node whose kubelet API runs real local processes
(`kubelet`), put together per cluster by `cluster.RealCluster`."""
