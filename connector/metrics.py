"""Every Prometheus metric the connector exports, in one place so names and labels stay consistent.

Served at `/metrics` on the metrics listener (connector.proxy.metrics_listener). Labels are bounded
(socket names, verbs, status codes, outcomes), never user names or paths, so the series count stays
small however many users there are.

Gauges say `multiprocess_mode="livesum"` (`liveall` for `connector_worker`): with `serve --workers N`
the served value is the sum over the workers alive now (a dead worker's open connections are not open
any more). A single process ignores it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "connector_requests_total",
    "Kubernetes API requests handled, by socket, verb, HTTP status code and policy decision.",
    ["socket", "verb", "code", "decision"],
)
REQUEST_DURATION = Histogram(
    "connector_request_duration_seconds",
    "Time from receiving a request to the end of its response (streams: to their end).",
    ["socket", "verb"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BYTES = Counter(
    "connector_bytes_total",
    "Body bytes relayed, by socket and direction (to_upstream, to_client).",
    ["socket", "direction"],
)
OPEN_STREAMS = Gauge(
    "connector_open_streams",
    "Long-lived streams open now, by socket and kind (watch, log, exec, attach, portforward).",
    ["socket", "kind"],
    multiprocess_mode="livesum",
)
CONNECTIONS_OPEN = Gauge(
    "connector_connections_open",
    "Client connections open now, from their accept (TLS handshakes included).",
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "connector_connections_refused_total",
    "Client connections closed at accept, by reason (max_connections, max_connections_per_ip).",
    ["reason"],
)
CONNECTION_TIMEOUTS = Counter(
    "connector_connection_timeouts_total",
    "Client connections closed by a deadline before a request reached the handler, by phase "
    "(handshake, headers, idle).",
    ["phase"],
)
SESSIONS = Counter(
    "connector_sessions_total",
    "Interactive sessions started (exec, attach, portforward), by socket and kind.",
    ["socket", "kind"],
)
AUTHN_FAILURES = Counter(
    "connector_authentication_failures_total",
    "Requests refused because their credentials were missing or invalid, by reason class.",
    ["reason"],
)
DISCOVERY_SCANS = Counter(
    "connector_discovery_scans_total",
    "EKS discovery scans, by outcome (ok, partial, failed).",
    ["outcome"],
)
DISCOVERED_SOCKETS = Gauge(
    "connector_discovered_sockets",
    "Sockets currently known from EKS discovery (stale ones included).",
    multiprocess_mode="livesum",
)
TOKEN_REFRESHES = Counter(
    "connector_token_refreshes_total",
    "Upstream credential refreshes (EKS tokens, exec plugins, token files), by kind and outcome.",
    ["kind", "outcome"],
)
AUDIT_WRITE_ERRORS = Counter(
    "connector_audit_write_errors_total",
    "Audit events that could not be written to the audit sink.",
)
RECORDING_ERRORS = Counter(
    "connector_recording_errors_total",
    "Session recording failures, by stage (open, write, upload, decode).",
    ["stage"],
)
CONFIG_RELOADS = Counter(
    "connector_config_reloads_total",
    "Config reload attempts, by outcome (applied, rejected).",
    ["outcome"],
)

WORKER = Gauge(
    "connector_worker",
    "Set to 1 in a serving process of `serve --workers N`, labelled with its worker index and pid.",
    ["index", "pid"],
    multiprocess_mode="liveall",  # livesum would drop the `pid` label: multiprocess mode owns that name
)
ACCESS_WEBHOOK_EVENTS = Counter(
    "connector_access_webhook_events_total",
    "Access request transition events for the webhook, by outcome (queued, delivered, failed after "
    "every retry, dropped because the queue was full).",
    ["outcome"],
)
ACCESS_WEBHOOK_FAILED_ATTEMPTS = Counter(
    "connector_access_webhook_failed_attempts_total",
    "Webhook POSTs that got no 2xx answer in time (each retry counts).",
)
