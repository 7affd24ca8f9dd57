# Both binaries in one image (docs/kubernetes.md): `agent-secret-store` (the control plane and
# CLI, the entrypoint) and `agent-secret-proxy` (the sidecar; the injector sets it as the
# command). Built with the toolchain of rust-toolchain/Cargo.toml's rust-version, run on
# distroless as the `nonroot` user (65532), with no shell or package manager in the image.
#
#   docker build --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     -t agent-secret-store:0.1.0 .
#
# The binaries are built with tools/release-env, the settings tools/reproducible-build checks
# (docs/supply-chain.md): the same commit, toolchain and base image give the same binaries.
#
# No HEALTHCHECK: the orchestrator probes (/readyz, /healthz over HTTPS; the sidecar's admin
# /healthz), and distroless has no client to run one with.
# checkov:skip=CKV_DOCKER_2:Kubernetes probes replace HEALTHCHECK, see above

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The commit's time (.dockerignore keeps .git out of the context); release-env uses 0 without it.
ARG SOURCE_DATE_EPOCH
RUN . tools/release-env \
    && cargo build --release --locked \
        -p agent-secret-store --bin agent-secret-store \
        -p agent-secret-proxy --bin agent-secret-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/agent-secret-store /usr/local/bin/agent-secret-store
COPY --from=build /src/target/release/agent-secret-proxy /usr/local/bin/agent-secret-proxy
COPY --from=build /src/config/control-plane.toml /etc/agent-secret-store/control-plane.toml
USER 65532:65532
EXPOSE 8200
ENTRYPOINT ["/usr/local/bin/agent-secret-store"]
CMD ["serve", "--config", "/etc/agent-secret-store/control-plane.toml"]
