"""ASGI entry point (uvicorn): the streaming (SSE) endpoints."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
# This process serves the streaming endpoints itself (oms/urls.py); the web process redirects them here.
os.environ["OMS_STREAM_PROCESS"] = "1"
application = get_asgi_application()
