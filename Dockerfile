# One image for the API and the workers; the command picks the role.
FROM python:3.11.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHON=python \
    API_HOST=0.0.0.0 \
    PROMETHEUS_HOST=0.0.0.0 \
    PROMETHEUS_DB=/tmp/dramatiq-prometheus \
    CSV_PATH=/data/data.csv \
    API_KEYS_FILE=/keys/api-keys.json

RUN groupadd --system app && useradd --system --gid app --home-dir /srv app \
    && mkdir -p /data /keys && chown app:app /data /keys && chmod 700 /keys

WORKDIR /srv
# Requirements first: the dependency layer is rebuilt only when they change.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY config.py logs.py entrypoint.sh entrypoint_api.sh entrypoint_dramatiq.sh ./
COPY app ./app
COPY actors ./actors
COPY pipeline ./pipeline

USER app
# /keys: the API keys file (hashes only), on a volume of its own that only the API mounts.
VOLUME ["/data", "/keys"]
EXPOSE 8000 9191
CMD ["./entrypoint.sh"]
