"""ASGI entry point (uvicorn): the streaming (SSE) endpoints."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
application = get_asgi_application()
