# One image for every backsync process in AWS: the web app (default command, gunicorn),
# the Celery worker, beat, the release task (migrate, collectstatic) and the ops task
# override the command. Fargate runs x86: build with --platform linux/amd64 (the CDK asset
# does; so must CI on an arm64 machine).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    PYTHONPATH=/app

# mysqlclient builds from source against these; the rest of the dependencies are wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends default-libmysqlclient-dev pkg-config gcc \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall
# them; the project itself runs from /app (PYTHONPATH), not from site-packages.
COPY pyproject.toml README.md ./
RUN pip install . && pip uninstall -y backsync
# Everything the app reads at run time (tests/deploy/test_image_contents.py runs the app
# from exactly these COPY lines): code; templates live in the apps (the admin index lists
# the sync dashboard through config.admin).
COPY manage.py ./
COPY config ./config
COPY chefs ./chefs
COPY syncer ./syncer

RUN useradd --system --uid 10001 --home-dir /app backsync
USER backsync

EXPOSE 8000
# Worker: celery -A config worker --loglevel INFO
#   -Q backsync-changes.fifo,backsync-outbox,backsync-reconcile
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--access-logfile", "-", "--forwarded-allow-ips", "*"]
