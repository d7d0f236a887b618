# The relay image: `docker run vertector-relay` runs `vertector-relay run`.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY outbox_client ./outbox_client
COPY relay ./relay
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin relay
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY alembic.ini /app/alembic.ini
WORKDIR /app
USER relay
ENV RELAY_LOG_FORMAT=json \
    RELAY_METRICS_HOST=0.0.0.0 \
    RELAY_METRICS_PORT=9464 \
    PYTHONUNBUFFERED=1
EXPOSE 9464
# Ready = connected to PostgreSQL and NATS and making progress; a NATS outage shows as
# unhealthy here but /healthz (liveness) stays up, so nothing restarts in a loop.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["vertector-relay", "check"]
ENTRYPOINT ["vertector-relay"]
CMD ["run"]
