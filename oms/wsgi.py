"""WSGI entry point (gunicorn, gthread workers): the API, admin and dashboard."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
application = get_wsgi_application()
# Import the URL conf (every router, its schemas and services) while the worker boots: left to
# the first request, it makes that worker's first requests wait (seconds, on two busy cores).
get_resolver().url_patterns  # noqa: B018
