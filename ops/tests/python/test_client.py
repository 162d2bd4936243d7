#!/usr/bin/env python3
"""The wire protocol as docs/protocol.md describes it, checked against a real site by a client
written in a second language (tandem_client.py).

    test_client.py --meta HOST:PORT[,HOST:PORT…] --table NAME

The table must exist and have at least 2 partitions and at least 2 replicas (a secondary
is needed to provoke not-primary). With more than one meta server, not-leader is checked too.
Exits 0 when every check passed, 1 otherwise; prints one line per check and a summary.
"""

import argparse
import socket
import struct
import sys
import threading
import time
import traceback

import grpc

import tandem_client as tc
from tandem_client import OutcomeUnknown, TandemError, WrongRoute, crc64_nvme, partition_of

# The vectors of docs/protocol.md, Placement.
CRC_VECTORS = [
    (b"123456789", 0xAE8B14860A799888),
    (b"a", 0x8C2F8445B4CBFC3C),
    (b"alice", 0xEE00C02E2B05CE72),
    (b"user0", 0x11AA07C175371941),
    (b"user1", 0x6EC4F70945029038),
    (b"hello", 0x3377857006524257),
    (b"tandem", 0xCD0F524A91B1C498),
    (bytes(range(32)), 0xB9D9D4A8492CBD7F),
]


