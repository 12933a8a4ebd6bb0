# pgscale container: build in a Rust image, run on slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
COPY --from=build /src/target/release/pgscale /usr/local/bin/pgscale
COPY config/shards.toml /etc/pgscale/shards.toml
EXPOSE 6432
USER nobody
ENTRYPOINT ["pgscale"]
CMD ["serve", "--config", "/etc/pgscale/shards.toml"]
