# syntax=docker/dockerfile:1
# Cascade: multi-stage build. The runtime stage installs exactly docker/runtime-packages.txt.

# --- build the binary (dependencies cached in their own layer) ---
FROM rust:1.95-bookworm AS builder
# Versions follow Debian bookworm (security updates included); exact pins would break the build
# whenever the mirror moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
    libgstreamer-plugins-bad1.0-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
COPY pipelines ./pipelines
COPY migrations ./migrations
RUN touch src/main.rs && cargo build --release --locked

# --- player libraries from the lock file ---
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY web/ ./

# --- runtime ---
FROM debian:bookworm-slim
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY docker/runtime-packages.txt /tmp/runtime-packages.txt
# The same list docker/chroot-proof.sh installs; versions follow bookworm (see above).
# hadolint ignore=DL3008
RUN apt-get update \
 && grep -v '^#' /tmp/runtime-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home cascade \
 && mkdir -p /data /app \
 && chown cascade:cascade /data
COPY --from=builder /src/target/release/cascade /usr/local/bin/cascade
COPY --from=web /web /app/web
COPY pipelines /app/pipelines
COPY docker/entrypoint.sh /usr/local/bin/entrypoint.sh
ENV CASCADE_BIND=0.0.0.0:8000 \
    CASCADE_DATA_DIR=/data \
    CASCADE_WEB_DIR=/app/web \
    CASCADE_LADDER=/app/pipelines/ladder.toml \
    CASCADE_LOG=info
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
# 1935: RTMP ingest for live streams (CASCADE_RTMP_BIND); 8890/udp: SRT (CASCADE_SRT_BIND).
EXPOSE 8000 1935 8890/udp
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/entrypoint.sh"]
CMD ["serve"]
