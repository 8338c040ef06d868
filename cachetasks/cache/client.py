"""The Redis client the cache and its readers use."""

from __future__ import annotations

import redis


def make_redis(url: str, *, timeout: float) -> redis.Redis:
    """A binary-safe client with timeouts, so an outage fails calls instead of hanging them."""
    return redis.Redis.from_url(
        url,
        socket_timeout=max(timeout, 1.0),
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
