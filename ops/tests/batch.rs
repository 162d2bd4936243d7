//! The batch stream of a real replica server, spoken to raw: every call gets its own answer,
//! refused calls carry what the unary RPC would have said, and nothing a client sends through
//! it stops the server.

mod support;

use std::time::Duration;
use support::{Cluster, Store};
use tandem_client::{Client, ClientOptions};
use tandem_proto::errors::{batch_status, ErrorKind};
use tandem_proto::v1;
use tandem_proto::v1::batch_call::Call;
use tandem_proto::v1::batch_reply::Reply;
use tandem_proto::v1::replica_service_client::ReplicaServiceClient;

fn set(route: &v1::Route, hash_key: &[u8], value: &[u8]) -> Call {
    Call::Write(v1::WriteRequest {
        route: Some(route.clone()),
        hash_key: hash_key.to_vec(),
        op: Some(v1::write_request::Op::Set(v1::SetOp { sort_key: b"s".to_vec(), value: value.to_vec(), ttl_seconds: 0 })),
    })
}

fn get(route: &v1::Route, hash_key: &[u8]) -> Call {
    Call::Get(v1::GetRequest { route: Some(route.clone()), hash_key: hash_key.to_vec(), sort_key: b"s".to_vec() })
}

/// Sends `calls` (numbered from `first_id`) as one message on a fresh stream and collects one
/// reply per call, by id.
async fn exchange(addr: &str, first_id: u64, calls: Vec<Option<Call>>) -> Vec<(u64, Reply)> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = ReplicaServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let expected = calls.len();
    let calls = calls.into_iter().enumerate().map(|(i, call)| v1::BatchCall { id: first_id + i as u64, call }).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(v1::BatchRequest { calls }).await.unwrap();
    let mut stream = client.batch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut replies = Vec::new();
    while replies.len() < expected {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("replies in time").unwrap().expect("stream open");
        replies.extend(msg.replies.into_iter().map(|r| (r.id, r.reply.expect("every reply has a result"))));
    }
    drop(tx);
    // The request stream is closed: the server ends the stream once every call was answered.
    assert!(tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().is_none());
    replies.sort_by_key(|(id, _)| *id);
    replies
}

