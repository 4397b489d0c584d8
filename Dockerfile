FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY worker worker
COPY tasks tasks
COPY schemas schemas
COPY clients clients
COPY errors errors
COPY sandbox sandbox
COPY contract contract
RUN pip install --no-cache-dir . && useradd --system --uid 10001 app
USER app
CMD ["moment-sb1", "worker"]
