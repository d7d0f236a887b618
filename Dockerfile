# The relay image: `docker run vertector-relay` runs `vertector-relay run`; the same image runs
# `vertector-relay migrate`, `vertector-relay streams apply` and the example notes consumer
# (`python -m examples.notes_consumer`, compose's `notes-consumer`).
#
# BASE_IMAGE: any Debian-like image with python3 and its venv module. PIP_OPTIONS: extra pip
# options, e.g. `--no-index --find-links=/src/wheelhouse` to build offline from wheels placed
# in the build context (what `make deploy-check` does).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_OPTIONS=""
WORKDIR /src
COPY . .
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir ${PIP_OPTIONS} --wheel-dir /wheels .

FROM ${BASE_IMAGE}
COPY --from=build /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
COPY examples /app/examples
WORKDIR /app
# A numeric non-root user, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV PATH=/opt/venv/bin:$PATH \
    RELAY_LOG_FORMAT=json \
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
