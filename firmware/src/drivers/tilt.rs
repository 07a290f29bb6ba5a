//! Tilt from an accelerometer (LIS3DH / LIS2DH12 over I2C): the angle of the
//! container from vertical. A dry shipper on its side loses most of its hold
//! time in hours, so tilt matters as much as temperature.

use embedded_hal::i2c::I2c;

/// LIS3DH / LIS2DH12 address with SA0 low.
pub const ADDRESS: u8 = 0x18;
const WHO_AM_I: u8 = 0x0F;
const CTRL_REG1: u8 = 0x20;
const CTRL_REG4: u8 = 0x23;
const OUT_X_L: u8 = 0x28;
/// Register auto-increment on I2C.
const AUTO_INC: u8 = 0x80;
/// WHO_AM_I answer of LIS3DH and LIS2DH12.
pub const ID: u8 = 0x33;

/// cos(d°)·10000 for d = 0..=180.
const COS: [i16; 181] = [
    10000, 9998, 9994, 9986, 9976, 9962, 9945, 9925, 9903, 9877, 9848, 9816, 9781, 9744, 9703,
    9659, 9613, 9563, 9511, 9455, 9397, 9336, 9272, 9205, 9135, 9063, 8988, 8910, 8829, 8746, 8660,
    8572, 8480, 8387, 8290, 8192, 8090, 7986, 7880, 7771, 7660, 7547, 7431, 7314, 7193, 7071, 6947,
    6820, 6691, 6561, 6428, 6293, 6157, 6018, 5878, 5736, 5592, 5446, 5299, 5150, 5000, 4848, 4695,
    4540, 4384, 4226, 4067, 3907, 3746, 3584, 3420, 3256, 3090, 2924, 2756, 2588, 2419, 2250, 2079,
    1908, 1736, 1564, 1392, 1219, 1045, 872, 698, 523, 349, 175, 0, -175, -349, -523, -698, -872,
    -1045, -1219, -1392, -1564, -1736, -1908, -2079, -2250, -2419, -2588, -2756, -2924, -3090,
    -3256, -3420, -3584, -3746, -3907, -4067, -4226, -4384, -4540, -4695, -4848, -5000, -5150,
    -5299, -5446, -5592, -5736, -5878, -6018, -6157, -6293, -6428, -6561, -6691, -6820, -6947,
    -7071, -7193, -7314, -7431, -7547, -7660, -7771, -7880, -7986, -8090, -8192, -8290, -8387,
    -8480, -8572, -8660, -8746, -8829, -8910, -8988, -9063, -9135, -9205, -9272, -9336, -9397,
    -9455, -9511, -9563, -9613, -9659, -9703, -9744, -9781, -9816, -9848, -9877, -9903, -9925,
    -9945, -9962, -9976, -9986, -9994, -9998, -10000,
];

/// Integer square root (floor).
fn isqrt(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let mut x = n;
    let mut y = x.div_ceil(2);
    while y < x {
        x = y;
        y = (x + n / x) / 2;
    }
    x
}

/// Angle between the z axis and the measured gravity vector, whole degrees
/// (0 upright, 90 on its side, 180 upside down); `None` for a zero vector.
pub fn angle_from_vertical(mg: [i32; 3]) -> Option<u8> {
    let [x, y, z] = mg.map(i64::from);
    let n = isqrt((x * x + y * y + z * z) as u64) as i64;
    if n == 0 {
        return None;
    }
    let c = (z * 10_000 / n).clamp(-10_000, 10_000) as i16;
    // COS decreases monotonically: take the degree whose cosine is nearest.
    let mut best = 0usize;
    for (d, &v) in COS.iter().enumerate() {
        if (v - c).unsigned_abs() < (COS[best] - c).unsigned_abs() {
            best = d;
        }
    }
    Some(best as u8)
}

/// An accelerometer in high-resolution mode, ±2 g (1 mg per digit).
#[derive(Debug)]
pub struct Lis3dh<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Lis3dh<I> {
    /// A sensor at `address`.
    pub fn new(i2c: I, address: u8) -> Self {
        Lis3dh { i2c, address }
    }

    /// Checks WHO_AM_I, then sets 10 Hz, x/y/z on, high resolution, ±2 g,
    /// block data update. Returns false if the chip did not identify itself.
    pub fn init(&mut self) -> Result<bool, I::Error> {
        let mut id = [0u8];
        self.i2c.write_read(self.address, &[WHO_AM_I], &mut id)?;
        if id[0] != ID {
            return Ok(false);
        }
        self.i2c.write(self.address, &[CTRL_REG1, 0x27])?;
        self.i2c.write(self.address, &[CTRL_REG4, 0x88])?;
        Ok(true)
    }

    /// Acceleration in milli-g.
    pub fn accel_mg(&mut self) -> Result<[i32; 3], I::Error> {
        let mut b = [0u8; 6];
        self.i2c
            .write_read(self.address, &[OUT_X_L | AUTO_INC], &mut b)?;
        // 12-bit left-justified: shift right 4, 1 mg/digit at ±2 g.
        let v = |l: u8, h: u8| i32::from(i16::from_le_bytes([l, h]) >> 4);
        Ok([v(b[0], b[1]), v(b[2], b[3]), v(b[4], b[5])])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn angles_of_known_vectors() {
        assert_eq!(angle_from_vertical([0, 0, 1000]), Some(0));
        assert_eq!(angle_from_vertical([1000, 0, 0]), Some(90));
        assert_eq!(angle_from_vertical([0, -1000, 0]), Some(90));
        assert_eq!(angle_from_vertical([0, 0, -1000]), Some(180));
        assert_eq!(angle_from_vertical([707, 0, 707]), Some(45));
        assert_eq!(angle_from_vertical([500, 0, 866]), Some(30));
        assert_eq!(angle_from_vertical([0, 0, 0]), None);
        assert_eq!(angle_from_vertical([2047, 2047, 2047]), Some(55));
    }

    #[test]
    fn isqrt_is_floor() {
        for n in [0u64, 1, 2, 3, 4, 15, 16, 17, 1_000_000, u32::MAX as u64] {
            let r = isqrt(n);
            assert!(r * r <= n && (r + 1) * (r + 1) > n, "{n}");
        }
    }
}
