"""WSGI entry point (gunicorn, gthread workers): the API, admin and dashboard."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "oms.settings")
application = get_wsgi_application()
