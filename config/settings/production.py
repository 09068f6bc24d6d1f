"""Production (AWS): everything that differs between deployments comes from the environment.

Required (startup stops with ImproperlyConfigured naming the variable when one is missing):
SECRET_KEY, DJANGO_ALLOWED_HOSTS, AWS_STORAGE_BUCKET_NAME, SYNC_QUEUE_URL, OUTBOX_QUEUE_URL,
RECONCILE_QUEUE_URL, and the database as DATABASE_SECRET (the Secrets Manager JSON that ECS
injects) or DATABASE_URL. deploy/README.md lists every variable.
"""

import json
import logging
import urllib.request

from django.core.exceptions import ImproperlyConfigured

from . import base
from .base import *  # noqa: F403
from .base import (
    AWS_ENDPOINT_URL,
    AWS_REGION,
    OUTBOX_QUEUE_NAME,
    RECONCILE_QUEUE_NAME,
    SYNC_QUEUE_NAME,
    env,
)

logger = logging.getLogger(__name__)


def _required_list(name: str) -> list[str]:
    values = [v for v in env.list(name) if v]  # env.list raises when the variable is unset
    if not values:
        raise ImproperlyConfigured(f"Set the {name} environment variable (it is empty)")
    return values


def _ecs_task_ips() -> list[str]:
    """The task's own IPs on ECS: the load balancer's health checks use them as Host."""
    uri = env("ECS_CONTAINER_METADATA_URI_V4", default="")
    if not uri:
        return []
    try:
        with urllib.request.urlopen(uri, timeout=2) as response:
            meta = json.load(response)
    except (OSError, ValueError) as exc:
        logger.warning("ECS metadata unavailable (%s); health checks may get HTTP 400", exc)
        return []
    return [ip for net in meta.get("Networks", []) for ip in net.get("IPv4Addresses", [])]


def _database() -> dict:
    """DATABASES["default"]: from DATABASE_SECRET if set, else DATABASE_URL (required)."""
    default = base.DATABASES["default"]
    keep = {k: default[k] for k in ("OPTIONS", "TEST", "CONN_MAX_AGE", "CONN_HEALTH_CHECKS")}
    raw = env("DATABASE_SECRET", default="")
    if raw:
        try:
            secret = json.loads(raw)
            return {
                "ENGINE": "django.db.backends.mysql",
                "HOST": secret["host"],
                "PORT": str(secret.get("port", 3306)),
                "NAME": secret.get("dbname") or env("DATABASE_NAME", default="chefdb"),
                "USER": secret["username"],
                "PASSWORD": secret["password"],
                **keep,
            }
        except (ValueError, TypeError, KeyError) as exc:
            raise ImproperlyConfigured(
                "DATABASE_SECRET must be the JSON of an RDS secret "
                f"(host, port, username, password, dbname): {exc!r}"
            ) from None
    if not env("DATABASE_URL", default=""):
        raise ImproperlyConfigured("Set the DATABASE_URL environment variable (or DATABASE_SECRET)")
    return {**env.db("DATABASE_URL"), **keep}


# Never from the environment: a debug page in production leaks settings.
DEBUG = False
SECRET_KEY = env("SECRET_KEY")
ALLOWED_HOSTS = _required_list("DJANGO_ALLOWED_HOSTS") + _ecs_task_ips()
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
DATABASES = {"default": _database()}

# --- HTTPS (TLS ends at the load balancer, which sets X-Forwarded-Proto) ----------------
HTTPS = env.bool("DJANGO_HTTPS", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = HTTPS
# The load balancer's health check speaks plain HTTP to the task: it must get the answer,
# not a redirect to HTTPS.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Static files on S3 (django-storages) ------------------------------------------------
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME")
# A CloudFront domain in front of the private bucket (the CDK stack sets it); without
# one, URLs point at the bucket itself.
AWS_S3_CUSTOM_DOMAIN = env("AWS_S3_CUSTOM_DOMAIN", default="") or None
STATIC_LOCATION = env("STATIC_LOCATION", default="static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "region_name": env("AWS_S3_REGION_NAME", default=AWS_REGION),
            # Locally (tests) the moto server; in AWS empty, i.e. the real endpoint.
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default="") or AWS_ENDPOINT_URL,
            "custom_domain": AWS_S3_CUSTOM_DOMAIN,
            "location": STATIC_LOCATION,
            # Static files are public through CloudFront: plain URLs, no signatures that
            # expire with the task's credentials.
            "querystring_auth": env.bool("AWS_QUERYSTRING_AUTH", default=False),
            "file_overwrite": True,
            "object_parameters": {"CacheControl": "max-age=86400"},
        },
    },
}
if AWS_S3_CUSTOM_DOMAIN:
    STATIC_URL = f"https://{AWS_S3_CUSTOM_DOMAIN}/{STATIC_LOCATION}/"

# --- Queues: real URLs are required in AWS (the base defaults are local shapes) ---------
SYNC_QUEUE_URL = env("SYNC_QUEUE_URL")
OUTBOX_QUEUE_URL = env("OUTBOX_QUEUE_URL")
RECONCILE_QUEUE_URL = env("RECONCILE_QUEUE_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **base.CELERY_BROKER_TRANSPORT_OPTIONS,
    "predefined_queues": {
        SYNC_QUEUE_NAME: {"url": SYNC_QUEUE_URL},
        OUTBOX_QUEUE_NAME: {"url": OUTBOX_QUEUE_URL},
        RECONCILE_QUEUE_NAME: {"url": RECONCILE_QUEUE_URL},
    },
}


# Logging: LOG_JSON (base settings) switches to JSON lines (config.logging.JsonFormatter).
