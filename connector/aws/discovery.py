"""EKS discovery: find the clusters to expose (`scan_once`, `DiscoveryService`) from the `discovery:`
config (`DiscoveryConfig`). The work is done in the discovery_* modules; this is the API."""

from connector.aws.discovery_config import DiscoveryConfig, EksDiscoveryConfig
from connector.aws.discovery_scan import EksCluster, ScanOptions, ScanResult, scan_once
from connector.aws.discovery_service import DiscoveryService

__all__ = [
    "DiscoveryConfig",
    "DiscoveryService",
    "EksCluster",
    "EksDiscoveryConfig",
    "ScanOptions",
    "ScanResult",
    "scan_once",
]
