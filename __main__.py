"""The Pulumi program of the EKS Access Connector: `pulumi up` runs this file.

It reads the stack configuration, validates all of it (every problem reported with its key before
anything is declared), and hands it to `infra.program.deploy`. See the README's "Deploy to your
AWS account" for the configuration keys.
"""

import pulumi

from infra import kubeconfig_stack
from infra.config import StackConfigError, parse_stack_config
from infra.program import deploy, read_environment, read_stack_config_values


def main() -> None:
    project = pulumi.get_project()
    try:
        source = f"config {project}"
        cfg = parse_stack_config(read_stack_config_values(project), source)
        if cfg.kubeconfig_mode:
            kubeconfig_stack.deploy(cfg, source)  # any Kubernetes: no AWS lookup, resource or provider
        else:
            deploy(cfg, read_environment(), source)
    except StackConfigError as exc:
        # RunError: Pulumi prints the message alone, without a Python traceback.
        raise pulumi.RunError(str(exc)) from None


main()
