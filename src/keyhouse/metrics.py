"""Prometheus metrics, safe under `keyhouse serve --workers N`.

With several workers, prometheus-client's multiprocess mode keeps each worker's samples in files under
PROMETHEUS_MULTIPROC_DIR (set by `keyhouse serve` before the workers start) and sums them when scraped.
Labels are bounded: operationIds of the spec, statuses, and a fixed set of reasons; never a key, an ID
or an address.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

REQUESTS = Counter("keyhouse_requests", "Requests answered, by operationId and status.", ["operation", "status"])
LATENCY = Histogram("keyhouse_request_duration_seconds", "Time to answer a request, by operationId.", ["operation"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
# 1 while every live worker's change-feed listener hears the store's NOTIFYs (PostgreSQL); 0 while one does not
# (its long-polls then look again every second instead of at once).
CHANGE_LISTENER = Gauge("keyhouse_change_feed_listener_listening", "Whether the change feed's listener hears the "
                        "database's NOTIFYs (1), in every live worker.", multiprocess_mode="livemin")
AUTH_FAILURES = Counter("keyhouse_authentication_failures", "Refused credentials, by reason.", ["reason"])
DROPPED_EVENTS = Counter("keyhouse_audit_events_dropped", "Failed-authentication events dropped unwritten: more "
                         "gathered while the database was away than the recorder keeps.")
DROPPED_USAGE = Counter("keyhouse_usage_verdicts_dropped", "Verdicts left uncounted in usage: more distinct keys and "
                        "minutes gathered while the database was away than the recorder keeps.")
RATE_LIMITED = Counter("keyhouse_rate_limited", "Requests and verifications refused by a rate limit, by scope.",
                       ["scope"])

# Plain `text/plain`: Prometheus reads it as format 0.0.4, and Connexion matches it against the spec
# (it compares the type with its parameters in one check and without them in another).
CONTENT_TYPE = "text/plain"
UNROUTED = "none"  # requests that matched no operation (404, 405)


def observe(operation: str | None, status: int, seconds: float) -> None:
    operation = operation or UNROUTED
    REQUESTS.labels(operation, str(status)).inc()
    LATENCY.labels(operation).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The text format 0.0.4 (what every Prometheus scrapes), summed over workers when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(REGISTRY), CONTENT_TYPE