fn error(reply: &Reply) -> tonic::Status {
    match reply {
        Reply::Error(e) => batch_status(e),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_stream_answers_each_call_and_refuses_bad_ones_with_the_reason() {
    let cluster = Cluster::start(1, Store::Sqlite).await;
    cluster.create_table("t", 1, 1).await;
    let table_id = cluster.client().show_table("t").await.unwrap().table.unwrap().id;
    let route = v1::Route { gpid: Some(v1::Gpid { table_id, partition: 0 }), partition_count: 1 };
    let addr = cluster.replicas[0].addr.clone();
    // The meta may call the partition healthy before the server has opened its replica: a write
    // through the client (which retries) makes sure the primary serves before the raw calls.
    cluster.client().table("t").set(b"warm", b"s", b"up", 0).await.unwrap();

    // Writes first (calls of one message are independent, so a get may overtake a write).
    let replies = exchange(&addr, 1, vec![Some(set(&route, b"a", b"1")), Some(set(&route, b"b", b"2"))]).await;
    assert_eq!(replies.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 2]);
    for (_, r) in &replies {
        assert!(matches!(r, Reply::Write(_)), "{r:?}");
    }

    let bad_route = v1::Route { gpid: Some(v1::Gpid { table_id, partition: 0 }), partition_count: 3 };
    let wrong_route = v1::Route { gpid: Some(v1::Gpid { table_id, partition: 0 }), partition_count: 2 };
    let replies = exchange(
        &addr,
        10,
        vec![
            Some(get(&route, b"a")),
            Some(get(&route, b"nothing")),
            None,
            Some(get(&route, b"")),
            Some(get(&bad_route, b"a")),
            Some(get(&route, b"b")),
            Some(set(&wrong_route, b"a", b"never")),
            // Longer than a stored key's length prefix can hold: refused, not a panic.
            Some(get(&route, &vec![b'h'; 70_000])),
        ],
    )
    .await;
    let found = |r: &Reply| match r {
        Reply::Get(g) => (g.found, g.value.clone()),
        other => panic!("expected a get reply, got {other:?}"),
    };
    assert_eq!(found(&replies[0].1), (true, b"1".to_vec()));
    assert_eq!(found(&replies[1].1), (false, vec![]));
    let e = error(&replies[2].1);
    assert_eq!((ErrorKind::of(&e), e.message()), (Some(ErrorKind::InvalidArgument), "batch call without a request"));
    let e = error(&replies[3].1);
    assert_eq!(ErrorKind::of(&e), Some(ErrorKind::InvalidArgument));
    assert!(e.message().contains("hash key is empty"), "{e:?}");
    let e = error(&replies[4].1);
    assert!(e.message().contains("partition count 3 is not a power of two"), "{e:?}");
    assert_eq!(found(&replies[5].1), (true, b"2".to_vec()));
    // A partition count that is not the table's: its own kind, a code a generic client does not
    // retry, and the count to use.
    let e = error(&replies[6].1);
    assert_eq!((ErrorKind::of(&e), e.code()), (Some(ErrorKind::WrongRoute), tonic::Code::FailedPrecondition), "{e:?}");
    assert!(e.message().contains("has 1 partitions, not 2"), "{e:?}");
    let e = error(&replies[7].1);
    assert_eq!(ErrorKind::of(&e), Some(ErrorKind::InvalidArgument), "{e:?}");
    assert!(e.message().contains("hash key of 70000 bytes exceeds the 1024-byte limit"), "{e:?}");
    // The unary call says the same, with the count in its metadata; a hash key of another
    // partition is a wrong route too.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut unary = ReplicaServiceClient::new(channel);
    let Call::Write(write) = set(&wrong_route, b"a", b"never") else { unreachable!() };
    let e = unary.write(write).await.unwrap_err();
    assert_eq!((ErrorKind::of(&e), e.code(), tandem_proto::errors::partition_count_hint(&e)), (Some(ErrorKind::WrongRoute), tonic::Code::FailedPrecondition, Some(1)), "{e:?}");

    // Prepares from a peer that is no peer: without a configuration, with bytes that are no
    // mutation, and from a "primary" the partition does not know. Each is refused on its own.
    let config = v1::PartitionConfig { gpid: Some(v1::Gpid { table_id, partition: 0 }), ballot: 1, primary: "127.0.0.1:1".into(), ..Default::default() };
    let prepare = |config: Option<v1::PartitionConfig>, mutations: Vec<Vec<u8>>| {
        Some(Call::Prepare(v1::PrepareRequest { config, mutations, last_committed: 0, from: "127.0.0.1:1".into() }))
    };
    let replies = exchange(
        &addr,
        50,
        vec![prepare(None, vec![]), prepare(Some(config.clone()), vec![vec![0xff; 7]]), prepare(Some(config), vec![]), Some(get(&route, b"a"))],
    )
    .await;
    let e = error(&replies[0].1);
    assert!(e.message().contains("prepare without a configuration"), "{e:?}");
    let e = error(&replies[1].1);
    assert_eq!(ErrorKind::of(&e), Some(ErrorKind::InvalidArgument), "{e:?}");
    match &replies[2].1 {
        // The server is the partition's primary: a prepare at an older ballot is stale.
        Reply::Prepare(p) => assert_ne!(p.outcome, v1::prepare_response::Outcome::Ok as i32, "{p:?}"),
        other => panic!("expected a prepare reply, got {other:?}"),
    }
    assert_eq!(found(&replies[3].1), (true, b"1".to_vec()));

    // Over the per-message limit: every call refused with the limit, none served.
    let many = (0..4097).map(|_| Some(set(&route, b"a", b"overwritten"))).collect();
    let replies = exchange(&addr, 100, many).await;
    assert_eq!(replies.len(), 4097);
    for (_, r) in &replies {
        assert!(error(r).message().contains("exceeds the limit of 4096"), "{r:?}");
    }

    // The server still serves, through the client's own batch stream, and "a" kept its value.
    let t = cluster.client().table("t");
    assert_eq!(t.get(b"a", b"s").await.unwrap(), Some(b"1".to_vec()));
}

/// Many concurrent calls through one client: each caller gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_through_one_client_each_get_their_own_answer() {
    let cluster = Cluster::start(3, Store::Sqlite).await;
    cluster.create_table("t", 4, 3).await;
    let t = cluster.client().table("t");
    let mut tasks = Vec::new();
    for i in 0..2000u32 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            t.set(key.as_bytes(), b"", i.to_string().as_bytes(), 0).await.unwrap();
            t.get(key.as_bytes(), b"").await.unwrap()
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), Some(i.to_string().into_bytes()));
    }
}

