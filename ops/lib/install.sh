# Shared by ops/test and ops/playground (source it): installs what is missing, reuses what is
# there. `install_build_deps` is what `cargo build --release --locked --workspace --all-targets`
# needs; `install_test_deps` adds what the tests start (PostgreSQL, the benchmark peers,
# promtool, cargo-nextest). Both need apt-get (Debian) for what is missing.

say() { printf '==> %s\n' "$*" >&2; }
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_build_deps() {
    # RocksDB's bindings are generated with libclang.
    if ! ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1; then
        say "installing libclang-dev (needed to build RocksDB)"
        apt_install libclang-dev
    fi
    # etcd-client's build compiles etcd's protos with protoc.
    if ! command -v protoc >/dev/null 2>&1; then
        say "installing protobuf-compiler (protoc, for etcd-client's build)"
        apt_install protobuf-compiler
    fi
}

# The one build command: ops/test, ops/playground and the benchmark scripts all use it, so
# RocksDB and the workspace are compiled once, with one feature set.
build_release() {
    cargo build --release --locked --workspace --all-targets
}

install_test_deps() {
    # The benchmark peers, which ops/tests/bench.rs starts on free ports.
    if ! command -v etcd >/dev/null 2>&1; then
        say "installing etcd-server (a benchmark peer)"
        apt_install etcd-server
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        say "installing redis-server (a benchmark peer)"
        apt_install redis-server
    fi
    # promtool checks every server's /metrics (ops/tests/cli.rs); Debian's prometheus package has
    # it (the Prometheus server it also installs is not started).
    if ! command -v promtool >/dev/null 2>&1; then
        say "installing prometheus (promtool, to check the servers' /metrics)"
        apt_install --no-install-recommends prometheus
    fi

    # PostgreSQL on 127.0.0.1:5432 with trust auth, for the store conformance and real-process tests.
    pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
    if ! command -v pg_isready >/dev/null 2>&1 || ! pg_ready; then
        if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
            say "installing PostgreSQL"
            apt_install postgresql
        fi
        local version hba
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        hba=/etc/postgresql/$version/main/pg_hba.conf
        if ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
            # Tests connect as postgres over TCP without a password, as on the development machines.
            sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        fi
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
        pg_ready || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
    fi

    if ! cargo nextest --version >/dev/null 2>&1; then
        say "installing cargo-nextest"
        cargo install --locked cargo-nextest
    fi
}
