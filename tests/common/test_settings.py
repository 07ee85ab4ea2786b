"""Settings come from the environment, fail loudly when malformed, and accept mounted secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _settings_value(expression: str, **env: str) -> subprocess.CompletedProcess[str]:
    code = f"import django, os; django.setup(); from django.conf import settings; print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "oms.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_secret_file_variables_are_read(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("from-a-mounted-file-0123456789\n")
    result = _settings_value("settings.SECRET_KEY", SECRET_KEY_FILE=str(secret))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "from-a-mounted-file-0123456789"


def test_unreadable_secret_file_fails_loudly():
    result = _settings_value("settings.SECRET_KEY", SECRET_KEY_FILE="/nonexistent/secret")
    assert result.returncode != 0
    assert "SECRET_KEY_FILE points at '/nonexistent/secret'" in result.stderr


def test_malformed_values_fail_naming_the_variable():
    result = _settings_value("settings.JWT_ACCESS_MINUTES", JWT_ACCESS_MINUTES="soon")
    assert result.returncode != 0
    assert "JWT_ACCESS_MINUTES" in result.stderr
    result = _settings_value("settings.RATE_LIMITS", RATE_LIMIT_READ="lots")
    assert "RATE_LIMIT_READ must look like '100/10'" in result.stderr
    result = _settings_value("settings.DATABASES", DATABASE_URL="mysql://root@localhost/oms")
    assert "DATABASE_URL must be a PostgreSQL URL" in result.stderr


def test_production_refuses_the_development_secret_key():
    result = _settings_value("settings.SECRET_KEY", OMS_ENVIRONMENT="production", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set in production" in result.stderr
