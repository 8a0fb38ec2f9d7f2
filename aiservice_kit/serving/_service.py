"""What a running server holds: its parts and its Prometheus metrics.

`Service` is the one object the routes and the predict pipeline receive;
`create_app` builds it in the app's lifespan.
"""

import dataclasses

import prometheus_client

from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.metering import GroupCommitter
from aiservice_kit.serving.metering import Meter
from aiservice_kit.serving.pricing import PriceList
from aiservice_kit.serving.ratelimit import RateLimiter
from aiservice_kit.serving.registry import Registry


class Metrics:
    """Prometheus metrics of one app (its own registry)."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "aiservice_kit_predict_requests",
            "Predict calls by model and HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.errors = prometheus_client.Counter(
            "aiservice_kit_predict_errors",
            "Predict calls that did not return 200, by model and status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = prometheus_client.Histogram(
            "aiservice_kit_predict_latency_seconds",
            "Time spent in the server per predict call.",
            ["model"],
            buckets=(
                0.0005,
                0.001,
                0.002,
                0.005,
                0.01,
                0.02,
                0.05,
                0.1,
                0.2,
                0.5,
                1.0,
                2.0,
                5.0,
            ),  # fmt: skip
            registry=self.registry,
        )
        self.batch_size = prometheus_client.Histogram(
            "aiservice_kit_batch_size",
            "Instances per run of a model (after dynamic batching).",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.http = prometheus_client.Counter(
            "aiservice_kit_http_requests",
            "Every HTTP request by route family and status.",
            ["route", "status"],
            registry=self.registry,
        )

    def observe(self, model: str, status: int, seconds: float) -> None:
        """Counts one predict call."""
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)
        if status != 200:
            self.errors.labels(model, str(status)).inc()

    def batch(self, model: str, size: int) -> None:
        """Counts one model run of `size` instances."""
        self.batch_size.labels(model).observe(size)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return (
            prometheus_client.generate_latest(self.registry),
            prometheus_client.CONTENT_TYPE_LATEST,
        )


@dataclasses.dataclass
class Service:
    """The parts of one running server.

    Attributes:
        registry: Registry. The served models and their versions.
        auth: Authenticator. Who is calling.
        limiter: RateLimiter. Rates and monthly quotas per key.
        meter: Meter. The usage ledger.
        committer: GroupCommitter. Commits usage records before replies.
        prices: PriceList. Prices per model.
        metrics: Metrics. Prometheus metrics.
        calls_in_flight: int. Predict calls in the pipeline now (on the
            event loop's thread); a call alone skips the threads'
            hand-offs (`_predict.predict`).
        mean_calls_in_flight: float. Its moving average over the calls'
            arrivals.
    """

    registry: Registry
    auth: Authenticator
    limiter: RateLimiter
    meter: Meter
    committer: GroupCommitter
    prices: PriceList
    metrics: Metrics
    calls_in_flight: int = 0
    mean_calls_in_flight: float = 1.0