/// A replica server asked to stop (SIGTERM) stops although a client still holds its batch
/// stream open: a graceful stop must not wait for clients to hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_while_a_client_holds_its_batch_stream() {
    let mut cluster = Cluster::start(1, Store::Sqlite).await;
    cluster.create_table("t", 1, 1).await;
    let client = cluster.client();
    let t = client.table("t");
    t.set(b"k", b"", b"v", 0).await.unwrap();
    assert_eq!(t.get(b"k", b"").await.unwrap(), Some(b"v".to_vec()));

    let child = cluster.replicas[0].child.as_mut().expect("replica server running");
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "a graceful stop exits 0: {exit:?}\n{}", cluster.logs_tail());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not stop within 20 s\n{}", cluster.logs_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.replicas[0].child = None;
    // The client is still alive and says the server is gone rather than hanging.
    let quick = ClientOptions { rpc_timeout: Duration::from_secs(1), request_timeout: Duration::from_secs(2) };
    let other = Client::new(&cluster.meta_addrs(), quick).unwrap();
    assert!(other.table("t").get(b"k", b"").await.is_err());
    drop(client);
}

/// `call_then`, as replica servers send prepares: the reply reaches the function, and so does
/// a failure, from a server that is not there and from one that accepts connections but never
/// answers (by the call's deadline, not the stream's open timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_then_answers_with_the_reply_or_by_the_deadline() {
    use std::time::Instant;
    use tandem_client::batch::BatchConn;
    async fn answer_of(conn: &BatchConn, call: Call, timeout: Duration) -> (Result<Reply, tonic::Status>, Duration) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = Instant::now();
        conn.call_then(call, timeout, move |answer| tx.send(answer).unwrap());
        let answer = tokio::time::timeout(Duration::from_secs(20), rx).await.expect("answered").expect("called once");
        (answer, start.elapsed())
    }
    let stream_client = |addr: &str| {
        let channel = tandem_client::meta_conn::stream_endpoint(addr).unwrap().connect_lazy();
        BatchConn::new(addr, ReplicaServiceClient::new(channel))
    };

    let cluster = Cluster::start(1, Store::Sqlite).await;
    cluster.create_table("t", 1, 1).await;
    let table_id = cluster.client().show_table("t").await.unwrap().table.unwrap().id;
    let route = v1::Route { gpid: Some(v1::Gpid { table_id, partition: 0 }), partition_count: 1 };
    cluster.client().table("t").set(b"a", b"s", b"1", 0).await.unwrap();
    let conn = stream_client(&cluster.replicas[0].addr);
    let (answer, _) = answer_of(&conn, get(&route, b"a"), Duration::from_secs(5)).await;
    match answer.unwrap() {
        Reply::Get(g) => assert_eq!((g.found, g.value), (true, b"1".to_vec())),
        other => panic!("expected a get reply, got {other:?}"),
    }

    // Nobody listens: the stream cannot open.
    let nobody = format!("127.0.0.1:{}", support::free_port());
    let (answer, _) = answer_of(&stream_client(&nobody), get(&route, b"a"), Duration::from_secs(5)).await;
    assert!(answer.unwrap_err().message().contains("could not connect"));

    // Accepts connections, says nothing: the call's own deadline answers it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let (answer, took) = answer_of(&stream_client(&silent_addr), get(&route, b"a"), Duration::from_millis(300)).await;
    let status = answer.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(took >= Duration::from_millis(300), "answered before its deadline: {took:?}");
    held.abort();
}
