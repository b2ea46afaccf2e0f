//! Data-packet forwarding rules (LiveKit protocol §3.11) with the project's own client:
//! destinations are honoured, nothing is echoed to the sender, the sender's identity and
//! sid are overwritten by the server (forgeries do not survive), and reliable packets keep
//! their order and sequence numbers.

use pylon_testkit::livekit_protocol as lk;
use pylon_testkit::{user_packet, DataKind, ReceivedData, Server};

fn with_payload<'a>(data: &'a [ReceivedData], payload: &[u8]) -> Vec<&'a ReceivedData> {
    data.iter().filter(|d| d.payload() == payload).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The inner UserPacket sender fields are deprecated but older SDKs still read them.
#[allow(deprecated)]
async fn data_packets_follow_livekit_forwarding_rules() {
    pylon_testkit::init_test_logging();
    let server = Server::start(env!("CARGO_BIN_EXE_pylon"), "data_rules")
        .await
        .expect("server starts");
    let mut a = server.client("data", "a").await.expect("a joins");
    let mut b = server.client("data", "b").await.expect("b joins");
    let mut c = server.client("data", "c").await.expect("c joins");
    a.connect_publisher().await.expect("a's publisher connection");
    let a_sid = a.sid().to_string();

    // A reliable packet for b only, with a forged sender identity and sid.
    let mut forged = user_packet(b"for-b", &["b"]);
    forged.participant_identity = "c".into();
    forged.participant_sid = "PA_forgedsender".into();
    if let Some(lk::data_packet::Value::User(u)) = forged.value.as_mut() {
        u.participant_identity = "c".into();
        u.participant_sid = "PA_forgedsender".into();
    }
    a.send_data(DataKind::Reliable, &forged).await.expect("send");
    // A lossy packet for everyone.
    a.send_data(DataKind::Lossy, &user_packet(b"broadcast", &[]))
        .await
        .expect("send");
    // A packet for nobody who is here.
    a.send_data(DataKind::Reliable, &user_packet(b"for-nobody", &["zed"]))
        .await
        .expect("send");
    // Ordered reliable packets with the client's sequence numbers.
    for i in 1..=50u32 {
        let mut p = user_packet(format!("seq-{i}").as_bytes(), &[]);
        p.sequence = i;
        a.send_data(DataKind::Reliable, &p).await.expect("send");
    }

    for x in [&mut b, &mut c] {
        x.wait_until("the broadcast and the 50 ordered packets", |o| {
            o.data_with_payload(b"broadcast").count() == 1 && o.data_with_payload(b"seq-50").count() == 1
        })
        .await
        .expect("data arrives");
    }
    // Anything still in flight would arrive within this settle.
    for x in [&mut a, &mut b, &mut c] {
        x.settle(std::time::Duration::from_millis(300)).await;
    }

    let got_b = b.observed().data.clone();
    let got_c = c.observed().data.clone();
    let got_a = a.observed().data.clone();

    let for_b = with_payload(&got_b, b"for-b");
    assert_eq!(for_b.len(), 1, "b gets the packet addressed to it exactly once");
    let p = &for_b[0];
    assert_eq!(p.kind, DataKind::Reliable);
    assert_eq!(p.packet.participant_identity, "a", "forged identity survived");
    assert_eq!(
        p.user().unwrap().participant_identity,
        "a",
        "forged inner identity survived"
    );
    assert_eq!(p.user().unwrap().participant_sid, a_sid, "forged sid survived");
    assert!(
        with_payload(&got_c, b"for-b").is_empty(),
        "c got a packet addressed to b"
    );

    for (who, got) in [("b", &got_b), ("c", &got_c)] {
        let bc = with_payload(got, b"broadcast");
        assert_eq!(bc.len(), 1, "{who} gets the lossy broadcast once");
        assert_eq!(
            bc[0].kind,
            DataKind::Lossy,
            "{who}: lossy packet came on the reliable channel"
        );
        assert_eq!(bc[0].packet.participant_identity, "a");
        assert!(with_payload(got, b"for-nobody").is_empty());

        let ordered: Vec<(Vec<u8>, u32)> = got
            .iter()
            .filter(|d| d.payload().starts_with(b"seq-"))
            .map(|d| (d.payload().to_vec(), d.packet.sequence))
            .collect();
        let expected: Vec<(Vec<u8>, u32)> = (1..=50u32)
            .map(|i| (format!("seq-{i}").into_bytes(), i))
            .collect();
        assert_eq!(
            ordered, expected,
            "{who}: reliable packets reordered or renumbered"
        );
    }
    assert!(got_a.is_empty(), "the sender got its own packets back: {got_a:?}");
}
