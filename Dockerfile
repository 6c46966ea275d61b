# One image for the msgkit services (order, inventory, payment, notify, risk, reconcile, rebate)
# and the operator CLI `msgkit` (the deploy step `msgkit topology apply` runs from it).
#
#   docker build --build-arg SERVICE=order -t msgkit/order:dev .
#   docker build --build-arg SERVICE=msgkit -t msgkit/msgkit:dev .   # the CLI: give it a command
#
# The image holds every service's binary; SERVICE (build arg, and environment variable at run time)
# picks the one that runs, so a single image can also be deployed once per service with a different
# SERVICE each (see k8s/). docker-compose.yml builds it once per service with `args: SERVICE`.

# ---------------------------------------------------------------------------------------------
# Planner: the workspace's skeleton, i.e. every Cargo.toml, Cargo.lock and an empty stub for
# each target root (src/lib.rs, src/main.rs, src/bin/*.rs). Its content changes only when a
# manifest or the set of targets changes, so the dependency layer below stays cached while
# only sources change, and a new workspace member needs no edit here.
# ---------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS planner
WORKDIR /src
COPY . .
RUN set -eux; \
    mkdir -p /skeleton; \
    cp Cargo.lock /skeleton/; \
    find . -name Cargo.toml -not -path './target/*' -exec cp --parents '{}' /skeleton/ ';'; \
    find . \( -path '*/src/lib.rs' -o -path '*/src/main.rs' -o -path '*/src/bin/*.rs' \) \
        -not -path './target/*' | while read -r root; do \
        mkdir -p "/skeleton/$(dirname "$root")"; \
        case "$root" in \
            */lib.rs) : > "/skeleton/$root" ;; \
            *) echo 'fn main() {}' > "/skeleton/$root" ;; \
        esac; \
    done

# ---------------------------------------------------------------------------------------------
# Builder: dependencies first (from the skeleton, cached), then the real workspace.
# ---------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

COPY --from=planner /skeleton/ ./
RUN cargo build --release --locked --bins

# The real sources (migrations are embedded at compile time by sqlx::migrate!). COPY keeps the
# files' own modification times, which may be older than the stubs' build: touch them so cargo
# rebuilds the workspace's crates instead of keeping the stubs.
COPY . .
RUN set -eux; \
    find . -name '*.rs' -not -path './target/*' -exec touch '{}' +; \
    cargo build --release --locked --bins; \
    mkdir -p /out; \
    for svc in order inventory payment notify risk reconcile rebate msgkit; do \
        cp "target/release/$svc" /out/; \
    done

# ---------------------------------------------------------------------------------------------
# Runtime: Debian slim, CA certificates only, non-root.
# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 msgkit; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin msgkit

COPY --from=builder /out/order /out/inventory /out/payment /out/notify /out/risk /out/reconcile /out/rebate \
    /out/msgkit /usr/local/bin/

# Which binary runs. Declared late so the layers above are shared by the services' builds.
ARG SERVICE=order
ENV SERVICE=${SERVICE} \
    LOG_FORMAT=json \
    RUST_LOG=info

# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# The services stop taking work on SIGTERM, finish what is in flight and exit 0.
STOPSIGNAL SIGTERM

# `exec` replaces the shell: the service is PID 1 and receives SIGTERM itself.
# No HEALTHCHECK: docker-compose.yml and the Kubernetes probes define the checks (/readyz).
CMD ["sh", "-c", "exec /usr/local/bin/\"$SERVICE\""]