class Site:
    """What the checks share: the stubs, a client, the table's route."""

    def __init__(self, args, pb, rpc):
        self.args, self.pb, self.rpc = args, pb, rpc
        self.metas = args.meta
        self.client = tc.Client(self.metas, pb, rpc)
        self.table = self.client.table(args.table)
        self.route = self.client.route(args.table)
        self.value_bytes_max = args.max_value_bytes
        # In every hash key, so that the checks may run again on the same table.
        self.run = "%x" % (time.time_ns() // 1000 % (1 << 32))

    def key(self, name):
        return f"{name}-{self.run}".encode()

    def fresh_client(self, **kw):
        return tc.Client(self.metas, self.pb, self.rpc, **kw)

    def route_msg(self, partition, partition_count=None, table_id=None):
        r = self.route
        return self.pb.Route(
            gpid=self.pb.Gpid(table_id=r.table_id if table_id is None else table_id, partition=partition),
            partition_count=r.partition_count if partition_count is None else partition_count,
        )

    def key_of_partition(self, partition, prefix="k"):
        """A hash key placed in `partition`."""
        for i in range(100000):
            k = f"{prefix}-{self.run}-{i}".encode()
            if partition_of(k, self.route.partition_count) == partition:
                return k
        raise AssertionError(f"no key found for partition {partition}")

    def primary_stub(self, partition):
        return self.client.replica(self.route.primaries[partition])

    def secondary_stub(self, partition):
        return self.client.replica(self.route.secondaries[partition][0])

    def write(self, hash_key, partition=None, **op):
        return self.pb.WriteRequest(route=self.route_msg(partition_of(hash_key, self.route.partition_count) if partition is None else partition), hash_key=hash_key, **op)


def refused(call, kind, code):
    """Runs `call`, which must fail with `kind` and `code`; returns (message, metadata)."""
    try:
        call()
    except grpc.RpcError as e:
        got_kind, got_code, message, md = tc.status_of(e)
        assert (got_kind, got_code) == (kind, code), f"expected {kind}/{code.name}, got {got_kind}/{got_code.name}: {message}"
        return message, md
    raise AssertionError(f"expected {kind}/{code.name}, the call succeeded")


def raises(exc_type, call):
    try:
        call()
    except exc_type as e:
        return e
    raise AssertionError(f"expected {exc_type.__name__}, the call succeeded")


def closed_port():
    """A port on 127.0.0.1 that refuses connections (free a moment ago)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- the checks


def check_crc(site):
    for data, want in CRC_VECTORS:
        assert crc64_nvme(data) == want, f"crc64_nvme({data!r}) = {crc64_nvme(data):#x}, want {want:#x}"
    return f"{len(CRC_VECTORS)} vectors, check value 0xae8b14860a799888"


def check_routes(site):
    r = site.route
    assert r.partition_count >= 2 and r.partition_count & (r.partition_count - 1) == 0, f"partition count {r.partition_count}"
    assert all(r.primaries), f"a partition without a primary: {r.primaries}"
    assert all(r.secondaries), f"the table needs at least 2 replicas: {r.secondaries}"
    return f"table id {r.table_id}, {r.partition_count} partitions, primaries on {len(set(r.primaries))} servers"


def check_not_leader(site):
    if len(site.metas) < 2:
        return "skipped: one meta server"
    refusing = []
    for addr in site.metas:
        stub = site.rpc.MetaServiceStub(site.client.channel(addr))
        try:
            stub.QueryConfig(site.pb.QueryConfigRequest(table=site.args.table), timeout=2)
            leader = addr
        except grpc.RpcError as e:
            kind, code, message, md = tc.status_of(e)
            assert (kind, code) == ("not-leader", grpc.StatusCode.UNAVAILABLE), f"{addr}: {kind}/{code.name}: {message}"
            refusing.append((addr, md.get("tandem-leader")))
    assert refusing and len(refusing) < len(site.metas), f"expected one leader among {site.metas}, refusals {refusing}"
    for addr, hint in refusing:
        assert hint == leader, f"{addr} hints {hint!r}, the leader is {leader}"
    # A client that starts at a standby follows the hint.
    standby = refusing[0][0]
    client = tc.Client([standby] + [m for m in site.metas if m != standby], site.pb, site.rpc)
    client.route(site.args.table)
    assert client.stats.leader_hints_followed == 1, client.stats.__dict__
    return f"{len(refusing)} standby refused with not-leader/UNAVAILABLE and tandem-leader={leader}; the client followed it"


def check_routing(site):
    """Many keys across every partition land on the partition CRC-64/NVME names and read back."""
    t, count = site.table, site.route.partition_count
    prefix = site.key("route")
    keys = [prefix + b"-%d" % i for i in range(site.args.keys)]
    for i, k in enumerate(keys):
        t.set(k, b"s", b"v%d" % i)
    for i, k in enumerate(keys):
        assert t.get(k, b"s") == b"v%d" % i, k
    assert site.client.stats.errors.get("wrong-route", 0) == 0, site.client.stats.errors
    covered = {partition_of(k, count) for k in keys}
    assert len(covered) == count, f"the keys cover partitions {sorted(covered)} of {count}"
    # Straight to the server, a key is served by its partition and refused by every other one.
    pb = site.pb
    for k in keys[:32]:
        p = partition_of(k, count)
        got = site.primary_stub(p).Get(pb.GetRequest(route=site.route_msg(p), hash_key=k, sort_key=b"s"), timeout=5)
        assert got.found, k
        q = (p + 1) % count
        refused(lambda: site.primary_stub(q).Get(pb.GetRequest(route=site.route_msg(q), hash_key=k, sort_key=b"s"), timeout=5), "wrong-route", grpc.StatusCode.FAILED_PRECONDITION)
    # Every record is found by a full scan, partition by partition.
    scanned = {hk for hk, sk, v in t.full_scan(count_max=7) if hk.startswith(prefix)}
    assert scanned == set(keys), f"full scan found {len(scanned)} of {len(keys)}"
    return f"{len(keys)} keys over all {count} partitions written, read back, and refused by the 32 wrong partitions tried; full scan found all"


def check_operations(site):
    t = site.table
    hk = site.key("ops")
    t.multi_set(hk, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4"), (b"e", b"")])
    assert t.multi_get(hk, [b"c", b"a", b"zz"]) == [(b"c", b"3"), (b"a", b"1")]
    assert t.scan(hk, count_max=2) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4"), (b"e", b"")]
    assert t.scan(hk, start=b"b", stop=b"d") == [(b"b", b"2"), (b"c", b"3")]
    assert t.sortkey_count(hk) == 5
    t.delete(hk, b"a")
    t.delete(hk, b"never-there")
    t.multi_delete(hk, [b"b", b"c"])
    assert t.get(hk, b"a") is None and t.sortkey_count(hk) == 2
    assert t.get_with_ttl(hk, b"d") == (b"4", -1)
    t.set(hk, b"ttl", b"x", ttl_seconds=100)
    value, ttl = t.get_with_ttl(hk, b"ttl")
    assert value == b"x" and 0 < ttl <= 100, ttl
    assert t.incr(hk, b"n", 5) == 5 and t.incr(hk, b"n", -7) == -2 and t.get(hk, b"n") == b"-2"
    assert t.incr(hk, b"e", 1) == 1, "an empty value counts as 0"
    t.incr(hk, b"n", 0, ttl_seconds=50)
    assert 0 < t.get_with_ttl(hk, b"n")[1] <= 50
    t.incr(hk, b"n", 0, ttl_seconds=-1)
    assert t.get_with_ttl(hk, b"n")[1] == -1
    return "multi_set, multi_get, paged range scans, sortkey_count, delete, multi_delete, TTLs, incr (and its TTL rules)"


def check_and_set_semantics(site):
    pb, t, hk = site.pb, site.table, site.key("cas")
    assert t.check_and_set(hk, b"lock", pb.CHECK_TYPE_VALUE_NOT_EXIST, b"", b"lock", b"me") == (True, None)
    # A failed check is an answer, not an error: nothing applied, the current value returned.
    assert t.check_and_set(hk, b"lock", pb.CHECK_TYPE_VALUE_NOT_EXIST, b"", b"lock", b"you") == (False, b"me")
    assert t.get(hk, b"lock") == b"me"
    assert t.check_and_set(hk, b"lock", pb.CHECK_TYPE_BYTES_EQUAL, b"you", b"lock", b"x") == (False, b"me")
    assert t.check_and_set(hk, b"lock", pb.CHECK_TYPE_BYTES_EQUAL, b"me", b"lock", b"you") == (True, b"me")
    assert t.check_and_set(hk, b"lock", pb.CHECK_TYPE_MATCH_PREFIX, b"yo", b"other", b"1") == (True, b"you")
    t.set(hk, b"n", b"10")
    assert t.check_and_set(hk, b"n", pb.CHECK_TYPE_INT_GREATER, b"9", b"n", b"11") == (True, b"10")
    assert t.check_and_set(hk, b"n", pb.CHECK_TYPE_INT_LESS, b"9", b"n", b"0") == (False, b"11")
    # A check on another sort key than the one set, several mutations at once, no value back.
    applied, value = t.check_and_mutate(hk, b"n", pb.CHECK_TYPE_VALUE_EXIST, b"", [(b"lock", None, 0), (b"done", b"yes", 0)], return_check_value=False)
    assert (applied, value) == (True, None)
    assert t.get(hk, b"lock") is None and t.get(hk, b"done") == b"yes"
    # Checks of a value that does not exist fail (beyond the existence checks).
    assert t.check_and_set(hk, b"absent", pb.CHECK_TYPE_BYTES_LESS, b"z", b"x", b"1") == (False, None)
    assert t.get(hk, b"x") is None
    return "applied and refused checks, the checked value returned, multi-mutation, int/bytes/prefix checks"


def check_wrong_route(site):
    pb, count = site.pb, site.route.partition_count
    k = site.key_of_partition(0, "wr")
    # A partition count that is not the table's.
    op = dict(set=pb.SetOp(sort_key=b"s", value=b"never"))
    bad_count = pb.WriteRequest(route=site.route_msg(0, partition_count=count * 2), hash_key=k, **op)
    message, md = refused(lambda: site.primary_stub(0).Write(bad_count, timeout=5), "wrong-route", grpc.StatusCode.FAILED_PRECONDITION)
    assert md.get("tandem-partition-count") == str(count), md
    # A hash key sent to another partition (and its primary).
    message2, md2 = refused(lambda: site.primary_stub(1).Write(site.write(k, partition=1, **op), timeout=5), "wrong-route", grpc.StatusCode.FAILED_PRECONDITION)
    assert md2.get("tandem-partition-count") == str(count), md2
    assert site.table.get(k, b"s") is None, "a refused write was applied"
    # A client whose cached count is stale refreshes once and succeeds.
    client = site.fresh_client()
    real = client.route(site.args.table)
    client.routes[site.args.table] = tc.Route(real.table_id, count * 2, real.primaries * 2, real.secondaries * 2)
    client.table(site.args.table).set(k, b"stale", b"ok")
    assert client.stats.errors == {"wrong-route": 1} and client.stats.refreshes == 2, (client.stats.errors, client.stats.refreshes)
    assert site.table.get(k, b"stale") == b"ok"
    # A client that hashes differently from the servers fails loudly after one refresh.
    buggy = site.fresh_client()
    buggy.partition_fn = lambda hk, n: (crc64_nvme(hk) + 1) % n
    e = raises(WrongRoute, lambda: buggy.table(site.args.table).set(k, b"buggy", b"never"))
    assert buggy.stats.attempts == 2 and buggy.stats.errors == {"wrong-route": 2}, (buggy.stats.attempts, buggy.stats.errors)
    assert site.table.get(k, b"buggy") is None
    return f"count {count * 2} and a key of partition 0 sent to 1: FAILED_PRECONDITION, tandem-partition-count={count}; stale count refreshed once; hashing bug failed after 2 attempts ({e.message})"


def check_not_primary(site):
    pb = site.pb
    p = 0
    k = site.key_of_partition(p, "np")
    primary, secondary = site.route.primaries[p], site.route.secondaries[p][0]
    op = dict(set=pb.SetOp(sort_key=b"s", value=b"never"))
    message, md = refused(lambda: site.secondary_stub(p).Write(site.write(k, **op), timeout=5), "not-primary", grpc.StatusCode.UNAVAILABLE)
    hint = md.get("tandem-primary")
    assert hint in (None, primary), f"tandem-primary {hint!r}, the primary is {primary}"
    refused(lambda: site.secondary_stub(p).Get(pb.GetRequest(route=site.route_msg(p), hash_key=k, sort_key=b"s"), timeout=5), "not-primary", grpc.StatusCode.UNAVAILABLE)
    assert site.table.get(k, b"s") is None, "a write refused by a secondary was applied"
    # A client whose route names the secondary refreshes and retries, even a non-idempotent write
    # (not-primary: not applied).
    client = site.fresh_client()
    real = client.route(site.args.table)
    stale = lambda: tc.Route(real.table_id, real.partition_count, [secondary if i == p else a for i, a in enumerate(real.primaries)], real.secondaries)
    client.routes[site.args.table] = stale()
    t = client.table(site.args.table)
    t.set(k, b"s", b"moved")
    client.routes[site.args.table] = stale()
    assert t.incr(k, b"n", 1) == 1
    assert client.stats.errors == {"not-primary": 2}, client.stats.errors
    assert site.table.get(k, b"s") == b"moved" and site.table.get(k, b"n") == b"1", "the incr was applied once"
    return f"write and get on secondary {secondary}: UNAVAILABLE not-primary, tandem-primary={hint}; stale routes refreshed, incr applied once"


def check_invalid_argument(site):
    pb, count = site.pb, site.route.partition_count
    k = site.key_of_partition(0, "inv")
    stub = site.primary_stub(0)
    limit = site.value_bytes_max
    long_hk = next(hk for hk in (b"h" * 1024 + b"%d" % i for i in range(100000)) if partition_of(hk, count) == 0)
    assert len(long_hk) > 1024
    huge_hk = next(hk for hk in (b"h" * 70000 + b"%d" % i for i in range(100000)) if partition_of(hk, count) == 0)
    cam = lambda **kw: pb.CheckAndMutateOp(check_sort_key=b"c", mutations=[pb.MutateOp(kind=pb.MutateOp.PUT, sort_key=b"s", value=b"v")], **kw)
    set_op = dict(set=pb.SetOp(sort_key=b"s", value=b"v"))
    writes = [
        ("empty hash key", pb.WriteRequest(route=site.route_msg(0), hash_key=b"", **set_op)),
        ("hash key of 1025+ bytes", pb.WriteRequest(route=site.route_msg(0), hash_key=long_hk, **set_op)),
        ("sort key of 4097 bytes", site.write(k, set=pb.SetOp(sort_key=b"s" * 4097, value=b"v"))),
        (f"value of {limit + 1} bytes", site.write(k, set=pb.SetOp(sort_key=b"big", value=b"v" * (limit + 1)))),
        ("partition count 3", pb.WriteRequest(route=site.route_msg(0, partition_count=3), hash_key=k, **set_op)),
        ("partition out of range", pb.WriteRequest(route=site.route_msg(count), hash_key=k, **set_op)),
        ("no route", pb.WriteRequest(hash_key=k, **set_op)),
        ("no operation", site.write(k)),
        ("multi_set of nothing", site.write(k, multi_set=pb.MultiSetOp())),
        ("multi_delete of nothing", site.write(k, multi_delete=pb.MultiDelOp())),
        ("check_and_mutate without mutations", site.write(k, check_and_mutate=pb.CheckAndMutateOp(check_sort_key=b"c"))),
        ("unknown check type 99", site.write(k, check_and_mutate=cam(check_type=99))),
        ("incr with ttl -2", site.write(k, incr=pb.IncrOp(sort_key=b"n", increment=1, ttl_seconds=-2))),
        ("duplicate with a hash key", site.write(k, duplicate=pb.DuplicateOp(watermark_us=1, origin_cluster_id=2))),
    ]
    refusals = 0
    for what, req in writes:
        refusals += 1
        try:
            refused(lambda: stub.Write(req, timeout=10), "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
    site.table.set(k, b"text", b"abc")
    for what, op in [
        ("incr of a non-integer", dict(incr=pb.IncrOp(sort_key=b"text", increment=1))),
        ("int check of a non-integer", dict(check_and_mutate=cam(check_type=pb.CHECK_TYPE_INT_EQUAL, check_operand=b"1"))),
    ]:
        if "check" in what:
            op["check_and_mutate"].check_sort_key = b"text"
        message, _ = refused(lambda: stub.Write(site.write(k, **op), timeout=5), "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT)
        assert "integer" in message, f"{what}: {message}"
        refusals += 1
    for what, req in [
        ("get with an empty hash key", pb.GetRequest(route=site.route_msg(0), hash_key=b"", sort_key=b"s")),
        ("get with a sort key of 4097 bytes", pb.GetRequest(route=site.route_msg(0), hash_key=k, sort_key=b"s" * 4097)),
        ("get with a hash key of 1025+ bytes", pb.GetRequest(route=site.route_msg(0), hash_key=long_hk, sort_key=b"s")),
        # Longer than a stored key's 16-bit length prefix: once a panic that ended the call.
        ("get with a hash key of 70 000+ bytes", pb.GetRequest(route=site.route_msg(0), hash_key=huge_hk, sort_key=b"s")),
    ]:
        try:
            refused(lambda: stub.Get(req, timeout=5), "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
        refusals += 1
    assert site.table.get(k, b"s") is None and site.table.get(k, b"big") is None and site.table.get(k, b"text") == b"abc"
    return f"{refusals} malformed requests refused with INVALID_ARGUMENT invalid-argument, none applied"


def check_too_large(site):
    pb, t = site.pb, site.table
    limit = site.value_bytes_max
    k = site.key_of_partition(0, "big")
    # Every value at the limit, five of them over 4 × the limit together: split it.
    kvs = [(b"%d" % i, b"x" * limit) for i in range(5)]
    message, _ = refused(
        lambda: site.primary_stub(0).Write(site.write(k, multi_set=pb.MultiSetOp(kvs=[pb.KeyValue(sort_key=a, value=b) for a, b in kvs])), timeout=30),
        "too-large",
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert t.get(k, b"0") is None, "a refused multi_set was applied"
    t.multi_set(k, kvs[:3])
    t.multi_set(k, kvs[3:])
    assert t.sortkey_count(k) == 5
    return f"multi_set of 5 × {limit} bytes: INVALID_ARGUMENT too-large ({message[:50]}…); split in two, it passed"


def dup_value(timestamp_us, cluster_id, user):
    timetag = (timestamp_us << 8) | (cluster_id << 1)
    return struct.pack(">BIQ", 1, 0, timetag) + user


def check_clock_ahead(site):
    pb = site.pb
    k = site.key_of_partition(0, "dup")
    stored_key = struct.pack(">H", len(k)) + k + b"s"
    far = int(time.time() * 1e6) + 60_000_000
    op = pb.DuplicateOp(records=[pb.DupRecord(key=stored_key, value=dup_value(far, 127, b"future"))])
    req = pb.WriteRequest(route=site.route_msg(0), duplicate=op)
    message, _ = refused(lambda: site.primary_stub(0).Write(req, timeout=5), "clock-ahead", grpc.StatusCode.FAILED_PRECONDITION)
    assert site.table.get(k, b"s") is None, "a record refused as clock-ahead was applied"
    # A record of another partition in a duplicate batch is a wrong route.
    other = site.key_of_partition(1, "dup")
    wrong = pb.DuplicateOp(records=[pb.DupRecord(key=struct.pack(">H", len(other)) + other + b"s", value=dup_value(int(time.time() * 1e6), 127, b"x"))])
    refused(lambda: site.primary_stub(0).Write(pb.WriteRequest(route=site.route_msg(0), duplicate=wrong), timeout=5), "wrong-route", grpc.StatusCode.FAILED_PRECONDITION)
    return f"a duplicated record 60 s ahead: FAILED_PRECONDITION clock-ahead, not applied ({message[:60]}…)"


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of one replica server, to lose what a client cannot
    tell apart: in mode "hold" it passes requests on and drops every answer (the client's
    deadline expires after the server applied the write); in mode "reset" it passes the next
    request on, drops the answer and closes the connection."""

    def __init__(self, upstream):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.mode = "pass"
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self.sockets += [down, up]
            threading.Thread(target=self._pump, args=(down, up, "request"), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down, "answer"), daemon=True).start()

    def _pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if direction == "answer" and self.mode != "pass":
                    continue
                dst.sendall(data)
                if direction == "request" and self.mode == "reset":
                    # Whatever else the client sends meanwhile is passed on too.
                    threading.Timer(0.2, self._cut, (src, dst)).start()
        except OSError:
            pass
        self._cut(src, dst)

    @staticmethod
    def _cut(*socks):
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def check_retries(site):
    t_name = site.args.table
    k = site.key_of_partition(0, "retry")
    # A primary that refuses connections: not sent, so even incr is retried (after a refresh).
    client = site.fresh_client()
    real = client.route(t_name)
    via = lambda addr: tc.Route(real.table_id, real.partition_count, [addr] + real.primaries[1:], real.secondaries)
    t = client.table(t_name)
    client.routes[t_name] = via(f"127.0.0.1:{closed_port()}")
    t.set(k, b"s", b"after-refused")
    client.routes[t_name] = via(f"127.0.0.1:{closed_port()}")
    assert t.incr(k, b"n", 1) == 1
    assert site.table.get(k, b"s") == b"after-refused" and site.table.get(k, b"n") == b"1"
    assert set(client.stats.errors) == {"UNAVAILABLE"}, client.stats.errors
    seen = []
    # The answer lost after the server applied the write (deadline), or the connection reset
    # after the request left: the outcome is unknown. An idempotent write is sent again and
    # lands; a non-idempotent one is reported as unknown and not sent again — though applied.
    for mode, error in [("hold", "DEADLINE_EXCEEDED"), ("reset", "UNAVAILABLE")]:
        proxy = Proxy(real.primaries[0])
        client = site.fresh_client(rpc_timeout=1.0)
        t = client.table(t_name)
        client.routes[t_name] = via(proxy.addr)
        t.get(k, b"s")
        proxy.mode = mode
        t.set(k, b"s", b"after-" + mode.encode())
        assert client.stats.errors == {error: 1}, (mode, client.stats.errors)
        assert site.table.get(k, b"s") == b"after-" + mode.encode()
        proxy.close()
        proxy = Proxy(real.primaries[0])
        client.routes[t_name] = via(proxy.addr)
        t.get(k, b"s")
        proxy.mode = mode
        before, attempts = int(site.table.get(k, b"n")), client.stats.attempts
        e = raises(OutcomeUnknown, lambda: t.incr(k, b"n", 1))
        assert client.stats.attempts == attempts + 1 and e.code.name == error, (mode, client.stats.attempts - attempts, e)
        after = int(site.table.get(k, b"n"))
        assert after in (before, before + 1), (before, after)
        seen.append(f"{mode}: {error}, incr applied {after - before}x")
        proxy.close()
    # The same sets and deletes sent twice leave the same state as once.
    for _ in range(2):
        site.table.set(k, b"twice", b"v")
        site.table.multi_set(k, [(b"t1", b"1"), (b"t2", b"2")])
    for _ in range(2):
        site.table.delete(k, b"twice")
        site.table.multi_delete(k, [b"t1"])
    assert site.table.get(k, b"twice") is None and site.table.multi_get(k, [b"t1", b"t2"]) == [(b"t2", b"2")]
    return f"refused connection: set and incr retried after a refresh; answer lost ({'; '.join(seen)}): set retried, incr reported unknown and not resent"


