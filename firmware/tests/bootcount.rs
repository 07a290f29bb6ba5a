//! The boot counter in flash: counts up across reboots, honours an override,
//! and a power cut at any step of an increment never hands out a number twice.

mod common;
use common::block_on;

use coldchain_firmware::bootcount;
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

type Flash = MockFlashBase<2, 4, 256>;
const RANGE: std::ops::Range<u32> = Flash::FULL_FLASH_RANGE;

#[test]
fn counts_from_one_and_an_override_is_counted_on_from() {
    let mut f = Flash::new(WriteCountCheck::Twice, None, true);
    assert_eq!(block_on(bootcount::current(&mut f, RANGE)).unwrap(), None);
    for want in 1..=3 {
        assert_eq!(
            block_on(bootcount::next(&mut f, RANGE, None)).unwrap(),
            want
        );
    }
    assert_eq!(
        block_on(bootcount::next(&mut f, RANGE, Some(10))).unwrap(),
        10
    );
    assert_eq!(block_on(bootcount::next(&mut f, RANGE, None)).unwrap(), 11);
    // Many boots: the map wraps its pages and keeps counting.
    for want in 12..400 {
        assert_eq!(
            block_on(bootcount::next(&mut f, RANGE, None)).unwrap(),
            want
        );
    }
}

#[test]
fn a_power_cut_during_an_increment_never_reuses_a_boot_number() {
    let mut cuts = 0;
    for step in 0..2_000u32 {
        let mut f = Flash::new(WriteCountCheck::Twice, None, true);
        let mut used = Vec::new();
        for _ in 0..5 {
            used.push(block_on(bootcount::next(&mut f, RANGE, None)).unwrap());
        }
        f.bytes_until_shutoff = Some(step);
        let cut = block_on(bootcount::next(&mut f, RANGE, None));
        f.bytes_until_shutoff = None;
        match cut {
            Ok(n) => used.push(n),
            Err(_) => cuts += 1,
        }
        let after = block_on(bootcount::next(&mut f, RANGE, None)).unwrap();
        assert!(
            used.iter().all(|&u| after > u),
            "cut at {step}: boot {after} after {used:?}"
        );
    }
    assert!(cuts > 0, "no cut landed inside an increment");
}
