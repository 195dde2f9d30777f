"""The running connector: load the config, serve, reload on SIGHUP or file change, shut down gracefully.

Reload validates everything first (config schema, policies, authentication, audit destination) and
only then swaps, so a config that does not validate is refused with its errors logged and the
running one stays. Policies, authentication, sockets, discovery, audit and recordings apply to the
next request; the listeners (`server.listen`, `server.metrics_listen`, TLS, client CA) need a
restart, and a reload that changes the client CA is refused rather than half-applied.

Shutdown on SIGTERM/SIGINT: /readyz turns 503, the listener closes, open streams (watches, logs -f,
exec, port-forward) are ended cleanly, in-flight requests get until `server.shutdown_grace_seconds`,
then the audit log is flushed and synced.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from aiohttp import web
from yarl import URL

from connector import metrics
from connector.access.expiry_notices import announce_expiries
from connector.access.file_store import FileStore
from connector.access.kubernetes_store import KubernetesStore
from connector.access.store import AccessStore
from connector.access.webhook import WebhookNotifier
from connector.audit.config import AuditConfig
from connector.audit.recording import drain_recordings, open_session_tap
from connector.audit.recording_config import RecordingConfig
from connector.audit.sessions_cli import Sources
from connector.audit.sinks import AuditLog, AuditSinkError
from connector.authn.authenticator import Authenticator, login_config
from connector.aws.discovery import DiscoveryService, EksCluster
from connector.aws.token import EksTokenCache
from connector.config import ConfigError, ConnectorConfig, load_config
from connector.console.browser_sessions import BrowserSessions
from connector.console.session_index import SessionIndex, open_session_index
from connector.hosts import is_loopback
from connector.policy.engine import PolicyEngine
from connector.proxy.app import ProxyContext, TapFactory, create_app, runner_options
from connector.proxy.config import LimitsConfig
from connector.proxy.connection_bounds import BoundedSite, ConnectionBounds, ConnectionSlots, ProxyRunner
from connector.proxy.metrics_listener import MetricsBody, MetricsListener, own_metrics
from connector.proxy.registry import SocketRegistry
from connector.proxy.server_tls import ServerTls, build_server_tls
from connector.proxy.stream_limits import StreamSlots
from connector.secrets import SecretError
from connector.upstream import SocketError, upstream_for_eks_cluster

log = logging.getLogger(__name__)

FAILED_SOCKET_RETRY_SECONDS = 30.0
# In-flight requests may still be using a replaced authenticator (an OIDC key fetch); close it later.
RETIRED_AUTHENTICATOR_GRACE_SECONDS = 60.0


def tap_factory(recordings: RecordingConfig) -> TapFactory | None:
    if not recordings.enabled:
        return None
    return functools.partial(open_session_tap, config=recordings)


def public_host(cfg: ConnectorConfig) -> str:
    """The host users reach the connector at: the public URL's, else the listen host (127.0.0.1 for a wildcard)."""
    configured = URL(cfg.server.public_url) if cfg.server.public_url else None
    if configured is not None and configured.host:
        return configured.host
    listen = cfg.server.listen_address
    return "127.0.0.1" if listen.is_wildcard else listen.host


def session_sources(cfg: ConnectorConfig) -> Sources:
    """Where the console reads recorded sessions: the audit log file and the recordings directory."""
    directory = cfg.recordings.dir
    return Sources(
        audit_log=Path(cfg.audit.file) if cfg.audit.file else None,
        directory=Path(directory) if directory is not None else None,
        s3=cfg.recordings.s3,
    )


