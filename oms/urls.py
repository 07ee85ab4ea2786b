"""URL routes: the API under /api/v1, admin, metrics; `/` points visitors at the docs."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.generic import RedirectView

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


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return HttpResponse("Not found", status=404, content_type="text/plain")
