# Shared by ops/test and ops/playground (source it): installs what is missing, reuses what is
# there. `install_build_deps` is what `cargo build --release --locked --workspace --all-targets`
# needs; `install_test_deps` adds what the tests start (PostgreSQL, the benchmark peers,
# promtool, the Python client test's virtualenv, cargo-nextest). Both need apt-get (Debian) for
# what is missing.

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

    install_python_test_deps

    if ! cargo nextest --version >/dev/null 2>&1; then
        say "installing cargo-nextest"
        cargo install --locked cargo-nextest
    fi
}

# The Python the client test in a second language runs with (ops/tests/python_client.rs runs
# ops/tests/python/test_client.py): a virtualenv with grpcio and grpcio-tools, which generates
# the stubs from cluster/proto/proto/tandem.proto at run time. The test finds it at the same
# path (TANDEM_PY_VENV, default ~/.cache/tandem/pyvenv). Pinned so every run uses the same
# client library and code generator; raise the versions together (grpcio-tools names the
# protobuf versions it accepts).
PY_GRPCIO_VERSION=1.85.4
PY_PROTOBUF_VERSION=7.36.2
install_python_test_deps() {
    local venv=${TANDEM_PY_VENV:-$HOME/.cache/tandem/pyvenv}
    if ! command -v python3 >/dev/null 2>&1; then
        say "installing python3 (the Python client test)"
        apt_install python3 python3-venv
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating the Python test virtualenv in $venv"
        mkdir -p "$(dirname "$venv")"
        if ! python3 -m venv "$venv" 2>/dev/null; then
            # Debian splits ensurepip into python3-venv.
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    local want="grpcio==$PY_GRPCIO_VERSION grpcio-tools==$PY_GRPCIO_VERSION protobuf==$PY_PROTOBUF_VERSION"
    local check="import grpc, grpc_tools, sys; from importlib.metadata import version
sys.exit([version(p) for p in ('grpcio', 'grpcio-tools', 'protobuf')] != ['$PY_GRPCIO_VERSION', '$PY_GRPCIO_VERSION', '$PY_PROTOBUF_VERSION'])"
    if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
        say "installing $want into $venv"
        # shellcheck disable=SC2086 # $want is three requirement words
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want
    fi
}
