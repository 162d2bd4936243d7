"""A Tandem client in Python, written from docs/protocol.md alone.

It is the second-language check of the wire protocol (ops/tests/python_client.rs runs
test_client.py with it against a real site): routing by CRC-64/NVME, routes from the meta
leader, the error kinds and what each means for a retry, and the batch stream.

Needs grpcio and grpcio-tools (ops/lib/install.sh puts them in a virtualenv); the stubs are
generated from tandem.proto at run time, into a temporary directory.
"""

import atexit
import concurrent.futures
import itertools
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import grpc

DEFAULT_PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "cluster", "proto", "proto", "tandem.proto")

# Servers send and take messages of up to 64 MiB (docs/protocol.md, Transport).
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def load_stubs(proto=DEFAULT_PROTO):
    """Generates tandem_pb2 and tandem_pb2_grpc from `proto` and imports them."""
    proto = os.path.abspath(proto)
    out = tempfile.mkdtemp(prefix="tandem-py-stubs-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{os.path.dirname(proto)}", f"--python_out={out}", f"--grpc_python_out={out}", proto]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {proto}: {done.stderr}")
    sys.path.insert(0, out)
    import tandem_pb2
    import tandem_pb2_grpc

    return tandem_pb2, tandem_pb2_grpc


# ---------------------------------------------------------------- placement

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x9A6C9329AC4BC9B5 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc64_nvme(data: bytes) -> int:
    c = 0xFFFFFFFFFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFFFFFFFFF


def partition_of(hash_key: bytes, partition_count: int) -> int:
    return crc64_nvme(hash_key) % partition_count


# ---------------------------------------------------------------- errors

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class TandemError(Exception):
    """A refused or failed call: its tandem-error kind (None: none), gRPC code and metadata."""

    def __init__(self, kind, code, message, metadata=None):
        super().__init__(f"{kind or code.name}: {message}")
        self.kind, self.code, self.message, self.metadata = kind, code, message, dict(metadata or {})


class OutcomeUnknown(TandemError):
    """A non-idempotent write that may or may not have been applied."""


class WrongRoute(TandemError):
    """The route did not fit the table even after a refresh: placement differs from the servers'."""


class GaveUp(TandemError):
    """Retryable errors until the request's deadline."""


def status_of(e: grpc.RpcError):
    """(kind, code, message, metadata) of a failed gRPC call."""
    md = {}
    for pairs in (e.initial_metadata() or (), e.trailing_metadata() or ()):
        for k, v in pairs:
            md[k] = v
    return md.get("tandem-error"), e.code(), e.details() or "", md


def error_of(e: grpc.RpcError) -> TandemError:
    return TandemError(*status_of(e))


def batch_error(err) -> TandemError:
    """The status a BatchError stands for (its metadata is not carried)."""
    return TandemError(err.kind or None, _CODES.get(err.code, grpc.StatusCode.UNKNOWN), err.message)


# ---------------------------------------------------------------- routes


class Route:
    """One table's routes, from QueryConfig."""

    def __init__(self, table_id, partition_count, primaries, secondaries):
        self.table_id, self.partition_count = table_id, partition_count
        self.primaries, self.secondaries = primaries, secondaries


class Stats:
    """What the client did, for tests: attempts, route refreshes, errors by kind."""

    def __init__(self):
        self.attempts = 0
        self.refreshes = 0
        self.errors = {}
        self.leader_hints_followed = 0

    def error(self, name):
        self.errors[name] = self.errors.get(name, 0) + 1


