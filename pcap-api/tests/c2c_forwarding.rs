//! c2c insight through the merged stream: name records reach the client
//! ahead of the packets that need them, and packets keep their comments.

use std::time::Duration;

use pcap_api::{
    fanout::{AgentMessage, FromAgent},
    merge::Merger,
    session::{GlobalLimits, Session},
    stop::Stop,
};
use pcap_proto::packets::Packet;
use pcap_proto::unix_now_ns;
use pcap_proto::v1::{NameRecord, NameRecords, Packets, capture_response::Payload};
use tokio::sync::mpsc;

#[tokio::test]
async fn names_go_before_the_packets_that_follow_them() {
    let (client, mut responses) = mpsc::channel(64);
    let (to_session, from_agents) = mpsc::channel(64);
    let merger = Merger::new(Duration::from_millis(200), 1 << 20);
    let session = Session::new(client, Stop::default(), merger, GlobalLimits::default(), 1);
    let task = tokio::spawn(session.run(from_agents));

    let now = unix_now_ns();
    let packet = |n: u8, comment: Option<&str>| Packet {
        timestamp_ns: now + u64::from(n),
        original_length: 1,
        data: vec![n],
        comment: comment.map(str::to_owned),
        ..Packet::default()
    };
    let comment = "c2c: tag 0x0001 src app appA (guid-a)";
    for body in [
        Payload::Packets(Packets::from_packets(0, &[packet(1, None)])),
        Payload::Names(NameRecords {
            origin: 0,
            records: vec![NameRecord {
                address: vec![10, 255, 77, 3],
                names: vec!["appA".to_owned()],
            }],
        }),
        Payload::Packets(Packets::from_packets(0, &[packet(2, Some(comment))])),
    ] {
        to_session
            .send(AgentMessage {
                origin: 0,
                body: FromAgent::checked(body).unwrap(),
            })
            .await
            .unwrap();
    }
    drop(to_session);
    task.await.unwrap();

    let mut seen = Vec::new();
    while let Ok(response) = responses.try_recv() {
        match response.unwrap().payload.unwrap() {
            Payload::Names(names) => seen.push(format!("names {}", names.records[0].names[0])),
            Payload::Packets(batch) => seen.extend(batch.packets().unwrap().iter().map(|p| {
                format!(
                    "packet {} {}",
                    p.data[0],
                    p.comment.as_deref().unwrap_or("-")
                )
            })),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            "names appA".to_owned(),
            "packet 1 -".to_owned(),
            format!("packet 2 {comment}"),
        ]
    );
}
