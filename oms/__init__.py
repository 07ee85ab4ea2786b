"""The Django project: settings, URLs, the API, Celery."""

from oms.celery import app as celery_app

__all__ = ["celery_app"]
