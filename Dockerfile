# Chokepoint gateway image: `docker build -t chokepoint .` at the repository root.
# Not built in this repository's CI (no container runtime there); the binary it packages is.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p chokepoint \
 && strip target/release/chokepoint

FROM debian:bookworm-slim
# nft programs the capture rules; iproute2 (`ip`) installs the policy routing TPROXY needs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/chokepoint /usr/local/bin/chokepoint
ENTRYPOINT ["/usr/local/bin/chokepoint"]
CMD ["run", "--config", "/etc/chokepoint/gateway.yaml"]
