"""EKS bearer tokens: sign them (`EksTokenSigner`), cache them per cluster (`EksTokenCache`), and check
them as EKS does (`verify_eks_token`). The work is done in the token_* modules; this is the API."""

from connector.aws.token_cache import EksTokenCache
from connector.aws.token_format import EksTokenError
from connector.aws.token_sign import EksToken, EksTokenSigner
from connector.aws.token_verify import AwsPrincipal, EksIdentity, verify_eks_token

__all__ = [
    "AwsPrincipal",
    "EksIdentity",
    "EksToken",
    "EksTokenCache",
    "EksTokenError",
    "EksTokenSigner",
    "verify_eks_token",
]