class Client:
    def __init__(self, metas, pb, rpc, rpc_timeout=5.0, request_timeout=20.0):
        if not metas:
            raise ValueError("no meta server address given")
        self.metas, self.pb, self.rpc = list(metas), pb, rpc
        self.rpc_timeout, self.request_timeout = rpc_timeout, request_timeout
        self._meta_current = 0
        self._channels = {}
        self._lock = threading.Lock()
        self.routes = {}
        self.stats = Stats()
        # Test hooks: the placement function, and deadlines to use for the next attempts.
        self.partition_fn = partition_of
        self.next_deadlines = []

    def channel(self, addr):
        with self._lock:
            ch = self._channels.get(addr)
            if ch is None:
                ch = grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)
                self._channels[addr] = ch
            return ch

    def replica(self, addr):
        return self.rpc.ReplicaServiceStub(self.channel(addr))

    def close(self):
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()

    # -------------------------------------------------------- meta

    def meta_call(self, method, request, attempt_timeout=1.0):
        """Calls MetaService.`method` on the leader: follows tandem-leader hints, moves on after
        transport errors, pauses after a round without a leader."""
        deadline = time.monotonic() + max(self.rpc_timeout, attempt_timeout * len(self.metas))
        tried = 0
        last = None
        while True:
            addr = self.metas[self._meta_current]
            stub = self.rpc.MetaServiceStub(self.channel(addr))
            try:
                return getattr(stub, method)(request, timeout=attempt_timeout)
            except grpc.RpcError as e:
                kind, code, _, md = status_of(e)
                transport = kind is None and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
                if kind != "not-leader" and not transport:
                    raise error_of(e) from None
                last = error_of(e)
                hint = md.get("tandem-leader")
                if kind == "not-leader" and hint in self.metas:
                    self._meta_current = self.metas.index(hint)
                    self.stats.leader_hints_followed += 1
                else:
                    self._meta_current = (self._meta_current + 1) % len(self.metas)
            tried += 1
            if time.monotonic() >= deadline:
                raise last
            if tried >= len(self.metas):
                tried = 0
                time.sleep(0.2)

    def route(self, table, refresh=False):
        if not refresh and table in self.routes:
            return self.routes[table]
        resp = self.meta_call("QueryConfig", self.pb.QueryConfigRequest(table=table))
        count = resp.table.partition_count
        primaries, secondaries = [None] * count, [[] for _ in range(count)]
        for config in resp.partitions:
            p = config.gpid.partition
            if p < count:
                primaries[p] = config.primary or None
                secondaries[p] = list(config.secondaries)
        route = Route(resp.table.id, count, primaries, secondaries)
        self.routes[table] = route
        self.stats.refreshes += 1
        return route

    def table(self, name):
        return Table(self, name)


# What each error means for a retry (docs/protocol.md, Errors).
RETRY, RETRY_IF_IDEMPOTENT, REFRESH_ONCE, FAIL = "retry", "retry-if-idempotent", "refresh-once", "fail"


def decide(kind, code, sent):
    """The retry decision for an error of `kind` (None: a transport error of `code`); `sent`:
    whether the request may have left."""
    if kind in ("not-primary", "busy"):
        return RETRY
    if kind == "outcome-unknown":
        return RETRY_IF_IDEMPOTENT
    if kind == "wrong-route":
        return REFRESH_ONCE
    if kind is None and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return RETRY_IF_IDEMPOTENT if sent else RETRY
    return FAIL


HASH_KEY_BYTES_MAX = 1024


