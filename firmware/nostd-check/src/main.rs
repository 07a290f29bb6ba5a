//! A freestanding binary that links coldchain-firmware: proof that the
//! firmware and everything it depends on build without `std`.
#![no_std]
#![no_main]

use coldchain_firmware::batch::ReadingBatch;
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::{ChannelKind, DeviceId, DeviceKey, Measurement};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

fn exercise() -> usize {
    let Ok(id) = DeviceId::new("nostd-0001") else {
        return 0;
    };
    let mut fb = FrameBuilder::new(id, DeviceKey::from_bytes([1; 32]), 1);
    let tb = TimeBase::unsynced();
    let mut b = ReadingBatch::new();
    let v = core::hint::black_box(-196_000);
    let _ = b.push_reading(0, 0, ChannelKind::Rtd, Measurement::Valid(v));
    match fb.readings(&mut b, &tb).map(|f| fb.sign(&f)) {
        Some(Ok(s)) => s.bytes.len(),
        _ => 0,
    }
}

/// The entry point, in place of the C runtime's. Never run: the check is that it links.
// SAFETY: `no_mangle` exports `_start`; nothing else in this image defines it
// (the C start files are left out by build.rs).
#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    core::hint::black_box(exercise());
    loop {}
}

/// The host's precompiled `core` is built for unwinding and names this symbol
/// in its unwind tables; with `panic = "abort"` it is never called. A
/// bare-metal target's `core` does not need it.
// SAFETY: exports one symbol that no other object in this image defines.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
