# drkit in a container: the daemon by default (any drkit command can be given instead).
#   docker build -t drkit .
# Mount the node's filesystem read-only at /node (drkit.yaml: `root: /node`), the config at
# /etc/drkit, and a volume for /var/lib/drkit; pass S3 credentials as AWS_* variables.
# restic >= 0.17 comes from Debian trixie (bookworm ships 0.14); it is a static binary.
FROM debian:trixie-slim AS restic
RUN apt-get update && apt-get install -y --no-install-recommends restic \
    && rm -rf /var/lib/apt/lists/*

FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
       openssh-client openssh-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 755 /run/sshd /var/lib/drkit
COPY --from=restic /usr/bin/restic /usr/local/bin/restic
WORKDIR /opt/drkit
COPY pyproject.toml README.md ./
COPY drkit ./drkit
COPY policies ./policies
RUN python3 -m venv /opt/drkit/.venv \
    && /opt/drkit/.venv/bin/pip install --no-cache-dir /opt/drkit
ENV PATH=/opt/drkit/.venv/bin:$PATH \
    DRKIT_RESTIC=/usr/local/bin/restic \
    DRKIT_CONFIG=/etc/drkit/drkit.yaml \
    AWS_EC2_METADATA_DISABLED=true
VOLUME ["/etc/drkit", "/var/lib/drkit"]
EXPOSE 9109
# inside the container's own network namespace; publish the port to reach it
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s \
    CMD python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9109/healthz', timeout=5)" || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["drkit"]
CMD ["daemon", "--metrics", "0.0.0.0:9109"]
