"""An emulated EKS Kubernetes API server: the sandbox's clusters and the tests' upstream.

    server = EmulatedApiServer("prod", scratch_dir=Path(tmp), credentials_lookup=aws.credentials_lookup,
                               extra_sts_endpoints=[aws.endpoint_url])
    await server.start()
    server.url            # https://127.0.0.1:<port>
    server.ca_pem         # the cluster CA (PEM bytes); also written to server.ca_path
    server.bootstrap_token  # bearer token of `kubernetes-admin` (system:masters)
    server.store.apply({...})   # seed an object (create, or replace by name), then its status
    server.store.get_by_kind("apps/v1", "Deployment", "web", "default")   # or store.get(rt, ns, name)
    server.faults         # set_latency / drop_connections / fail_requests / restart (see faults)
    server.requests_seen  # [SeenRequest(method, path, user)], every request received
    await server.stop()

Constructor: `EmulatedApiServer(cluster_name, *, scratch_dir, version="v1.31.4",
credentials_lookup=None, extra_sts_endpoints=(), bootstrap_token=None, host="127.0.0.1", port=0,
ec2_private_dns_name=None, log_interval=0.5, bookmark_interval=60.0, history=5000)`.
`credentials_lookup(access_key_id) -> AwsPrincipal | None` and `extra_sts_endpoints` are what
`connector.aws.token.verify_eks_token` needs to check EKS tokens (the embedded AWS provides both);
without a lookup EKS tokens are refused. `ec2_private_dns_name(instance_id)` resolves the aws-auth
template `{{EC2PrivateDNSName}}`. `log_interval` is how often each container logs a line,
`bookmark_interval` how often watches that allow bookmarks get one, `history` how many writes
watches can resume from.

A new server holds what a new EKS cluster holds (namespaces, one node, the bootstrap RBAC roles);
`python -m sandbox.apiserver` runs one on its own. The store is not thread-safe: seed it from the
event loop that runs the server. What it serves and how: see `catalog` (resources), `handlers`
(REST), `watch`, `logs`, `authn`/`aws_auth`, `authz`/`impersonation`, `faults`.
"""

from sandbox.apiserver.server import EmulatedApiServer, SeenRequest

__all__ = ["EmulatedApiServer", "SeenRequest"]