def check_batch(site):
    pb = site.pb
    k = site.key_of_partition(0, "batch")
    stub = site.primary_stub(0)
    r = site.route_msg(0)
    set_call = lambda i, sk, v: pb.BatchCall(id=i, write=pb.WriteRequest(route=r, hash_key=k, set=pb.SetOp(sort_key=sk, value=v)))
    calls = [set_call(1, b"a", b"1"), set_call(2, b"b", b"2"), set_call(3, b"c", b"3")]
    replies = exchange(pb, stub, calls)
    assert sorted(replies) == [1, 2, 3] and all(x.WhichOneof("reply") == "write" for x in replies.values()), replies
    calls = [
        pb.BatchCall(id=10, get=pb.GetRequest(route=r, hash_key=k, sort_key=b"a")),
        pb.BatchCall(id=11),
        pb.BatchCall(id=12, get=pb.GetRequest(route=r, hash_key=b"", sort_key=b"a")),
        pb.BatchCall(id=13, get=pb.GetRequest(route=site.route_msg(0, partition_count=site.route.partition_count * 2), hash_key=k, sort_key=b"a")),
        pb.BatchCall(id=14, get=pb.GetRequest(route=r, hash_key=k, sort_key=b"zz")),
        pb.BatchCall(id=15, get=pb.GetRequest(route=r, hash_key=k, sort_key=b"c")),
    ]
    replies = exchange(pb, stub, calls)
    assert sorted(replies) == [10, 11, 12, 13, 14, 15], sorted(replies)
    assert replies[10].get.found and replies[10].get.value == b"1"
    assert replies[14].WhichOneof("reply") == "get" and not replies[14].get.found
    assert replies[15].get.value == b"3"
    for call_id, kind, code in [(11, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT), (12, "invalid-argument", grpc.StatusCode.INVALID_ARGUMENT), (13, "wrong-route", grpc.StatusCode.FAILED_PRECONDITION)]:
        err = replies[call_id].error
        assert (err.kind, err.code) == (kind, code.value[0]), (call_id, err)
    # Too many calls in one message: each refused.
    too_many = [pb.BatchCall(id=100 + i, get=pb.GetRequest(route=r, hash_key=k, sort_key=b"a")) for i in range(4097)]
    replies = exchange(pb, stub, too_many)
    assert len(replies) == 4097 and all(x.error.kind == "invalid-argument" and "4096" in x.error.message for x in replies.values())
    # A long-lived stream per primary carries calls to every partition, matched by id.
    streams = {p: tc.BatchStream(site.client.channel(site.route.primaries[p]), pb, site.rpc) for p in range(site.route.partition_count)}
    keys = [site.key("stream") + b"-%d" % i for i in range(400)]
    futures = []
    for i, key in enumerate(keys):
        p = partition_of(key, site.route.partition_count)
        futures.append(streams[p].call(write=site.write(key, set=pb.SetOp(sort_key=b"s", value=b"%d" % i))))
    for f in futures:
        f.result(timeout=30)
    gets = [streams[partition_of(key, site.route.partition_count)].call(get=pb.GetRequest(route=site.route_msg(partition_of(key, site.route.partition_count)), hash_key=key, sort_key=b"s")) for key in keys]
    assert [g.result(timeout=30).value for g in gets] == [b"%d" % i for i in range(len(keys))]
    # A refused call is answered on its own; the stream carries on.
    bad = streams[0].call(get=pb.GetRequest(route=site.route_msg(0), hash_key=site.key_of_partition(1, "bs"), sort_key=b"s"))
    e = raises(TandemError, lambda: bad.result(timeout=30))
    assert e.kind == "wrong-route" and e.code == grpc.StatusCode.FAILED_PRECONDITION, e
    still = streams[0].call(get=pb.GetRequest(route=site.route_msg(0), hash_key=k, sort_key=b"a"))
    assert still.result(timeout=30).value == b"1"
    messages = sum(s.messages_sent for s in streams.values())
    for s in streams.values():
        s.close()
    return f"ids matched across independent calls, BatchError code/kind as unary, 4097 calls refused, {2 * len(keys)} calls on {len(streams)} streams in {messages} messages"


