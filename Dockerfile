# syntax=docker/dockerfile:1
#
# Portcullis container image. Build:   docker build -t portcullis .
# Run (see docs/operations.md, "Container image"):
#   docker run -d --name portcullis \
#     -v /srv/portcullis/etc:/etc/portcullis:ro \
#     -v portcullis-data:/var/lib/portcullis \
#     --env-file /srv/portcullis/portcullis.env \
#     -p 443:8443 -p 127.0.0.1:9090:9090 \
#     --read-only --tmpfs /tmp --stop-timeout 30 \
#     portcullis

# --- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
# The C compiler ring and aws-lc-sys need is already in this image.
WORKDIR /src
COPY . .
# Migrations (crates/store/migrations/sqlite) and the landing templates are compiled
# into the binary, so the runtime stage needs only the binary.
# Release builds carry line-level debug information (Cargo.toml [profile.release] debug = 1);
# set --build-arg STRIP_DEBUG=false to keep it in the image (readable backtraces, profiling).
ARG STRIP_DEBUG=true
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
 && install -m 0755 target/release/portcullis /usr/local/bin/portcullis \
 && if [ "$STRIP_DEBUG" = "true" ]; then strip --strip-debug /usr/local/bin/portcullis; fi

# --- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: not read by the binary. Upstream TLS (a pool without tls.ca_file) and the
# calls to Entra ID, Graph and Jamf Pro are verified against the Mozilla roots built into it
# (webpki-roots). The package is kept for tools an operator adds to the image, or to one
# built on it, to debug TLS from inside the container (curl, openssl s_client); this image
# ships none of them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 portcullis \
 && useradd --system --uid 10001 --gid portcullis --home-dir /var/lib/portcullis \
      --no-create-home --shell /usr/sbin/nologin portcullis \
 && install -d -o portcullis -g portcullis -m 0750 /var/lib/portcullis \
 && install -d -m 0755 /etc/portcullis
COPY --from=build /usr/local/bin/portcullis /usr/local/bin/portcullis
# For reference only: mount your own /etc/portcullis/portcullis.toml.
COPY config/portcullis.example.toml /usr/local/share/doc/portcullis/portcullis.example.toml
COPY docs/operations.md /usr/local/share/doc/portcullis/operations.md

USER 10001:10001
WORKDIR /var/lib/portcullis
# The SQLite store (portcullis.db plus its -wal and -shm files): set
# store.sqlite_path = "/var/lib/portcullis/portcullis.db" in the configuration.
VOLUME ["/var/lib/portcullis"]
# Proxy listeners as in the example configuration (plain HTTP, HTTPS) and the admin listener.
# The admin listener defaults to 127.0.0.1:9090, which is unreachable from outside the
# container: set admin.listen = "0.0.0.0:9090" (or PORTCULLIS__ADMIN__LISTEN) to publish it.
EXPOSE 8080 8443 9090

# There is no curl in this image: the health check speaks HTTP through bash's /dev/tcp to
# /readyz on the admin listener (200 once every listener accepts connections and the Entra
# signing keys are loaded). It works whether the admin listener is bound to 127.0.0.1 or
# 0.0.0.0; set HEALTHCHECK_PORT when admin.listen uses another port.
ENV HEALTHCHECK_PORT=9090
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HEALTHCHECK_PORT} && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r status <&3 && [[ $status == 'HTTP/1.1 200'* ]]"]

# SIGTERM (docker stop) drains: in-flight requests get server.grace_period (default 10s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/portcullis", "--log-format", "json", "serve"]
CMD ["--config", "/etc/portcullis/portcullis.toml"]