def public_url(cfg: ConnectorConfig, port: int) -> str:
    """The configured public URL, or https://<listen host or 127.0.0.1>:<port>."""
    if cfg.server.public_url is not None:
        return cfg.server.public_url
    listen = cfg.server.listen_address
    host = "127.0.0.1" if listen.is_wildcard else listen.host
    return str(URL.build(scheme="https", host=host, port=port))


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Connector:
    """One connector process. `start()` then `shutdown()`, or `run()` for both with signal handling.

    The hooks below (`_open_audit`, `_stream_slots`, `_connection_slots`, `_start_discovery`,
    `_reload_discovery`, `_listen`, `_metrics_body`, `_stop_metrics`, `reuse_port`, `watches_config`,
    `reloads_on_sighup`, `announces_expiries`) are where
    `serve --workers N` (connector.proxy.workers) puts the parts that must stay one per connector.
    """

    # Listen with SO_REUSEPORT, so that several serving processes share the port.
    reuse_port = False
    # Reload when the config file changes, and on SIGHUP (a worker is told to by its supervisor).
    watches_config = True
    reloads_on_sighup = True
    # Send the webhook's `expired` events (once per connector: the supervisor's, not each worker's).
    announces_expiries = True

    def __init__(self, config_path: str | Path, *, audit_stdout: BinaryIO | None = None):
        self.config_path = Path(config_path)
        self._audit_stdout = audit_stdout
        self._reload_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        self._retired: set[asyncio.Task[None]] = set()
        self.cfg: ConnectorConfig | None = None
        self.ctx: ProxyContext | None = None
        self.tls: ServerTls | None = None
        self.url = ""
        self.metrics_url = ""  # empty while the metrics listener is off
        self._runner: web.AppRunner | None = None
        self._metrics_listener: MetricsListener | None = None
        self._discovery: DiscoveryService | None = None
        self._file_state: tuple[int, int, int] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Load the config and serve. Raises ConfigError, AuditSinkError, TlsSetupError or OSError (bind)."""
        self._file_state = _file_state(self.config_path)
        cfg = load_config(self.config_path)
        policy = _policy_engine(cfg, str(self.config_path))
        webhook = _access_webhook(cfg, str(self.config_path))
        authenticator = Authenticator.from_config(cfg.authentication)
        try:
            audit = self._open_audit(cfg)
        except AuditSinkError:
            await authenticator.close()
            raise
        audit.start()
        registry = SocketRegistry(EksTokenCache())
        self.cfg = cfg
        self.ctx = ProxyContext(
            server=cfg.server,
            public_url="",
            registry=registry,
            audit=audit,
            policy=policy,
            authenticator=authenticator,
            login_config=login_config(cfg.authentication),
            tap_factory=tap_factory(cfg.recordings),
            access_requests=tuple(cfg.access_requests),
            access_store=_access_store(cfg, None),
            streams=self._stream_slots(),
            browser_sessions=self._browser_sessions(),
            console=cfg.console,
            session_sources=session_sources(cfg),
            access_webhook=webhook,
        )
        self.ctx.session_index = open_session_index(cfg, self.ctx.session_sources, None)
        if webhook is not None:
            webhook.start()
        try:
            await self._start_access_store(self.ctx.access_store)
            await registry.apply_static(cfg.sockets)
            await self._start_discovery(cfg)
            # Before the main listener: a metrics port in use fails the start before any worker is spawned.
            await self._start_metrics(cfg)
            await self._listen(cfg)
        except BaseException:
            await self._stop_metrics()
            await self._close_parts()
            raise
        self._background = [
            asyncio.create_task(self._retry_failed_sockets(), name="socket-retry"),
            asyncio.create_task(self.ctx.granted_streams.run(self.ctx), name="granted-streams"),
        ]
        if self.announces_expiries:
            self._background.append(asyncio.create_task(announce_expiries(self.ctx), name="access-expiry-notices"))
        if self.watches_config:
            self._background.append(asyncio.create_task(self._watch_config(), name="config-watch"))
        if self.ctx.session_index is not None:
            index = self.ctx.session_index
            self._background.append(asyncio.create_task(_catch_up(index), name="console-sessions-index"))

    def _open_audit(self, cfg: ConnectorConfig) -> AuditLog:
        """The audit log the config asks for; raises AuditSinkError."""
        return AuditLog(cfg.audit, stdout=self._audit_stdout)

    def _stream_slots(self) -> StreamSlots:
        return StreamSlots()

    def _browser_sessions(self) -> BrowserSessions:
        return BrowserSessions()

    def _connection_slots(self, limits: Callable[[], LimitsConfig]) -> ConnectionSlots:
        return ConnectionSlots(limits)

    def _listen_port(self, cfg: ConnectorConfig) -> int:
        return cfg.server.listen_address.port

    async def _listen(self, cfg: ConnectorConfig) -> None:
        assert self.ctx is not None
        listen = cfg.server.listen_address
        self.tls = build_server_tls(cfg.server, public_host(cfg), self.ctx.authenticator.client_ca_file)
        ctx = self.ctx

        def limits() -> LimitsConfig:
            return ctx.server.limits

        bounds = ConnectionBounds(limits, self._connection_slots(limits), audit=lambda: ctx.audit)
        self._runner = ProxyRunner(create_app(ctx), bounds, **runner_options(cfg.server))
        await self._runner.setup()
        site = BoundedSite(
            self._runner, listen.host, self._listen_port(cfg), ssl_context=self.tls.context, reuse_port=self.reuse_port
        )
        await site.start()
        self.url = public_url(cfg, site.port)
        self.ctx.public_url = self.url
        self._announce(f"serving on {self.url} (listening on {listen.host}:{site.port})")

    def _metrics_body(self) -> MetricsBody | None:
        """What the metrics listener serves: this process's registry; None: this process serves no metrics."""
        return own_metrics

    async def _start_metrics(self, cfg: ConnectorConfig) -> None:
        address = cfg.server.metrics_address
        body = self._metrics_body() if address is not None else None
        if address is None or body is None:
            return
        self._metrics_listener = MetricsListener(body)
        self.metrics_url = await self._metrics_listener.start(address)
        if is_loopback(address.host):
            log.info("metrics on %s", self.metrics_url)
        else:
            log.warning("metrics on %s: plain HTTP without authentication, firewall it", self.metrics_url)

    async def _stop_metrics(self) -> None:
        if self._metrics_listener is not None:
            await self._metrics_listener.stop()
            self._metrics_listener = None

    def _announce(self, serving: str) -> None:
        """Log that the connector serves: the line scripts wait for, once per connector (not per worker)."""
        log.info("%s", serving)
        if self.tls is not None and self.tls.ca_file is not None:
            log.info("no server.tls certificate configured: clients must trust the connector's CA %s", self.tls.ca_file)

    async def _start_discovery(self, cfg: ConnectorConfig) -> None:
        if not cfg.discovery.aws_eks:
            self._discovery = None
            return
        service = DiscoveryService(cfg.discovery)
        service.subscribe(self._discovered)
        await service.start()
        self._discovery = service

    def _discovered(self, added: list[EksCluster], changed: list[EksCluster], removed: list[EksCluster]) -> None:
        """Discovery subscriber: serve new clusters, refresh changed ones, retire the ones that went away."""
        assert self.ctx is not None
        registry = self.ctx.registry
        for cluster in [*added, *changed]:
            try:
                upstream = upstream_for_eks_cluster(cluster, cluster.credentials, registry.token_cache)
            except SocketError as exc:
                log.error("%s", exc)
                registry.remove_discovered(cluster.socket_name)
                continue
            registry.put_discovered(
                cluster.socket_name,
                upstream,
                region=cluster.region,
                fingerprint=(cluster.endpoint, cluster.ca_data, tuple(sorted(cluster.tags.items()))),
            )
        for cluster in removed:
            registry.remove_discovered(cluster.socket_name)

    async def reload(self, reason: str) -> bool:
        """Apply the config file again; False (and the running config kept) when it does not validate."""
        async with self._reload_lock:
            try:
                applied = await self._reload()
            except Exception:
                log.exception("config reload (%s) failed; the running config stays", reason)
                applied = False
            metrics.CONFIG_RELOADS.labels("applied" if applied else "rejected").inc()
            if applied:
                log.info("config reloaded (%s)", reason)
            return applied

    async def _reload(self) -> bool:
        assert self.ctx is not None and self.cfg is not None
        ctx, old = self.ctx, self.cfg
        self._file_state = _file_state(self.config_path)
        try:
            cfg = load_config(self.config_path)
            policy = _policy_engine(cfg, str(self.config_path))
            webhook_changed = cfg.access_requests_webhook != old.access_requests_webhook
            webhook = _access_webhook(cfg, str(self.config_path)) if webhook_changed else ctx.access_webhook
            authenticator = (
                Authenticator.from_config(cfg.authentication) if cfg.authentication != old.authentication else None
            )
        except ConfigError as exc:
            for line in exc.errors:
                log.error("config reload refused: %s", line)
            return False
        new_ca = authenticator.client_ca_file if authenticator is not None else ctx.authenticator.client_ca_file
        if new_ca != (self.tls.client_ca_file if self.tls else None):
            log.error(
                "config reload refused: authentication.client_certificates.client_ca_file changed; the TLS listener "
                "trusts the CA it started with, so restart the connector to apply it"
            )
            if authenticator is not None:
                await authenticator.close()
            return False
        audit: AuditLog | None = None
        if cfg.audit != old.audit:
            try:
                audit = self._open_audit(cfg)
            except AuditSinkError as exc:
                log.error("config reload refused: %s", exc)
                if authenticator is not None:
                    await authenticator.close()
                return False
        _warn_restart_needed(old, cfg)

        # Everything validated: swap.
        self.cfg = cfg
        ctx.server = cfg.server
        ctx.policy = policy
        if authenticator is not None:
            retired_auth, ctx.authenticator = ctx.authenticator, authenticator
            self._later(retired_auth.close(), RETIRED_AUTHENTICATOR_GRACE_SECONDS)
        ctx.login_config = login_config(cfg.authentication)
        ctx.tap_factory = tap_factory(cfg.recordings)
        ctx.access_requests = tuple(cfg.access_requests)
        retired_store, ctx.access_store = ctx.access_store, _access_store(cfg, ctx.access_store)
        if ctx.access_store is not retired_store:
            await self._start_access_store(ctx.access_store)
            if retired_store is not None:
                self._later(retired_store.close(), 0)
        ctx.console = cfg.console
        ctx.session_sources = session_sources(cfg)
        ctx.session_index = open_session_index(cfg, ctx.session_sources, ctx.session_index)
        ctx.granted_streams.changed()  # grants follow the new definitions and policies
        if webhook is not ctx.access_webhook:
            retired_webhook, ctx.access_webhook = ctx.access_webhook, webhook
            if webhook is not None:
                webhook.start()
            if retired_webhook is not None:
                self._later(retired_webhook.close(), 0)
        if audit is not None:
            audit.start()
            retired_audit, ctx.audit = ctx.audit, audit
            self._later(retired_audit.close(), 0)
        else:
            _reopen_audit(ctx.audit, cfg.audit)
        await ctx.registry.apply_static(cfg.sockets)
        if cfg.discovery != old.discovery:
            await self._reload_discovery(cfg)
        return True

    async def _reload_discovery(self, cfg: ConnectorConfig) -> None:
        """Replace the discovery service after its config changed."""
        assert self.ctx is not None
        if self._discovery is not None:
            await self._discovery.stop()
        await self._start_discovery(cfg)
        # The new service announced its clusters as it started; drop what it no longer finds.
        current = self._discovery.current() if self._discovery is not None else {}
        self.ctx.registry.keep_discovered(set(current))

    def _later(self, work: Awaitable[None], delay: float) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await work

        task = asyncio.create_task(run())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _watch_config(self) -> None:
        """Reload when the config file changes (mtime, size or inode, so ConfigMap symlink swaps count)."""
        while True:
            assert self.cfg is not None
            await asyncio.sleep(self.cfg.server.config_poll_seconds)
            state = _file_state(self.config_path)
            if state is not None and state != self._file_state:
                await self.reload("config file changed")

    async def _retry_failed_sockets(self) -> None:
        while True:
            await asyncio.sleep(FAILED_SOCKET_RETRY_SECONDS)
            assert self.ctx is not None
            if self.ctx.registry.problems:
                await self.ctx.registry.retry_failed()

    async def shutdown(self) -> None:
        """Stop accepting, end streams cleanly, let in-flight requests finish (bounded), flush the audit log."""
        if self.ctx is None:
            return
        self.ctx.shutting_down = True
        if self.ctx.session_index is not None:
            self.ctx.session_index.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
            self.ctx.registry.stop_all_streams()
            await self._runner.cleanup()
            self._runner = None
        await self._stop_metrics()
        await self._close_parts()

    async def _start_access_store(self, store: AccessStore | None) -> None:
        """Start `store` (the Kubernetes store lists, then watches: /readyz waits for the list);
        every change it sees makes the granted streams check again at once."""
        if store is None:
            return
        assert self.ctx is not None
        if isinstance(store, KubernetesStore):
            store.on_change = self.ctx.granted_streams.changed
        await store.start()

    async def _close_parts(self) -> None:
        assert self.ctx is not None
        if self.ctx.access_store is not None:
            await self.ctx.access_store.close()
        if self._discovery is not None:
            await self._discovery.stop()
            self._discovery = None
        await self.ctx.registry.close()
        for task in list(self._retired):
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)
        await self.ctx.authenticator.close()
        if self.ctx.access_webhook is not None:
            await self.ctx.access_webhook.close()
        # Sessions that just ended are still being fsynced/uploaded; their audit events follow.
        await drain_recordings()
        await self.ctx.audit.close()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; SIGHUP reloads. Returns the process exit code.

        The handlers are installed before `start()`, which logs the "serving on" line that scripts wait
        for: a signal sent on that line must find them (SIGHUP's default would end the process). A
        SIGHUP during start-up reloads once started; a SIGTERM during start-up stops once started.
        """
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[bool]] = set()
        started, hup_while_starting = False, False

        def on_hup() -> None:
            nonlocal hup_while_starting
            if not self.reloads_on_sighup:
                return
            if not started:
                hup_while_starting = True
                return
            task = asyncio.create_task(self.reload("SIGHUP"))
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, on_hup)
        loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
        loop.add_signal_handler(signal.SIGINT, self._stopping.set)
        try:
            await self.start()
        except BaseException:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            raise
        started = True
        if hup_while_starting:
            on_hup()
        try:
            await self._stopping.wait()
            log.info("shutting down (grace %.0f s)", self.cfg.server.shutdown_grace_seconds if self.cfg else 0)
        finally:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.shutdown()
        return 0

    def stop(self) -> None:
        """Ask `run()` to shut down (what SIGTERM does)."""
        self._stopping.set()


def _policy_engine(cfg: ConnectorConfig, source: str) -> PolicyEngine:
    try:
        return PolicyEngine(cfg.policies)
    except ValueError as exc:
        raise ConfigError(source, [f"{source}: policies: {exc}"]) from None


def _access_store(cfg: ConnectorConfig, current: AccessStore | None) -> AccessStore | None:
    """The store the config names, keeping the current one (its cache, its watch) when unchanged."""
    wanted = cfg.access_store
    if wanted is None:
        return None
    if current is not None and current.same_config(wanted):
        return current
    if wanted.kubernetes is not None:
        return KubernetesStore(wanted.kubernetes)
    assert wanted.file is not None
    return FileStore(Path(wanted.file))


def _access_webhook(cfg: ConnectorConfig, source: str) -> WebhookNotifier | None:
    """The notifier the config's access_requests_webhook asks for; ConfigError when its secret cannot be read."""
    if cfg.access_requests_webhook is None:
        return None
    try:
        return WebhookNotifier.from_config(cfg.access_requests_webhook)
    except SecretError as exc:
        raise ConfigError(source, [f"{source}: access_requests_webhook.secret: {exc}"]) from None


def _reopen_audit(audit: AuditLog, cfg: AuditConfig) -> None:
    """Reopen an unchanged audit file (logrotate moved it and sent SIGHUP)."""
    if cfg.file is None:
        return
    try:
        audit.reopen()
    except AuditSinkError as exc:
        log.error("%s; audit events keep going to the file opened before", exc)


async def _catch_up(index: SessionIndex) -> None:
    """Index the recorded sessions at start, so that the console's first sessions page is fast."""
    for warning in await asyncio.to_thread(index.catch_up):
        log.info("console: sessions index: %s", warning)  # the sessions page shows them too


def _warn_restart_needed(old: ConnectorConfig, new: ConnectorConfig) -> None:
    for key in ("listen", "metrics_listen", "public_url", "tls", "state_dir"):
        if getattr(old.server, key) != getattr(new.server, key):
            log.warning("server.%s changed: restart the connector to apply it (the rest of the config is applied)", key)
    if new.console.enabled and not old.console.enabled:
        log.warning("console.enabled turned on: restart the connector to serve /console/ (routes are added at start)")
    if old.server.limits != new.server.limits:
        log.warning(
            "server.limits changed: applied to new requests and connections, but the HTTP parser keeps the "
            "header line limit it started with until a restart"
        )
