# One image for every cachetasks process; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CACHETASKS_DATA_DIR=/app/data

WORKDIR /app
COPY requirements.txt requirements-extras.txt ./
RUN pip install -r requirements.txt
# Every storage backend of RAGFlow (extras azure, gcs, opendal, crypto); `--build-arg EXTRAS=` leaves them out.
ARG EXTRAS=requirements-extras.txt
RUN if [ -n "$EXTRAS" ]; then pip install -r "$EXTRAS"; fi

# The code belongs to root and is read-only for the service; only the data directory
# (CACHETASKS_DATA_DIR) is writable.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home app \
    && mkdir /app/data \
    && chown app:app /app/data
COPY . .

USER app
CMD ["celery", "-A", "cachetasks", "worker", "-Q", "cachetasks.files", "-n", "files@%h", "-l", "INFO", "--without-mingle", "--without-gossip"]
