"""The token webhook a real kube-apiserver of the sandbox authenticates EKS tokens with.

On EKS, kube-apiserver sends every bearer token it cannot check itself to aws-iam-authenticator as
a `TokenReview` (`--authentication-token-webhook-config-file`). This is that server for one
cluster: it verifies the presigned STS GetCallerIdentity URL of a `k8s-aws-v1.` token for this
cluster name against the embedded AWS (`sandbox.apiserver.authn.eks_user`, the same verification
the emulated API server does), reads `kube-system/aws-auth` from the cluster's own apiserver at
each review, maps the caller through its `mapRoles`/`mapUsers`, and answers `authenticated` with
the user, groups and the `arn`/`canonicalArn`/`sessionName`/`accessKeyId` extras EKS adds.

The request body is hostile input: anything but a well-formed v1 TokenReview is a 400.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from connector.aws.token import AwsPrincipal
from sandbox.apiserver.authn import AUTHENTICATED, EKS_TOKEN_PREFIX, EksRefused, eks_user
from sandbox.controlplane.loopback import LoopbackApp

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 64 * 1024
REVIEW_PATH = "/authenticate"


def _review(status: dict[str, Any]) -> web.Response:
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}
    return web.json_response(body)


class TokenWebhook:
    """Serves POST /authenticate for the cluster `cluster_name`; `start()` returns its URL."""

    def __init__(
        self,
        cluster_name: str,
        *,
        serving_ssl: ssl.SSLContext,
        credentials_lookup: Callable[[str], AwsPrincipal | None],
        extra_sts_endpoints: Collection[str],
    ) -> None:
        self.cluster_name = cluster_name
        self._serving_ssl = serving_ssl
        self._credentials_lookup = credentials_lookup
        self._extra_sts_endpoints = tuple(extra_sts_endpoints)
        self._server: LoopbackApp | None = None
        self._http: aiohttp.ClientSession | None = None
        self._api_url = ""
        self._api_ssl: ssl.SSLContext | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=MAX_REVIEW_BYTES)
        app.router.add_post(REVIEW_PATH, self._authenticate)
        self._server = LoopbackApp(app, self._serving_ssl)
        port = await self._server.start()
        self.url = f"https://127.0.0.1:{port}{REVIEW_PATH}"
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    def read_aws_auth_from(self, api_url: str, api_ssl: ssl.SSLContext) -> None:
        """Where aws-auth is read: the cluster's apiserver, as a client with `api_ssl`'s certificate."""
        self._api_url, self._api_ssl = api_url.rstrip("/"), api_ssl

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _aws_auth_data(self) -> dict[str, Any] | None:
        assert self._http is not None and self._api_ssl is not None
        url = f"{self._api_url}/api/v1/namespaces/kube-system/configmaps/aws-auth"
        async with self._http.get(url, ssl=self._api_ssl) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise EksRefused(f"reading kube-system/aws-auth answered {response.status}")
            data = (await response.json()).get("data")
            return data if isinstance(data, dict) else None

    async def _authenticate(self, request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())  # past MAX_REVIEW_BYTES: aiohttp's 413
        except ValueError:
            return web.Response(status=400, text="the body is not a JSON TokenReview")
        spec = review.get("spec") if isinstance(review, dict) else None
        token = spec.get("token") if isinstance(spec, dict) else None
        if not isinstance(token, str) or review.get("kind") != "TokenReview":
            return web.Response(status=400, text="the body is not a TokenReview with spec.token")
        if not token.startswith(EKS_TOKEN_PREFIX):
            return _review({"authenticated": False, "error": "not an EKS token"})
        try:
            user = eks_user(
                token, cluster_name=self.cluster_name, now=datetime.now(UTC),
                credentials_lookup=self._credentials_lookup, extra_sts_endpoints=self._extra_sts_endpoints,
                aws_auth_data=await self._aws_auth_data(), ec2_private_dns_name=None,
            )
        except (EksRefused, aiohttp.ClientError, OSError, ValueError) as exc:
            log.info("cluster %s: refused an EKS token: %s", self.cluster_name, exc)
            return _review({"authenticated": False, "error": "invalid EKS token"})
        body = user.review_body()
        # kube-apiserver adds system:authenticated itself; aws-iam-authenticator does not send it.
        body["groups"] = [g for g in body.get("groups", []) if g != AUTHENTICATED]
        body["uid"] = f"aws-iam-authenticator:{user.extra['canonicalArn'][0]}"
        return _review({"authenticated": True, "user": body})
