//! CRC-32C (Castagnoli), the checksum of TFRecord framing, and TensorFlow's masking of it.
//!
//! Reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF (RFC 3720 §B.4).
//! A byte-at-a-time table is plenty: event files hold a few kilobytes per logging step.

/// Reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// TensorFlow's mask constant (`kMaskDelta` in `tensorflow/core/lib/hash/crc32c.h`).
const MASK_DELTA: u32 = 0xA282_EAD8;

/// `TABLE[b]` is the CRC register after shifting the byte `b` through it.
static TABLE: [u32; 256] = make_table();

const fn make_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ byte as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masked CRC: rotate right by 15 bits, then add a constant (wrapping). Masking
/// keeps a CRC stored next to the data it covers from looking like valid data itself.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// `mask(crc32c(data))`, the value TFRecord framing stores.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask(crc32c(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers: the standard check value, and RFC 3720 §B.4's 32-byte vectors.
    #[test]
    fn known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
    }

    /// `(crc >> 15) | (crc << 17)` is a right rotation by 15; the addition wraps.
    #[test]
    #[allow(clippy::manual_rotate, reason = "spells out TensorFlow's formula to check `mask` against it")]
    fn mask_matches_tensorflow_formula_and_inverts() {
        for crc in [0u32, 1, 0xE306_9283, 0xFFFF_FFFF, 0x8000_0000] {
            let expected = ((crc >> 15) | (crc << 17)).wrapping_add(0xA282_EAD8);
            assert_eq!(mask(crc), expected);
            assert_eq!(unmask(mask(crc)), crc);
        }
    }
}