class Table:
    def __init__(self, client, name):
        self.client, self.name, self.pb = client, name, client.pb

    def _call(self, hash_key, send, idempotent):
        """Sends `send(stub, route_message, timeout)` to the primary of `hash_key`'s partition,
        retrying as docs/protocol.md says."""
        c = self.client
        # Servers check this on writes only (docs/protocol.md, Known gaps): check it here for all.
        if not 1 <= len(hash_key) <= HASH_KEY_BYTES_MAX:
            raise TandemError("invalid-argument", grpc.StatusCode.INVALID_ARGUMENT, f"hash key of {len(hash_key)} bytes: it must be 1 to {HASH_KEY_BYTES_MAX}")
        deadline = time.monotonic() + c.request_timeout
        backoff, refresh, wrong_route_refreshed = 0.02, False, False
        while True:
            route = c.route(self.name, refresh)
            refresh = False
            p = c.partition_fn(hash_key, route.partition_count)
            primary = route.primaries[p] if p < len(route.primaries) else None
            error, decision = None, None
            if primary is None:
                error, decision = TandemError(None, grpc.StatusCode.UNAVAILABLE, f"partition {p} has no primary"), RETRY
            else:
                timeout = c.next_deadlines.pop(0) if c.next_deadlines else c.rpc_timeout
                channel = c.channel(primary)
                sent = True
                if not idempotent:
                    # Connect first: a connection that does not open proves the write was not sent.
                    try:
                        grpc.channel_ready_future(channel).result(timeout=min(2.0, c.rpc_timeout))
                    except grpc.FutureTimeoutError:
                        sent = False
                c.stats.attempts += 1
                if not sent:
                    error, decision = TandemError(None, grpc.StatusCode.UNAVAILABLE, f"could not connect to {primary}"), RETRY
                else:
                    msg = self.pb.Route(gpid=self.pb.Gpid(table_id=route.table_id, partition=p), partition_count=route.partition_count)
                    try:
                        return send(c.rpc.ReplicaServiceStub(channel), msg, timeout)
                    except grpc.RpcError as e:
                        kind, code, _, _ = status_of(e)
                        # Refused connections fail fast with "failed to connect": not sent.
                        may_have_left = not (kind is None and code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (e.details() or "").lower())
                        error, decision = error_of(e), decide(kind, code, may_have_left)
            c.stats.error(error.kind or error.code.name)
            if decision == REFRESH_ONCE:
                if wrong_route_refreshed:
                    raise WrongRoute(error.kind, error.code, error.message, error.metadata)
                wrong_route_refreshed, refresh = True, True
                continue
            if decision == RETRY_IF_IDEMPOTENT and not idempotent:
                raise OutcomeUnknown(error.kind, error.code, f"the write may or may not have been applied: {error.message}", error.metadata)
            if decision == FAIL:
                raise error
            if time.monotonic() + backoff > deadline:
                raise GaveUp(error.kind, error.code, f"gave up after {c.request_timeout}s: {error.message}", error.metadata)
            time.sleep(backoff)
            backoff = min(backoff * 2, 0.5)
            refresh = True

    def _write(self, hash_key, idempotent, **op):
        def send(stub, route, timeout):
            return stub.Write(self.pb.WriteRequest(route=route, hash_key=hash_key, **op), timeout=timeout)

        return self._call(hash_key, send, idempotent)

    def set(self, hash_key, sort_key, value, ttl_seconds=0):
        self._write(hash_key, True, set=self.pb.SetOp(sort_key=sort_key, value=value, ttl_seconds=ttl_seconds))

    def multi_set(self, hash_key, kvs, ttl_seconds=0):
        kvs = [self.pb.KeyValue(sort_key=k, value=v) for k, v in kvs]
        self._write(hash_key, True, multi_set=self.pb.MultiSetOp(kvs=kvs, ttl_seconds=ttl_seconds))

    def delete(self, hash_key, sort_key):
        self._write(hash_key, True, delete=self.pb.DelOp(sort_key=sort_key))

    def multi_delete(self, hash_key, sort_keys):
        self._write(hash_key, True, multi_delete=self.pb.MultiDelOp(sort_keys=sort_keys))

    def incr(self, hash_key, sort_key, increment, ttl_seconds=0):
        r = self._write(hash_key, False, incr=self.pb.IncrOp(sort_key=sort_key, increment=increment, ttl_seconds=ttl_seconds))
        return r.incr_value

    def check_and_mutate(self, hash_key, check_sort_key, check_type, operand, mutations, return_check_value=True):
        """mutations: [(sort_key, value or None for a delete, ttl_seconds)]. Returns (applied,
        the checked value or None)."""
        pb = self.pb
        ops = [
            pb.MutateOp(kind=pb.MutateOp.DELETE, sort_key=k) if v is None else pb.MutateOp(kind=pb.MutateOp.PUT, sort_key=k, value=v, ttl_seconds=ttl)
            for k, v, ttl in mutations
        ]
        op = pb.CheckAndMutateOp(check_sort_key=check_sort_key, check_type=check_type, check_operand=operand, mutations=ops, return_check_value=return_check_value)
        r = self._write(hash_key, False, check_and_mutate=op)
        return r.check_applied, (r.check_value if r.check_value_exists else None)

    def check_and_set(self, hash_key, check_sort_key, check_type, operand, set_sort_key, value, ttl_seconds=0):
        return self.check_and_mutate(hash_key, check_sort_key, check_type, operand, [(set_sort_key, value, ttl_seconds)])

    def get_with_ttl(self, hash_key, sort_key):
        def send(stub, route, timeout):
            return stub.Get(self.pb.GetRequest(route=route, hash_key=hash_key, sort_key=sort_key), timeout=timeout)

        r = self._call(hash_key, send, True)
        return (r.value, r.ttl_seconds) if r.found else None

    def get(self, hash_key, sort_key):
        r = self.get_with_ttl(hash_key, sort_key)
        return None if r is None else r[0]

    def multi_get(self, hash_key, sort_keys):
        def send(stub, route, timeout):
            return stub.MultiGet(self.pb.MultiGetRequest(route=route, hash_key=hash_key, sort_keys=sort_keys), timeout=timeout)

        return [(kv.sort_key, kv.value) for kv in self._call(hash_key, send, True).kvs]

    def scan(self, hash_key, start=b"", stop=b"", count_max=0):
        """Every record of the sort-key range [start, stop) (stop empty: to the end), page by page."""
        out, start_inclusive = [], True
        while True:

            def send(stub, route, timeout, start=start, start_inclusive=start_inclusive):
                req = self.pb.MultiGetRequest(
                    route=route, hash_key=hash_key, start_sort_key=start, start_inclusive=start_inclusive, stop_sort_key=stop, stop_inclusive=False, count_max=count_max
                )
                return stub.MultiGet(req, timeout=timeout)

            r = self._call(hash_key, send, True)
            out.extend((kv.sort_key, kv.value) for kv in r.kvs)
            if not r.more:
                return out
            start, start_inclusive = r.next_sort_key, False

    def sortkey_count(self, hash_key):
        def send(stub, route, timeout):
            return stub.SortkeyCount(self.pb.SortkeyCountRequest(route=route, hash_key=hash_key), timeout=timeout)

        return self._call(hash_key, send, True).count

    def full_scan(self, count_max=100):
        """Every record of the table: (hash_key, sort_key, value), partition by partition."""
        c, out = self.client, []
        route = c.route(self.name)
        for p in range(route.partition_count):
            after, has_after = b"", False
            while True:
                msg = self.pb.Route(gpid=self.pb.Gpid(table_id=route.table_id, partition=p), partition_count=route.partition_count)
                req = self.pb.FullScanRequest(route=msg, after_key=after, has_after_key=has_after, count_max=count_max)
                r = c.replica(route.primaries[p]).FullScan(req, timeout=c.rpc_timeout)
                out.extend((rec.hash_key, rec.sort_key, rec.value) for rec in r.records)
                if not r.more:
                    break
                after, has_after = r.next_key, True
        return out