def exchange(pb, stub, calls):
    """One message of `calls` on a fresh Batch stream, half-closed; every reply by id."""
    replies = {}
    for message in stub.Batch(iter([pb.BatchRequest(calls=calls)]), timeout=30):
        for reply in message.replies:
            assert reply.id not in replies, f"two replies to call {reply.id}"
            replies[reply.id] = reply
    return replies


CHECKS = [
    ("crc64-nvme", check_crc),
    ("routes", check_routes),
    ("not-leader", check_not_leader),
    ("routing", check_routing),
    ("operations", check_operations),
    ("check-and-set", check_and_set_semantics),
    ("wrong-route", check_wrong_route),
    ("not-primary", check_not_primary),
    ("invalid-argument", check_invalid_argument),
    ("too-large", check_too_large),
    ("clock-ahead", check_clock_ahead),
    ("retries", check_retries),
    ("batch", check_batch),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta", required=True, type=lambda s: [a for a in s.split(",") if a], help="meta server addresses, comma-separated")
    parser.add_argument("--table", required=True, help="a table with >= 2 partitions and >= 2 replicas")
    parser.add_argument("--proto", default=tc.DEFAULT_PROTO)
    parser.add_argument("--keys", type=int, default=300, help="keys written by the routing check")
    parser.add_argument("--max-value-bytes", type=int, default=1 << 20, help="the site's [replica] max_value_bytes")
    parser.add_argument("--only", default="", help="run only these checks (comma-separated names)")
    args = parser.parse_args()
    pb, rpc = tc.load_stubs(args.proto)
    site = Site(args, pb, rpc)
    only = set(filter(None, args.only.split(",")))
    failed = 0
    start = time.monotonic()
    for name, check in CHECKS:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            detail = check(site)
            print(f"ok   {name:<17} {detail} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name:<17}\n{traceback.format_exc()}", flush=True)
    ran = len([c for c in CHECKS if not only or c[0] in only])
    print(f"{ran - failed} of {ran} checks passed in {time.monotonic() - start:.1f}s", flush=True)
    site.client.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
