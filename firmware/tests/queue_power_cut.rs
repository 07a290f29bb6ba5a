//! The flash queue under power cuts: the power is cut at every step of a
//! script of pushes and acks (sequential-storage's mock flash stops after a
//! given number of byte writes or page erases). After each cut the device
//! "reboots" (the queue is reopened on the same flash) and we check:
//!
//! * no frame whose push completed, and that was not acknowledged, is lost;
//! * every frame read back is byte-identical to one that was pushed and
//!   verifies with the device key (no corruption);
//! * frames come back oldest first, each once;
//! * a frame whose ack completed never comes back;
//! * the queue keeps working after the reboot.

mod common;
use common::block_on;

use std::collections::BTreeMap;

use coldchain_firmware::batch::{ReadingBatch, SignedFrame};
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::codec::decode_signed;
use coldchain_proto::{ChannelKind, DeviceId, DeviceKey, Frame, FrameRef, Measurement};
use sequential_storage::cache::Cache;
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

/// 4 pages of 1 KiB, 4-byte words.
type Flash = MockFlashBase<4, 4, 256>;
const RANGE: std::ops::Range<u32> = Flash::FULL_FLASH_RANGE;

fn key() -> DeviceKey {
    DeviceKey::from_bytes([0x5A; 32])
}

fn frames(n: usize) -> Vec<SignedFrame> {
    let mut fb = FrameBuilder::new(DeviceId::new("cut-0001").unwrap(), key(), 7);
    let tb = TimeBase::unsynced();
    (0..n)
        .map(|i| {
            let mut b = ReadingBatch::new();
            // Varying sizes: 1 to 6 readings.
            for k in 0..(i % 6 + 1) {
                b.push_reading(
                    (i * 1000 + k) as u64,
                    k as u8,
                    ChannelKind::Rtd,
                    Measurement::Valid(-190_000 + i as i32),
                )
                .unwrap();
            }
            let f = fb.readings(&mut b, &tb).unwrap();
            fb.sign(&f).unwrap()
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Push(usize),
    Ack(usize),
}

/// Pushes and acks that fill, wrap and drain the pages.
fn script() -> Vec<Op> {
    let mut ops = Vec::new();
    let mut next_ack = 0;
    for i in 0..24 {
        ops.push(Op::Push(i));
        if i % 3 == 2 {
            ops.push(Op::Ack(next_ack));
            ops.push(Op::Ack(next_ack + 1));
            next_ack += 2;
        }
    }
    ops
}

struct Outcome {
    /// Pushed and not acked: must be there.
    must: BTreeMap<usize, ()>,
    /// Acked: must not be there.
    gone: Vec<usize>,
    /// The operation cut short, if any.
    cut: Option<Op>,
    flash: Flash,
}

fn run(cut_after: Option<u32>, all: &[SignedFrame]) -> Outcome {
    let flash = Flash::new(WriteCountCheck::Twice, cut_after, true);
    let mut q = Outbox::new(flash, RANGE, Cache::new_uncached());
    let mut buf = [0u8; ENTRY_BUF_LEN];
    let mut must = BTreeMap::new();
    let mut gone = Vec::new();
    let mut cut = None;
    for op in script() {
        let ok = match op {
            Op::Push(i) => block_on(q.push(&all[i], &mut buf)).is_ok(),
            Op::Ack(i) => block_on(q.ack(all[i].frame_ref, &mut buf)).is_ok(),
        };
        if !ok {
            // Cut during this operation: a push may or may not have landed,
            // an ack may or may not have removed its frame (a resend is safe:
            // receivers deduplicate by (device, boot, seq)).
            if let Op::Ack(i) = op {
                must.remove(&i);
            }
            cut = Some(op);
            break;
        }
        match op {
            Op::Push(i) => {
                must.insert(i, ());
            }
            Op::Ack(i) => {
                must.remove(&i);
                gone.push(i);
            }
        }
    }
    assert_eq!(q.take_dropped(), 0, "the script never fills the queue");
    Outcome {
        must,
        gone,
        cut,
        flash: q.into_flash(),
    }
}

fn index_of(all: &[SignedFrame], r: FrameRef) -> usize {
    all.iter()
        .position(|f| f.frame_ref == r)
        .expect("a frame that was never pushed")
}

#[test]
fn a_power_cut_at_every_step_loses_no_stored_frame_and_corrupts_none() {
    let all = frames(24);
    // The uncut run tells how many flash byte-steps the script takes.
    let full = run(None, &all);
    assert!(full.cut.is_none());
    let mut cuts = 0;
    let mut step = 0u32;
    loop {
        let o = run(Some(step), &all);
        let Some(cut_op) = o.cut else {
            break;
        };
        cuts += 1;
        // Reboot: reopen the queue on what the flash holds now.
        let mut flash = o.flash;
        flash.bytes_until_shutoff = None;
        let mut q = Outbox::new(flash, RANGE, Cache::new_uncached());
        let mut buf = [0u8; ENTRY_BUF_LEN];
        let mut seen = Vec::new();
        while let Some((r, bytes)) =
            block_on(q.oldest(&mut buf)).expect("queue readable after a cut")
        {
            let i = index_of(&all, r);
            assert_eq!(
                bytes,
                &all[i].bytes[..],
                "cut at {step} ({cut_op:?}): frame {i} corrupted"
            );
            let f: Frame = decode_signed(bytes, &key()).expect("stored frame verifies");
            assert_eq!(f.frame_ref(), r);
            seen.push(i);
            assert!(block_on(q.ack(r, &mut buf)).unwrap());
        }
        for &i in o.must.keys() {
            assert!(
                seen.contains(&i),
                "cut at {step} ({cut_op:?}): stored frame {i} lost; saw {seen:?}"
            );
        }
        for &i in &o.gone {
            assert!(
                !seen.contains(&i),
                "cut at {step} ({cut_op:?}): acked frame {i} came back"
            );
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            seen, sorted,
            "cut at {step}: not oldest first, or a duplicate"
        );
        // Still works after the reboot.
        block_on(q.push(&all[0], &mut buf)).unwrap();
        assert_eq!(
            block_on(q.oldest(&mut buf)).unwrap().unwrap().0,
            all[0].frame_ref
        );
        // Every 3rd byte-step keeps the test fast in debug builds while still
        // landing inside every write of headers, data and page markers.
        step += 3;
    }
    assert!(
        cuts > 100,
        "the script should be cut at many points, was cut {cuts} times"
    );
}

#[test]
fn a_full_queue_drops_the_oldest_and_counts_them() {
    let all = frames(80);
    let flash = Flash::new(WriteCountCheck::Twice, None, true);
    let mut q = Outbox::new(flash, RANGE, Cache::new_uncached());
    let mut buf = [0u8; ENTRY_BUF_LEN];
    for f in &all {
        block_on(q.push(f, &mut buf)).unwrap();
    }
    let dropped = q.take_dropped();
    assert!(dropped > 0, "80 frames do not fit in 4 KiB");
    assert_eq!(q.take_dropped(), 0, "the count resets once taken");
    let left = block_on(q.len(&mut buf)).unwrap();
    assert_eq!(left + dropped, 80, "every frame is either kept or counted");
    // The survivors are the newest, oldest first.
    let (first, _) = block_on(q.oldest(&mut buf)).unwrap().unwrap();
    assert_eq!(first, all[dropped as usize].frame_ref);
}

#[test]
fn frames_survive_a_reboot_and_replay_oldest_first() {
    let all = frames(5);
    let flash = Flash::new(WriteCountCheck::Twice, None, true);
    let mut q = Outbox::new(flash, RANGE, Cache::new_uncached());
    let mut buf = [0u8; ENTRY_BUF_LEN];
    for f in &all {
        block_on(q.push(f, &mut buf)).unwrap();
    }
    assert!(block_on(q.ack(all[0].frame_ref, &mut buf)).unwrap());
    assert!(
        !block_on(q.ack(all[0].frame_ref, &mut buf)).unwrap(),
        "duplicate ack"
    );
    let mut q = Outbox::new(q.into_flash(), RANGE, Cache::new_uncached());
    let mut order = Vec::new();
    while let Some((r, _)) = block_on(q.oldest(&mut buf)).unwrap() {
        order.push(r.seq);
        block_on(q.ack(r, &mut buf)).unwrap();
    }
    assert_eq!(order, [1, 2, 3, 4]);
}
