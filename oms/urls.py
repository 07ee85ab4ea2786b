"""URL routes: the API under /api/v1, admin, metrics; `/` points visitors at the docs."""

from __future__ import annotations

import os

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.generic import RedirectView

from apps.events.api import event_stream_view
from oms.api import api
from oms.metrics import metrics_view

admin.site.site_header = "IB OMS operations"
admin.site.site_title = "IB OMS"

urlpatterns = [
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("", RedirectView.as_view(url="/api/v1/docs", permanent=False), name="home"),
]

if os.environ.get("OMS_STREAM_PROCESS") == "1":
    # The stream process (oms/asgi.py) serves SSE with an async view; elsewhere the API's route
    # answers the same path with a 307 to it.
    urlpatterns.insert(0, path("api/v1/events/stream", event_stream_view, name="events-stream"))


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return HttpResponse("Not found", status=404, content_type="text/plain")
