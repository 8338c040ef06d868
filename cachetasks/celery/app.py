"""The Celery app. Its configuration is the top-level `celeryconfig` module."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from .. import resources
from ..settings import Settings

app = Celery("cachetasks")
app.config_from_object("celeryconfig")


def settings() -> Settings:
    conf_settings: Settings = app.conf.cachetasks_settings
    return conf_settings


@worker_process_init.connect
def _fresh_resources_after_fork(**_: object) -> None:
    resources.reset()


@worker_ready.connect
def _serve_metrics(**_: object) -> None:
    if settings().metrics_port:
        from ..ops import metrics  # prometheus_client only where it is served

        metrics.serve(settings())


@worker_shutdown.connect
@worker_process_shutdown.connect
def _close_resources(**_: object) -> None:
    resources.reset()
