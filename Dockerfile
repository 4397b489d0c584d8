# Images of moment-sb1, all from one file:
#   app      (the default) the product only: worker, beat, the webhook receiver, the CLI
#   flower   the product plus Flower, for the monitor service
#   sandbox  the product plus the local stand-ins for Moment and SpareBank 1 (the sandbox profile)
# Every dependency comes from the lock files, checked against their hashes.
FROM python:3.11.11-slim-bookworm AS base
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --uid 10001 app
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY worker worker
COPY tasks tasks
COPY schemas schemas
COPY clients clients
COPY errors errors

FROM base AS flower
COPY requirements-flower.lock ./
RUN pip install --require-hashes -r requirements-flower.lock && pip install --no-deps .
USER app
EXPOSE 5555
CMD ["celery", "-A", "worker.app", "flower", "--port=5555", "--persistent=False"]

FROM base AS sandbox
COPY requirements-dev.lock ./
COPY sandbox sandbox
COPY contract contract
RUN pip install --require-hashes -r requirements-dev.lock && pip install --no-deps .
USER app
CMD ["moment-sb1-sandbox", "--host", "0.0.0.0"]

FROM base AS app
RUN pip install --no-deps . && python -c "import importlib.util as u, sys; sys.exit(bool(u.find_spec('sandbox')))"
USER app
CMD ["moment-sb1", "worker"]
