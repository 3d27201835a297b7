#!/bin/sh
# One-shot `minio-init` service of docker-compose.yml (image minio/mc): creates the artifact
# bucket DRL_S3_BUCKET on the MinIO server at MINIO_URL and exits 0. Idempotent, so it runs at
# every `docker compose up`. The bucket stays private: artifacts are served through the API.
set -eu

: "${MINIO_URL:?MINIO_URL is not set (expected e.g. http://minio:9000)}"
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is not set (see .env.example)}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is not set (see .env.example)}"
: "${DRL_S3_BUCKET:?DRL_S3_BUCKET is not set (see .env.example)}"

mc alias set drl "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "drl/$DRL_S3_BUCKET"
mc anonymous set none "drl/$DRL_S3_BUCKET"
echo "minio-init: bucket $DRL_S3_BUCKET ready at $MINIO_URL"
