# drkit in a container: the CLI and daemon with restic and the OpenSSH tools it drives.
# restic >= 0.17 comes from Debian trixie (bookworm ships 0.14); it is a static binary.
FROM debian:trixie-slim AS restic
RUN apt-get update && apt-get install -y --no-install-recommends restic \
    && rm -rf /var/lib/apt/lists/*

FROM debian:12-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
       openssh-server openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -m 755 /run/sshd /var/lib/drkit
COPY --from=restic /usr/bin/restic /usr/local/bin/restic
WORKDIR /opt/drkit
COPY pyproject.toml README.md ./
COPY drkit ./drkit
COPY policies ./policies
RUN python3 -m venv /opt/drkit/.venv \
    && /opt/drkit/.venv/bin/pip install --no-cache-dir -e /opt/drkit
ENV PATH=/opt/drkit/.venv/bin:$PATH \
    DRKIT_RESTIC=/usr/local/bin/restic \
    DRKIT_CONFIG=/etc/drkit/drkit.yaml
VOLUME ["/etc/drkit", "/var/lib/drkit"]
ENTRYPOINT ["drkit"]
CMD ["--help"]
