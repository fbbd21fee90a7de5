# rca-poller as a container: non-root, state on a volume, config by mount and environment.
#   docker build -t rca-poller .
#   docker run -d -v rca-state:/var/lib/rca-poller -v $PWD/config.yaml:/etc/rca-poller/config.yaml:ro \
#              -e LA_WORKSPACE_ID -e AZURE_CLIENT_ID -e AZURE_TENANT_ID -e AZURE_CLIENT_SECRET rca-poller
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RCA_POLLER_CONFIG=/etc/rca-poller/config.yaml \
    RCA_POLLER_STATE=/var/lib/rca-poller/rca-poller.db

WORKDIR /opt/rca-poller
COPY pyproject.toml README.md ./
COPY poller ./poller
RUN pip install --no-cache-dir . \
 && groupadd --system --gid 10001 rca-poller \
 && useradd --system --uid 10001 --gid rca-poller --home-dir /var/lib/rca-poller --shell /usr/sbin/nologin rca-poller \
 && mkdir -p /var/lib/rca-poller /etc/rca-poller \
 && cp poller/config.example.yaml /etc/rca-poller/config.yaml \
 && chown -R rca-poller:rca-poller /var/lib/rca-poller

USER 10001:10001
WORKDIR /var/lib/rca-poller
VOLUME ["/var/lib/rca-poller"]

# Healthy while every enabled source has ticked successfully within metrics.stale_after (`rca-poller status --check`).
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 CMD ["rca-poller", "status", "--check"]

# Prometheus /metrics and /healthz, only when the config sets metrics.port: 9464 and metrics.host: 0.0.0.0.
EXPOSE 9464

STOPSIGNAL SIGTERM
ENTRYPOINT ["rca-poller"]
# A stop waits up to 8 s for a running tick, inside `docker stop`'s 10 s; raise both together (--stop-timeout).
CMD ["run", "--shutdown-timeout", "8"]