# ---------------------------------------------------------------- the batch stream


class StreamBroken(TandemError):
    """The batch stream broke; `sent` says whether the call may have left (then its outcome is
    unknown) or never did (not taken)."""

    def __init__(self, message, sent):
        super().__init__(None, grpc.StatusCode.UNAVAILABLE, message)
        self.sent = sent


class BatchStream:
    """One long-lived Batch stream to a replica server: calls are queued, sent together when the
    stream can take a message, and their replies matched by id (docs/protocol.md, Batch)."""

    CALLS_PER_MESSAGE_MAX = 1024

    def __init__(self, channel, pb, rpc):
        self.pb = pb
        self._queue = queue.Queue()
        self._waiting = {}
        self._sent = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._broken = None
        self._messages_sent = 0
        self._replies = rpc.ReplicaServiceStub(channel).Batch(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self):
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            while len(calls) < self.CALLS_PER_MESSAGE_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                calls.append(more)
            with self._lock:
                self._sent.update(call.id for call in calls)
            self._messages_sent += 1
            yield self.pb.BatchRequest(calls=calls)

    def _read(self):
        why = "the server ended the stream"
        try:
            for message in self._replies:
                for reply in message.replies:
                    with self._lock:
                        future = self._waiting.pop(reply.id, None)
                        self._sent.discard(reply.id)
                    if future is None:
                        continue
                    which = reply.WhichOneof("reply")
                    if which == "error":
                        future.set_exception(batch_error(reply.error))
                    else:
                        future.set_result(getattr(reply, which))
        except grpc.RpcError as e:
            why = f"the stream broke: {e.code().name} {e.details()}"
        with self._lock:
            self._broken = why
            waiting, self._waiting = self._waiting, {}
            sent = set(self._sent)
        for call_id, future in waiting.items():
            future.set_exception(StreamBroken(why, call_id in sent))

    def call(self, write=None, get=None):
        """Queues a write (WriteRequest) or a get (GetRequest); returns a Future of its
        WriteResponse / GetResponse, or of a TandemError."""
        future = concurrent.futures.Future()
        with self._lock:
            if self._broken:
                future.set_exception(StreamBroken(self._broken, False))
                return future
            call_id = next(self._ids)
            self._waiting[call_id] = future
        self._queue.put(self.pb.BatchCall(id=call_id, write=write) if write is not None else self.pb.BatchCall(id=call_id, get=get))
        return future

    @property
    def messages_sent(self):
        return self._messages_sent

    def close(self):
        """Half-closes the stream; the server ends it once every call was answered."""
        self._queue.put(None)
        self._reader.join(timeout=30)
