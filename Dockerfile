# hookrelay container image.
#   docker build -t hookrelay .
#   docker run -p 8080:8080 -v hookrelay-data:/data \
#     -v "$PWD/my-config.toml:/etc/hookrelay/hookrelay.toml:ro" \
#     -e ZEGO_CALLBACK_SECRET=... hookrelay

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the
# manifest or lock file changes, not on every source edit.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src config \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY config ./config
# Touch so cargo rebuilds the crate itself over the placeholder.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin hookrelay \
    && strip target/release/hookrelay

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hookrelay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin hookrelay \
    && mkdir -p /data /etc/hookrelay \
    && chown 10001:10001 /data
COPY --from=build /src/target/release/hookrelay /usr/local/bin/hookrelay
COPY config/container.toml /etc/hookrelay/hookrelay.toml
ENV HOOKRELAY_CONFIG=/etc/hookrelay/hookrelay.toml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["hookrelay", "healthcheck"]
ENTRYPOINT ["hookrelay"]
CMD ["serve"]
