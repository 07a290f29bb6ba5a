//! CRC-8 checks of the bus protocols.

/// Dallas/Maxim 1-Wire CRC-8: x^8+x^5+x^4+1, reflected (0x8C), initial 0.
pub fn onewire(data: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &b in data {
        let mut x = b;
        for _ in 0..8 {
            let mix = (crc ^ x) & 1;
            crc >>= 1;
            if mix != 0 {
                crc ^= 0x8C;
            }
            x >>= 1;
        }
    }
    crc
}

/// Sensirion CRC-8: polynomial 0x31, initial 0xFF, not reflected.
pub fn sensirion(data: &[u8]) -> u8 {
    let mut crc = 0xFFu8;
    for &b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onewire_vectors_from_domain_md() {
        assert_eq!(onewire(&[0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00]), 0xA2);
        assert_eq!(
            onewire(&[0x50, 0x05, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10]),
            0x1C
        );
        assert_eq!(
            onewire(&[0x70, 0x01, 0x4B, 0x46, 0x7F, 0xFF, 0x10, 0x10]),
            0xE1
        );
        assert_eq!(onewire(b"123456789"), 0xA1);
        // A whole block including its CRC checks to zero.
        assert_eq!(
            onewire(&[0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00, 0xA2]),
            0
        );
    }

    #[test]
    fn sensirion_datasheet_vector() {
        // SHT4x datasheet: CRC of 0xBEEF is 0x92.
        assert_eq!(sensirion(&[0xBE, 0xEF]), 0x92);
    }
}
