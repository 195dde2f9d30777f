# The connector image: the connector and its own dependencies only (no Pulumi, no moto, no test tools).
# Build: docker build -t eks-access-connector:0.1.0 .
# Pin the base image by digest in your pipeline: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The console's session player comes from npm, pinned by its lock file (what `make console-player` does).
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS player
WORKDIR /player
COPY connector/console/player/package.json connector/console/player/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

FROM ${PYTHON_IMAGE} AS build
WORKDIR /build
COPY requirements-connector.txt constraints.txt ./
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
      -r requirements-connector.txt -c constraints.txt
COPY connector/ /app/connector/
COPY --from=player /player/node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
     /player/node_modules/asciinema-player/dist/bundle/asciinema-player.css \
     /app/connector/console/static/player/
# The root filesystem is read-only at run time, so compile the bytecode now.
RUN /opt/venv/bin/python -m compileall -q /app/connector /opt/venv

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin connector
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# HOME=/tmp: the only writable place besides the state dir when the root filesystem is read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /app
USER 10001:10001
# 8443: the connector (HTTPS); 8442: its Prometheus metrics (plain HTTP: keep it off public networks).
EXPOSE 8443 8442
ENTRYPOINT ["python", "-m", "connector"]
CMD ["serve", "--config", "/etc/connector/config.yaml"]
