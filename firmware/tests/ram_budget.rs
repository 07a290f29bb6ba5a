//! Static RAM of the firmware's buffers and queue state, measured with
//! `size_of` on the host (x86_64: pointers and usize are 8 bytes, so this is
//! an upper bound for a 32-bit MCU). Run with `--nocapture` to see the table.
//! The budget: well inside a 64 KiB RAM microcontroller.

use core::mem::size_of;

use coldchain_firmware::batch::{EventBatch, ReadingBatch, SignedFrame};
use coldchain_firmware::queue::{ENTRY_BUF_LEN, MAX_ENTRY_LEN, Outbox};
use coldchain_firmware::sampler::Sampler;
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::codec::MAX_SIGNED_LEN;
use coldchain_proto::serial;
use coldchain_proto::{Downlink, Frame};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::mock_flash::MockFlashBase;

type Q = Outbox<MockFlashBase<4, 4, 256>, Cache<Uncached, Uncached, Uncached, ()>>;

#[test]
fn buffers_and_queue_fit_a_64k_mcu_with_room_to_spare() {
    let flash = size_of::<MockFlashBase<4, 4, 256>>();
    let rows: [(&str, usize); 15] = [
        ("Sampler (8 channels)", size_of::<Sampler>()),
        ("ReadingBatch (32 readings)", size_of::<ReadingBatch>()),
        ("EventBatch (16 events)", size_of::<EventBatch>()),
        ("TimeBase", size_of::<TimeBase>()),
        ("FrameBuilder", size_of::<FrameBuilder>()),
        ("Frame being sealed", size_of::<Frame>()),
        ("SignedFrame", size_of::<SignedFrame>()),
        ("sign scratch [MAX_SIGNED_LEN] (stack)", MAX_SIGNED_LEN),
        ("queue entry buffer [ENTRY_BUF_LEN]", ENTRY_BUF_LEN),
        ("queue push scratch [MAX_ENTRY_LEN] (stack)", MAX_ENTRY_LEN),
        (
            "Outbox state (minus the mock flash handle)",
            size_of::<Q>() - flash,
        ),
        (
            "SerialUplink (decoder, rx chunk, state)",
            size_of::<coldchain_firmware::uplink::serial::SerialUplink>(),
        ),
        ("serial encode buffer (stack)", serial::MAX_FRAME_LEN),
        (
            "MqttUplink (rx buffer, topics, state)",
            size_of::<coldchain_firmware::uplink::mqtt::MqttUplink>(),
        ),
        (
            "MQTT poll scratch (stack: packet out, packet in, builder, SUBSCRIBE + online out)",
            ENTRY_BUF_LEN + 128 + coldchain_firmware::uplink::mqtt::RX_MAX + 1024 + 320 + 8,
        ),
    ];
    let downlink = size_of::<Downlink>();
    let mut total = downlink;
    println!("{:<48} {:>6}", "buffer", "bytes");
    for (name, n) in rows {
        println!("{name:<48} {n:>6}");
        total += n;
    }
    println!("{:<48} {downlink:>6}", "Downlink being decoded");
    println!("{:<48} {total:>6}", "TOTAL");
    assert!(
        total <= 16 * 1024,
        "firmware buffers take {total} bytes: more than a quarter of a 64 KiB MCU"
    );
}
