"""Django settings, every knob read from the environment.

`config/.env.example` lists every variable. A malformed value fails at start-up, loudly: a
trading system must not come up half-configured. Any variable may instead be given as
`<NAME>_FILE` pointing at a mounted secret file.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# Variables that may come from a mounted secret file as `<NAME>_FILE`.
SECRET_VARIABLES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "JWT_SIGNING_KEY",
    "FIELD_ENCRYPTION_KEYS",
    "COMMAND_SIGNING_KEY",
    "SENTRY_DSN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def _load_secret_files() -> None:
    """Resolve `<NAME>_FILE` variables (Kubernetes / Docker secrets) into `<NAME>`."""
    for name in SECRET_VARIABLES:
        path = os.environ.get(f"{name}_FILE")
        if not path or name in os.environ:
            continue
        try:
            os.environ[name] = Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points at {path!r}, which cannot be read: {exc}") from exc


_load_secret_files()
env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be a positive integer, got {value}")
    return value


DEBUG = env.bool("DEBUG", default=False)
ENVIRONMENT = env.str("OMS_ENVIRONMENT", default="development")
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if ENVIRONMENT == "production":
        raise ImproperlyConfigured("SECRET_KEY must be set in production")
    SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789abcdef"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Proxies whose X-Forwarded-For we believe when finding the client IP (IP allowlists, audit).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework_simplejwt.token_blacklist",
    "guardian",
    "django_celery_beat",
    "apps.common",
    "apps.audit",
    "apps.tenants",
    "apps.events",
    "apps.brokers",
    "apps.marketdata",
    "apps.portfolio",
    "apps.compliance",
    "apps.risk",
    "apps.orders",
    "apps.allocator",
]

MIDDLEWARE = [
    "oms.middleware.TraceMiddleware",
    "oms.middleware.MetricsMiddleware",
    "oms.middleware.ApiErrorEnvelopeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Django's session, CSRF, user and messages middleware, skipped for /api/ (header auth only).
    "oms.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "oms.middleware.BrowserCsrfViewMiddleware",
    "oms.middleware.BrowserAuthenticationMiddleware",
    "oms.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "oms.urls"
WSGI_APPLICATION = "oms.wsgi.application"
ASGI_APPLICATION = "oms.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/oms")
_db = env.db_url_config(DATABASE_URL)
if _db.get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured(f"DATABASE_URL must be a PostgreSQL URL, got engine {_db.get('ENGINE')!r}")
DB_POOL = env.bool("DB_POOL", default=True)
DB_POOL_MAX_SIZE = _positive("DB_POOL_MAX_SIZE", env.int("DB_POOL_MAX_SIZE", default=8))
_db["OPTIONS"] = {
    **_db.get("OPTIONS", {}),
    # Django's built-in psycopg 3 pool; per process, sized for gthread workers.
    **({"pool": {"min_size": 1, "max_size": DB_POOL_MAX_SIZE, "timeout": 10}} if DB_POOL else {}),
}
# Each test run gets a database of its own so that concurrent runs never collide.
_db["TEST"] = {"NAME": env.str("OMS_TEST_DB_NAME", default=f"test_oms_{os.getpid()}")}
if not DB_POOL:
    _db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL must be a redis:// URL, got {REDIS_URL!r}")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "oms:cache",
    }
}

AUTH_USER_MODEL = "tenants.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_HASHERS = env.list(
    "PASSWORD_HASHERS",
    default=[
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
        "django.contrib.auth.hashers.ScryptPasswordHasher",
    ],
)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "var" / "static")))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))

# --- Authentication -------------------------------------------------------------------------
JWT_ACCESS_MINUTES = _positive("JWT_ACCESS_MINUTES", env.int("JWT_ACCESS_MINUTES", default=15))
JWT_REFRESH_DAYS = _positive("JWT_REFRESH_DAYS", env.int("JWT_REFRESH_DAYS", default=7))
JWT_SIGNING_KEY = env.str("JWT_SIGNING_KEY", default=SECRET_KEY)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=JWT_ACCESS_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=JWT_REFRESH_DAYS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "ISSUER": "ib-oms",
    "LEEWAY": 5,
}
LOGIN_LOCKOUT_THRESHOLD = _positive("LOGIN_LOCKOUT_THRESHOLD", env.int("LOGIN_LOCKOUT_THRESHOLD", default=5))
LOGIN_LOCKOUT_WINDOW_SECONDS = _positive(
    "LOGIN_LOCKOUT_WINDOW_SECONDS", env.int("LOGIN_LOCKOUT_WINDOW_SECONDS", default=900)
)
LOGIN_LOCKOUT_SECONDS = _positive("LOGIN_LOCKOUT_SECONDS", env.int("LOGIN_LOCKOUT_SECONDS", default=900))
INVITATION_TTL_HOURS = _positive("INVITATION_TTL_HOURS", env.int("INVITATION_TTL_HOURS", default=72))
TOTP_ISSUER = env.str("TOTP_ISSUER", default="IB OMS")
# Fernet keys for secrets at rest (TOTP seeds, broker credentials), newest first.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])

# Token buckets: "<capacity>/<refill per second>" per route class; per tenant and per principal.
RATE_LIMITS = {
    "auth": env.str("RATE_LIMIT_AUTH", default="20/0.5"),
    "read": env.str("RATE_LIMIT_READ", default="2000/500"),
    "write": env.str("RATE_LIMIT_WRITE", default="200/50"),
    "tenant": env.str("RATE_LIMIT_TENANT", default="10000/2500"),
}
for _name, _spec in RATE_LIMITS.items():
    try:
        _cap, _rate = _spec.split("/")
        if float(_cap) <= 0 or float(_rate) <= 0:
            raise ValueError
    except ValueError as exc:
        raise ImproperlyConfigured(f"RATE_LIMIT_{_name.upper()} must look like '100/10', got {_spec!r}") from exc
RATE_LIMIT_ENABLED = env.bool("RATE_LIMIT_ENABLED", default=True)

# --- Audit and partitioning -------------------------------------------------------------------
AUDIT_RETENTION_MONTHS = _positive("AUDIT_RETENTION_MONTHS", env.int("AUDIT_RETENTION_MONTHS", default=84))
PARTITIONS_AHEAD_MONTHS = _positive("PARTITIONS_AHEAD_MONTHS", env.int("PARTITIONS_AHEAD_MONTHS", default=3))

# --- Orders, events and brokers ------------------------------------------------------------------
OUTBOX_RETENTION_MONTHS = _positive("OUTBOX_RETENTION_MONTHS", env.int("OUTBOX_RETENTION_MONTHS", default=3))
EXECUTION_RETENTION_MONTHS = _positive("EXECUTION_RETENTION_MONTHS", env.int("EXECUTION_RETENTION_MONTHS", default=120))
# Entries kept per Redis stream (approximate trimming); the outbox keeps the full history.
EVENTS_STREAM_MAXLEN = _positive("EVENTS_STREAM_MAXLEN", env.int("EVENTS_STREAM_MAXLEN", default=100_000))
# After Redis lost its data, the relay publishes again the rows of this many recent hours.
EVENTS_REPLAY_HOURS = _positive("EVENTS_REPLAY_HOURS", env.int("EVENTS_REPLAY_HOURS", default=24))
# Entries kept in each tenant's event stream: how far back `/events/stream` can resume (Last-Event-ID).
EVENTS_TENANT_STREAM_MAXLEN = _positive(
    "EVENTS_TENANT_STREAM_MAXLEN", env.int("EVENTS_TENANT_STREAM_MAXLEN", default=10_000)
)
# Seconds between comment heartbeats of idle SSE streams (proxies close silent connections).
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=15.0)
if not 0 < SSE_HEARTBEAT_SECONDS <= 300:
    raise ImproperlyConfigured(f"SSE_HEARTBEAT_SECONDS must be in (0, 300], got {SSE_HEARTBEAT_SECONDS}")
# Where the web process redirects (307) SSE clients: the stream process's public base URL. Empty:
# the request's host at port OMS_PORT + 1, as `make run` starts it.
STREAM_URL = env.str("STREAM_URL", default="").rstrip("/")
STREAM_PORT = _positive("OMS_PORT", env.int("OMS_PORT", default=8000)) + 1
IDEMPOTENCY_TTL_HOURS = _positive("IDEMPOTENCY_TTL_HOURS", env.int("IDEMPOTENCY_TTL_HOURS", default=24))
# HMAC-SHA256 key of the command envelopes sent to broker connectors (oms.submit / cancel / modify).
COMMAND_SIGNING_KEY = env.str("COMMAND_SIGNING_KEY", default="")
if not COMMAND_SIGNING_KEY:
    if ENVIRONMENT == "production":
        raise ImproperlyConfigured("COMMAND_SIGNING_KEY must be set in production")
    COMMAND_SIGNING_KEY = f"dev-command-key:{SECRET_KEY}"
COMMAND_MAX_AGE_SECONDS = _positive("COMMAND_MAX_AGE_SECONDS", env.int("COMMAND_MAX_AGE_SECONDS", default=30))
IBSIM_HOST = env.str("IBSIM_HOST", default="127.0.0.1")
IBSIM_PORT = _positive("IBSIM_PORT", env.int("IBSIM_PORT", default=4002))

# --- Files: local disk by default, S3 (django-storages + boto3) when FILE_STORAGE=s3 ----------------
FILE_STORAGE = env.str("FILE_STORAGE", default="local")
if FILE_STORAGE not in {"local", "s3"}:
    raise ImproperlyConfigured(f"FILE_STORAGE must be 'local' or 's3', got {FILE_STORAGE!r}")
AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="") or None
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="") or None  # MinIO, moto, other S3-compatibles
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", default="") or None  # None: boto3's credential chain (IAM role)
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", default="") or None
if FILE_STORAGE == "s3" and not AWS_STORAGE_BUCKET_NAME:
    raise ImproperlyConfigured("FILE_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME")


def _file_storage(prefix: str) -> dict[str, object]:
    if FILE_STORAGE == "local":
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": MEDIA_ROOT / prefix if prefix else MEDIA_ROOT},
        }
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "location": prefix,
            "region_name": AWS_S3_REGION_NAME,
            "endpoint_url": AWS_S3_ENDPOINT_URL,
            "access_key": AWS_ACCESS_KEY_ID,
            "secret_key": AWS_SECRET_ACCESS_KEY,
            "default_acl": None,  # private objects; clients get presigned links
            "querystring_auth": True,
            "signature_version": "s3v4",
            "file_overwrite": False,
        },
    }


STORAGES = {
    "default": _file_storage(""),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Client reports (the allocator's PPTX files): private, served through signed expiring links.
    "reports": _file_storage("reports"),
}

# --- Allocator ----------------------------------------------------------------------------------
# Lifetime of a report download link (our signed URL, or the S3 presigned URL).
ALLOCATOR_REPORT_LINK_SECONDS = _positive(
    "ALLOCATOR_REPORT_LINK_SECONDS", env.int("ALLOCATOR_REPORT_LINK_SECONDS", default=600)
)
# A running job is stopped after this long (Celery soft time limit); the reaper acts a minute later.
ALLOCATOR_JOB_TIMEOUT_SECONDS = _positive(
    "ALLOCATOR_JOB_TIMEOUT_SECONDS", env.int("ALLOCATOR_JOB_TIMEOUT_SECONDS", default=900)
)
# Runs of a job whose worker died (a worker that vanished mid-job counts one) before it is failed.
ALLOCATOR_MAX_ATTEMPTS = _positive("ALLOCATOR_MAX_ATTEMPTS", env.int("ALLOCATOR_MAX_ATTEMPTS", default=2))
# A job no worker picked up within this long is failed (its queue message was lost).
ALLOCATOR_QUEUE_TIMEOUT_SECONDS = _positive(
    "ALLOCATOR_QUEUE_TIMEOUT_SECONDS", env.int("ALLOCATOR_QUEUE_TIMEOUT_SECONDS", default=3600)
)

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- Observability ----------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOG_JSON = env.bool("LOG_JSON", default=True)
SENTRY_DSN = env.str("SENTRY_DSN", default="")
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="")
GIT_REVISION = env.str("GIT_REVISION", default="")
HEALTH_GATEWAY_STALE_SECONDS = _positive(
    "HEALTH_GATEWAY_STALE_SECONDS", env.int("HEALTH_GATEWAY_STALE_SECONDS", default=30)
)

# --- risk and compliance -------------------------------------------------------------------------
# Default limits, the de-risk playbook, calendars and breaker thresholds (YAML, validated at start-up).
RISK_RULES_FILE = BASE_DIR / env.str("RISK_RULES_FILE", default="config/risk_rules.yaml")  # absolute wins
if not RISK_RULES_FILE.is_file():
    raise ImproperlyConfigured(f"RISK_RULES_FILE {RISK_RULES_FILE} does not exist")

# --- IB gateway (manage.py run_gateway) ---------------------------------------------------------
# Heartbeat (reqCurrentTime) period and how long an answer may take before the socket counts as dead.
IB_GATEWAY_HEARTBEAT_SECONDS = _positive(
    "IB_GATEWAY_HEARTBEAT_SECONDS", env.int("IB_GATEWAY_HEARTBEAT_SECONDS", default=5)
)
IB_GATEWAY_HEARTBEAT_TIMEOUT_SECONDS = _positive(
    "IB_GATEWAY_HEARTBEAT_TIMEOUT_SECONDS", env.int("IB_GATEWAY_HEARTBEAT_TIMEOUT_SECONDS", default=5)
)
# Scheduled reconciliation while connected (every (re)connect reconciles anyway).
IB_GATEWAY_RECONCILE_SECONDS = _positive(
    "IB_GATEWAY_RECONCILE_SECONDS", env.int("IB_GATEWAY_RECONCILE_SECONDS", default=300)
)
# Messages per second to IB (IB allows 50, all kinds together) and the burst on top of it.
IB_GATEWAY_PACING_RATE = _positive("IB_GATEWAY_PACING_RATE", env.int("IB_GATEWAY_PACING_RATE", default=40))
IB_GATEWAY_PACING_BURST = _positive("IB_GATEWAY_PACING_BURST", env.int("IB_GATEWAY_PACING_BURST", default=5))
if IB_GATEWAY_PACING_RATE + IB_GATEWAY_PACING_BURST > 50:
    raise ImproperlyConfigured("IB_GATEWAY_PACING_RATE + IB_GATEWAY_PACING_BURST must stay within IB's 50 messages/s")
# Reconnects: backoff cap, and the circuit breaker (failed connects before it opens, seconds open).
IB_GATEWAY_BACKOFF_CAP_SECONDS = _positive(
    "IB_GATEWAY_BACKOFF_CAP_SECONDS", env.int("IB_GATEWAY_BACKOFF_CAP_SECONDS", default=30)
)
IB_GATEWAY_BREAKER_THRESHOLD = _positive(
    "IB_GATEWAY_BREAKER_THRESHOLD", env.int("IB_GATEWAY_BREAKER_THRESHOLD", default=5)
)
IB_GATEWAY_BREAKER_OPEN_SECONDS = _positive(
    "IB_GATEWAY_BREAKER_OPEN_SECONDS", env.int("IB_GATEWAY_BREAKER_OPEN_SECONDS", default=60)
)

# --- market data ---------------------------------------------------------------------------------
# IB market data lines per IB login (one line per instrument, shared by every tenant): the budget
# POST /marketdata/subscriptions enforces, and the most the gateway requests.
MARKETDATA_LINES_PER_LOGIN = _positive("MARKETDATA_LINES_PER_LOGIN", env.int("MARKETDATA_LINES_PER_LOGIN", default=100))
# Ticks kept on the ev.l1 stream (approximate trimming).
MARKETDATA_L1_MAXLEN = _positive("MARKETDATA_L1_MAXLEN", env.int("MARKETDATA_L1_MAXLEN", default=100_000))

# Django hands LOGGING to oms.logging.configure, which sets up structlog's JSON lines with the
# request's trace id in every line.
LOGGING_CONFIG = "oms.logging.configure"
LOGGING = {"level": LOG_LEVEL, "json": LOG_JSON}

if SENTRY_DSN:
    import sentry_sdk

    sentry_sdk.init(dsn=SENTRY_DSN, environment=ENVIRONMENT, send_default_pii=False, traces_sample_rate=0.0)

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if ENVIRONMENT == "production":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31536000
