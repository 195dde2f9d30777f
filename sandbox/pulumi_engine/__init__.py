"""The real Pulumi engine (CLI and Kubernetes provider) built from Pulumi's Go modules, for the tests
that run the Pulumi program under it (`binaries`)."""
