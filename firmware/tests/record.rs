//! A full flash is never silent: fill the queue and check that the frames
//! dropped are reported with their exact count, in a `QueueOverflow` event
//! frame stored right after the frame that caused the drop, and in the next
//! status frame's `dropped`.

mod common;
use common::block_on;

use std::collections::BTreeSet;

use coldchain_firmware::batch::ReadingBatch;
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::record::Recorder;
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::codec::decode_signed;
use coldchain_proto::{Body, ChannelKind, DeviceId, DeviceKey, EventKind, Frame, Measurement};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

/// 4 pages of 1 KiB: a few dozen frames.
type Flash = MockFlashBase<4, 4, 256>;
type Queue = Outbox<Flash, Cache<Uncached, Uncached, Uncached, ()>>;

fn key() -> DeviceKey {
    DeviceKey::from_bytes([0x5A; 32])
}

/// Every frame in the queue, decoded and verified, oldest first.
fn contents(q: &mut Queue, buf: &mut [u8; ENTRY_BUF_LEN]) -> Vec<Frame> {
    let mut out = Vec::new();
    block_on(q.for_each(buf, |_, bytes| {
        out.push(decode_signed::<Frame>(bytes, &key()).expect("a stored frame verifies"));
    }))
    .unwrap();
    out
}

fn overflow_count(f: &Frame) -> u32 {
    match &f.body {
        Body::Events(ev) => ev
            .iter()
            .map(|e| match e.kind {
                EventKind::QueueOverflow { dropped } => dropped,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// A slow uplink takes the oldest frame every third store (as a receiver
/// would), then goes away for 200 stores (an outage: the flash overflows
/// again and again, and reports get dropped in turn), then comes back.
/// After every store: the counts of the reports delivered, plus those still
/// in flash, plus what the queue still holds unreported, equal exactly the
/// frames made that were neither delivered nor are in flash.
#[test]
fn every_frame_dropped_to_a_full_flash_is_reported_with_its_exact_count() {
    let mut q: Queue = Outbox::new(
        Flash::new(WriteCountCheck::Twice, None, true),
        Flash::FULL_FLASH_RANGE,
        Cache::new_uncached(),
    );
    let mut buf = [0u8; ENTRY_BUF_LEN];
    let mut fb = FrameBuilder::new(DeviceId::new("box-9").unwrap(), key(), 1);
    let tb = TimeBase::unsynced();
    let mut rec = Recorder::new();

    let mut made: BTreeSet<u32> = BTreeSet::new();
    let mut reports: BTreeSet<u32> = BTreeSet::new();
    let mut delivered: BTreeSet<u32> = BTreeSet::new();
    let mut delivered_count = 0u32;
    let mut removed_total = 0u32;
    let mut t = 0u64;
    for i in 0..400u32 {
        t += 1000;
        let mut b = ReadingBatch::new();
        for ch in 0..8u8 {
            b.push_reading(
                t,
                ch,
                ChannelKind::Ambient,
                Measurement::Valid(4_000 + i32::from(ch)),
            )
            .unwrap();
        }
        let f = fb.readings(&mut b, &tb).unwrap();
        let st = block_on(rec.store(&mut fb, &tb, t, &mut q, &f, &mut buf)).unwrap();
        assert_eq!(st.frame_ref, f.frame_ref());
        made.insert(f.seq);
        removed_total += st.removed;
        for (r, _) in &st.overflow {
            made.insert(r.seq);
            reports.insert(r.seq);
        }
        if !st.overflow.is_empty() {
            // The report is the newest frame in flash, right after the frame
            // whose store caused the drop.
            let stored = contents(&mut q, &mut buf);
            let last = stored.last().unwrap();
            assert_eq!(last.seq, st.overflow.last().unwrap().0.seq);
            assert_eq!(st.overflow[0].0.seq, f.seq + 1);
            assert!(
                stored.iter().any(|x| x.seq == f.seq),
                "the new frame is kept"
            );
            assert_eq!(overflow_count(last), st.overflow.last().unwrap().1);
        }
        let outage = (100..300).contains(&i);
        if !outage && i % 3 == 0 {
            // The uplink delivers the oldest frame.
            let (r, bytes) = block_on(q.oldest(&mut buf)).unwrap().unwrap();
            let fr: Frame = decode_signed(bytes, &key()).unwrap();
            delivered_count += overflow_count(&fr);
            delivered.insert(r.seq);
            assert!(block_on(q.ack(r, &mut buf)).unwrap());
        }

        let stored = contents(&mut q, &mut buf);
        assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
        let present: BTreeSet<u32> = stored.iter().map(|f| f.seq).collect();
        let lost = made
            .difference(&present)
            .filter(|s| !delivered.contains(s))
            .count() as u32;
        let in_flash: u32 = stored.iter().map(overflow_count).sum();
        assert_eq!(
            delivered_count + in_flash + q.unreported(),
            lost,
            "nothing silent, nothing invented, after seq {}",
            f.seq
        );
        assert_eq!(removed_total, lost, "each frame removed counted once");
    }
    assert!(
        reports.len() >= 5,
        "the flash overflowed {} times",
        reports.len()
    );

    // Drain: everything left reaches the receiver; the counts add up exactly.
    while let Some((r, bytes)) = block_on(q.oldest(&mut buf)).unwrap() {
        let fr: Frame = decode_signed(bytes, &key()).unwrap();
        delivered_count += overflow_count(&fr);
        delivered.insert(r.seq);
        assert!(block_on(q.ack(r, &mut buf)).unwrap());
    }
    assert_eq!(q.unreported(), 0);
    let lost_reports = reports.iter().filter(|s| !delivered.contains(s)).count();
    assert!(
        lost_reports > 0,
        "no report was dropped: the carry is untested"
    );
    let lost = made.difference(&delivered).count() as u32;
    assert_eq!(delivered_count, lost);
    assert!(lost > 0);

    // The next status frame carries the frames dropped since the last one
    // (each once); the one after carries zero.
    assert_eq!(rec.dropped_since_status(), removed_total);
    let s1 = rec.status(&mut fb, &tb, t + 1, 3_600, None, 0);
    let Body::Status(st) = &s1.body else {
        panic!("{s1:?}")
    };
    assert_eq!((st.dropped, st.queued), (removed_total, 0));
    block_on(rec.store(&mut fb, &tb, t + 1, &mut q, &s1, &mut buf)).unwrap();
    let s2 = rec.status(&mut fb, &tb, t + 2, 3_600, None, 1);
    let Body::Status(st2) = &s2.body else {
        panic!("{s2:?}")
    };
    assert_eq!(st2.dropped, 0);
}
