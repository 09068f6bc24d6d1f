"""Settings shared by every environment; values come from the environment (django-environ)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

# Django-free modules only (settings load before the apps): task names and the broker URL.
from syncer.ops import CLOUDWATCH_PUBLISH_TASK_NAME
from syncer.outbox import SWEEP_TASK_NAME
from syncer.pipeline import PRUNE_TASK_NAME
from syncer.pipeline.stream.contract import APPLY_TASK_NAME, broker_url
from syncer.reconcile import COMPARE_TASK_NAME, REPAIR_TASK_NAME, SCAN_TASK_NAME

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local .env is a convenience for developers; production reads the real environment.
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"))

DEBUG = env.bool("DEBUG", default=False)
# SECRET_KEY: required in production (no default there); local and test settings give one.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "config.apps.BacksyncAdminConfig",  # django.contrib.admin with the project site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "syncer",
    "chefs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default="mysql://root@127.0.0.1:3306/backsync")}
DATABASES["default"].setdefault("OPTIONS", {})
DATABASES["default"]["OPTIONS"].update(
    {
        "charset": "utf8mb4",
        # Strict mode: an over-long value is an error, never a silent truncation.
        "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
    }
)
DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# The MySQL 8.0 dialect guard (config/dbguard): on in the test suite and every process it
# starts, so MariaDB-only SQL fails here before it reaches Aurora MySQL 3 in production.
SQL_GUARD = env("BACKSYNC_SQL_GUARD", default="")
if SQL_GUARD == "mysql8":
    DATABASES["default"]["ENGINE"] = "config.dbguard"
elif SQL_GUARD not in ("", "off"):
    raise ImproperlyConfigured(f"BACKSYNC_SQL_GUARD must be 'mysql8' or 'off', not {SQL_GUARD!r}")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Throttle and login-lockout counters. The default local-memory cache counts per process
# (gunicorn runs 3 per web task); a shared cache (CACHE_URL, e.g. redis:// or
# dbcache://TABLE after `manage.py createcachetable`) makes the limits cluster-wide.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

# Password login (admin): locked per user name after this many failures in a row, until
# LOGIN_LOCKOUT_SECONDS have passed since the last one (config/login_lockout.py).
AUTHENTICATION_BACKENDS = ["config.login_lockout.LockoutModelBackend"]
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "chefs.api.pagination.LinkHeaderPagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    # 429 with Retry-After past these (DRF rate syntax: N/second|minute|hour|day).
    "DEFAULT_THROTTLE_CLASSES": [
        "config.throttling.AnonThrottle",
        "config.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("API_THROTTLE_ANON", default="60/minute"),
        "user": env("API_THROTTLE_USER", default="1200/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "backsync API",
    "DESCRIPTION": "Legacy (MySQL) and new (DynamoDB) chef APIs, kept in sync.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Served from drf-spectacular-sidecar so the docs work with no network access.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # 401 / 403 / 429 on every operation (authentication, roles, throttles).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.add_common_responses",
    ],
}

# --- AWS (DynamoDB, Streams, SQS, S3) ---------------------------------------------------
AWS_REGION = env("AWS_REGION", default="us-east-1")
# Set for a local endpoint (moto); empty means the real AWS endpoints.
AWS_ENDPOINT_URL = env("AWS_ENDPOINT_URL", default="") or None
AWS_ACCOUNT_ID = env("AWS_ACCOUNT_ID", default="123456789012")
DYNAMO_CHEF_TABLE = env("DYNAMO_CHEF_TABLE", default="chef")
DYNAMO_CONNECT_TIMEOUT = env.float("DYNAMO_CONNECT_TIMEOUT", default=2.0)
DYNAMO_READ_TIMEOUT = env.float("DYNAMO_READ_TIMEOUT", default=5.0)
DYNAMO_MAX_RETRIES = env.int("DYNAMO_MAX_RETRIES", default=2)
# Reconcile's Scan pages (1 MB each) are a batch job's reads: a longer read timeout.
DYNAMO_SCAN_READ_TIMEOUT = env.float("DYNAMO_SCAN_READ_TIMEOUT", default=60.0)
# reconcile's settle time when --settle is not given; unset: from the measured sync lag.
RECONCILE_SETTLE_SECONDS = env.float("RECONCILE_SETTLE_SECONDS", default=None)

SYNC_QUEUE_NAME = env("SYNC_QUEUE_NAME", default="backsync-changes.fifo")
SYNC_DLQ_NAME = env("SYNC_DLQ_NAME", default="backsync-changes-dlq.fifo")
OUTBOX_QUEUE_NAME = env("OUTBOX_QUEUE_NAME", default="backsync-outbox")
OUTBOX_DLQ_NAME = env("OUTBOX_DLQ_NAME", default="backsync-outbox-dlq")
# Reconcile's tasks (distributed scan and compare, the admin's repair): long runs that must
# not hold up the outbox's publishing.
RECONCILE_QUEUE_NAME = env("RECONCILE_QUEUE_NAME", default="backsync-reconcile")
RECONCILE_DLQ_NAME = env("RECONCILE_DLQ_NAME", default="backsync-reconcile-dlq")
SQS_MAX_RECEIVE_COUNT = env.int("SQS_MAX_RECEIVE_COUNT", default=10)


def _queue_url(name: str) -> str:
    # Locally the URL follows moto's shape; in AWS the URLs must be given explicitly.
    base = AWS_ENDPOINT_URL or f"https://sqs.{AWS_REGION}.amazonaws.com"
    return f"{base.rstrip('/')}/{AWS_ACCOUNT_ID}/{name}"


SYNC_QUEUE_URL = env("SYNC_QUEUE_URL", default="") or _queue_url(SYNC_QUEUE_NAME)
OUTBOX_QUEUE_URL = env("OUTBOX_QUEUE_URL", default="") or _queue_url(OUTBOX_QUEUE_NAME)
RECONCILE_QUEUE_URL = env("RECONCILE_QUEUE_URL", default="") or _queue_url(RECONCILE_QUEUE_NAME)
# The DLQs' URLs (the stack sets them); unset, the dashboard looks them up by name, which
# needs sqs:GetQueueUrl.
SYNC_DLQ_URL = env("SYNC_DLQ_URL", default="") or None
OUTBOX_DLQ_URL = env("OUTBOX_DLQ_URL", default="") or None
RECONCILE_DLQ_URL = env("RECONCILE_DLQ_URL", default="") or None

# --- Celery (broker: SQS through kombu's SQS transport) ---------------------------------
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
CELERY_RETRY_BACKOFF_MAX = env.int("CELERY_RETRY_BACKOFF_MAX", default=300)
# Longer than any task plus its longest retry delay, so SQS never redelivers a message
# that a worker is still working on.
SQS_VISIBILITY_TIMEOUT = env.int(
    "SQS_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + CELERY_RETRY_BACKOFF_MAX + 60
)


# Built as the stream handler builds its own (the change contract, Django-free).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="") or broker_url(
    endpoint_url=AWS_ENDPOINT_URL,
    access_key_id=env("AWS_ACCESS_KEY_ID", default="") or None,
    secret_access_key=env("AWS_SECRET_ACCESS_KEY", default="") or None,
)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "region": AWS_REGION,
    "is_secure": not (AWS_ENDPOINT_URL or "").startswith("http://"),
    "visibility_timeout": SQS_VISIBILITY_TIMEOUT,
    # moto's FIFO long poll skips, for its whole wait, every group that was in flight when
    # the poll began (real SQS returns as soon as a message arrives): poll short on moto.
    "wait_time_seconds": env.int("SQS_WAIT_TIME_SECONDS", default=0 if AWS_ENDPOINT_URL else 10),
    "polling_interval": env.float("SQS_POLLING_INTERVAL", default=0.05 if AWS_ENDPOINT_URL else 1),
    "predefined_queues": {
        SYNC_QUEUE_NAME: {"url": SYNC_QUEUE_URL},
        OUTBOX_QUEUE_NAME: {"url": OUTBOX_QUEUE_URL},
        RECONCILE_QUEUE_NAME: {"url": RECONCILE_QUEUE_URL},
    },
}
CELERY_TASK_DEFAULT_QUEUE = OUTBOX_QUEUE_NAME
CELERY_TASK_ROUTES = {
    APPLY_TASK_NAME: {"queue": SYNC_QUEUE_NAME},
    **{
        name: {"queue": RECONCILE_QUEUE_NAME}
        for name in (SCAN_TASK_NAME, COMPARE_TASK_NAME, REPAIR_TASK_NAME)
    },
}
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Sync tuning ------------------------------------------------------------------------
SYNC_MESSAGE_GROUPS = env.int("SYNC_MESSAGE_GROUPS", default=4)
SYNC_CHANGELOG_RETENTION_HOURS = env.int("SYNC_CHANGELOG_RETENTION_HOURS", default=48)
OUTBOX_MAX_ATTEMPTS = env.int("OUTBOX_MAX_ATTEMPTS", default=8)
OUTBOX_SWEEP_SECONDS = env.int("OUTBOX_SWEEP_SECONDS", default=30)
# A pending entry not published this long after it was (re)enqueued is taken as lost and
# enqueued again by the sweep; at most once per period, so a busy queue is not flooded.
OUTBOX_LOST_AFTER_SECONDS = env.int("OUTBOX_LOST_AFTER_SECONDS", default=120)
# CloudWatch metrics of the sync (syncer/ops/cloudwatch.py): the AWS stack turns them on.
CLOUDWATCH_METRICS = env.bool("CLOUDWATCH_METRICS", default=False)
CLOUDWATCH_NAMESPACE = env("CLOUDWATCH_NAMESPACE", default="Backsync")
CLOUDWATCH_METRICS_SECONDS = env.int("CLOUDWATCH_METRICS_SECONDS", default=60)
CELERY_BEAT_SCHEDULE = {
    # Republishes outbox entries whose task was lost, and retries failed ones after backoff.
    "outbox-sweep": {"task": SWEEP_TASK_NAME, "schedule": float(OUTBOX_SWEEP_SECONDS)},
    # Keeps the applied-change log to SYNC_CHANGELOG_RETENTION_HOURS.
    "changelog-prune": {"task": PRUNE_TASK_NAME, "schedule": 3600.0},
    # The dashboard's figures to CloudWatch for the alarms (a no-op unless CLOUDWATCH_METRICS).
    "cloudwatch-publish": {
        "task": CLOUDWATCH_PUBLISH_TASK_NAME,
        "schedule": float(CLOUDWATCH_METRICS_SECONDS),
        # Behind a stopped worker, old sends would only publish the same current figures.
        "options": {"expires": float(CLOUDWATCH_METRICS_SECONDS)},
    },
}

# --- Operations endpoints -------------------------------------------------------------
# Bearer token for /metrics and /healthz details (staff sessions also get them). Empty:
# staff only. The stack generates it in Secrets Manager.
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# --- Logging --------------------------------------------------------------------------
LOG_LEVEL = env("DJANGO_LOG_LEVEL", default="INFO")
# One JSON object per line (config.logging.JsonFormatter; sync lines carry key, sequence
# and event_id). The production stack sets it; plain text otherwise.
LOG_JSON = env.bool("LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "config.logging.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "filters": {"redact": {"()": "config.logging.RedactCredentialsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"botocore": {"level": "WARNING"}, "pynamodb": {"level": "WARNING"}},
}
