//! Operand pairs and their bit encoding.
//!
//! A sample is two operands below `2^max_digits` and their sum. The network
//! reads the sum's width `bits` one position per time step, least significant
//! bit first, so step `t` contains bit `t` of each number.
//!
//! Dimension letters: T = bit positions (time steps), N = samples,
//! H = hidden units.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// The widest sum a `u64` can hold, so the widest `--bits` value.
pub const MAX_BITS: usize = 64;

/// Operand pairs with their sums, all as integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub bits: usize,
    pub x1: Vec<u64>,
    pub x2: Vec<u64>,
    pub y: Vec<u64>,
}

impl Dataset {
    /// Draws `n` pairs uniformly from `[0, 2^max_digits)`, as numpy's
    /// `randint(0, 2**max_digits)` does (with another generator, so the values
    /// differ from numpy's for the same seed).
    pub fn draw(n: usize, max_digits: usize, bits: usize, rng: &mut StdRng) -> Result<Self> {
        check_widths(max_digits, bits)?;
        let high = 1u64 << max_digits;
        let mut x1 = Vec::with_capacity(n);
        let mut x2 = Vec::with_capacity(n);
        for _ in 0..n {
            x1.push(rng.random_range(0..high));
            x2.push(rng.random_range(0..high));
        }
        Self::from_operands(x1, x2, bits)
    }

    /// Draws with a generator seeded by `seed`.
    pub fn draw_seeded(n: usize, max_digits: usize, bits: usize, seed: u64) -> Result<Self> {
        Self::draw(n, max_digits, bits, &mut StdRng::seed_from_u64(seed))
    }

    /// Builds a dataset from given operands; every sum must fit in `bits`.
    pub fn from_operands(x1: Vec<u64>, x2: Vec<u64>, bits: usize) -> Result<Self> {
        if x1.len() != x2.len() {
            bail!("operand lists differ in length: {} and {}", x1.len(), x2.len());
        }
        if bits == 0 || bits > MAX_BITS {
            bail!("invalid bit width {bits}: it must be between 1 and {MAX_BITS}");
        }
        let mut y = Vec::with_capacity(x1.len());
        for (i, (&a, &b)) in x1.iter().zip(&x2).enumerate() {
            let sum = a
                .checked_add(b)
                .filter(|&s| fits(s, bits))
                .ok_or_else(|| anyhow::anyhow!("sample {i}: {a} + {b} does not fit in {bits} bits"))?;
            y.push(sum);
        }
        Ok(Self { bits, x1, x2, y })
    }

    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Input bits `[T, N, 2]` and target bits `[T, N, 1]`, LSB first, float64.
    pub fn tensors(&self, device: Device) -> (Tensor, Tensor) {
        let (t, n) = (self.bits, self.len());
        let mut xs = vec![0f64; t * n * 2];
        let mut ys = vec![0f64; t * n];
        for step in 0..t {
            for i in 0..n {
                xs[(step * n + i) * 2] = bit(self.x1[i], step);
                xs[(step * n + i) * 2 + 1] = bit(self.x2[i], step);
                ys[step * n + i] = bit(self.y[i], step);
            }
        }
        let xs = Tensor::from_slice(&xs).view([t as i64, n as i64, 2]);
        let ys = Tensor::from_slice(&ys).view([t as i64, n as i64, 1]);
        (xs.to_device(device), ys.to_device(device))
    }
}

/// Rejects a `--bits` value outside 2..=MAX_BITS.
pub fn check_bits(bits: usize) -> Result<()> {
    if !(2..=MAX_BITS).contains(&bits) {
        bail!("--bits {bits} is out of range: it must be between 2 and {MAX_BITS}");
    }
    Ok(())
}

/// Rejects operand widths whose sums could overflow the sequence.
pub fn check_widths(max_digits: usize, bits: usize) -> Result<()> {
    check_bits(bits)?;
    if max_digits == 0 || max_digits >= bits {
        bail!(
            "--max-digits {max_digits} must be at least 1 and below --bits {bits}, \
             because the sum of two {max_digits}-bit operands needs {} bits",
            max_digits + 1
        );
    }
    Ok(())
}

fn fits(value: u64, bits: usize) -> bool {
    bits >= 64 || value < (1u64 << bits)
}

fn bit(value: u64, position: usize) -> f64 {
    ((value >> position) & 1) as f64
}

/// Bits of `value`, least significant first, `width` of them.
pub fn encode(value: u64, width: usize) -> Vec<u8> {
    (0..width).map(|i| ((value >> i) & 1) as u8).collect()
}

#[cfg(test)]
/// Inverse of [`encode`]: bits least significant first to an integer.
pub fn decode(bits: &[u8]) -> u64 {
    bits.iter()
        .enumerate()
        .fold(0u64, |acc, (i, &b)| acc | (u64::from(b & 1) << i))
}

/// Bits most significant first, numpy's `unpackbits` order, as a string.
pub fn bit_string(value: u64, width: usize) -> String {
    encode(value, width)
        .iter()
        .rev()
        .map(|&b| if b == 1 { '1' } else { '0' })
        .collect()
}

/// Sums predicted by output probabilities `[T, N]` (LSB first), bit set where
/// the probability exceeds one half, as the notebook's `np.where(p > 0.5, 1, 0)`.
pub fn decode_predictions(probs: &Tensor) -> Vec<u64> {
    let probs = probs.to_device(Device::Cpu).to_kind(Kind::Double);
    let (t, n) = probs.size2().expect("predictions must be [T, N]");
    let values = Vec::<f64>::try_from(probs.contiguous().view([-1])).expect("float64 predictions");
    let mut sums = vec![0u64; n as usize];
    for step in 0..t as usize {
        for (i, sum) in sums.iter_mut().enumerate() {
            if values[step * n as usize + i] > 0.5 {
                *sum |= 1u64 << step;
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_numpy_unpackbits_order() {
        // np.unpackbits(np.array(10, dtype=np.uint8)) == [0 0 0 0 1 0 1 0]
        let mut msb_first = encode(10, 8);
        msb_first.reverse();
        assert_eq!(msb_first, vec![0, 0, 0, 0, 1, 0, 1, 0]);
        assert_eq!(bit_string(10, 8), "00001010");
        assert_eq!(bit_string(255, 8), "11111111");
        assert_eq!(bit_string(1, 8), "00000001");
    }

    #[test]
    fn decode_inverts_encode_for_every_byte() {
        for value in 0u64..256 {
            assert_eq!(decode(&encode(value, 8)), value, "value {value}");
        }
    }

    #[test]
    fn decode_inverts_encode_for_wide_values() {
        let values = [0u64, 1, 0xdead_beef, u64::MAX >> 1, u64::MAX, 1 << 63, 12_345_678_901];
        for width in [16usize, 32, 64] {
            for &v in &values {
                let masked = if width == 64 { v } else { v & ((1u64 << width) - 1) };
                assert_eq!(decode(&encode(masked, width)), masked, "value {v} width {width}");
            }
        }
    }

    #[test]
    fn tensors_hold_bits_lsb_first() {
        let data = Dataset::from_operands(vec![5, 63], vec![3, 63], 8).unwrap();
        assert_eq!(data.y, vec![8, 126]);
        let (xs, ys) = data.tensors(Device::Cpu);
        assert_eq!(xs.size(), vec![8, 2, 2]);
        assert_eq!(ys.size(), vec![8, 2, 1]);
        // 5 = 0b101: steps 0 and 2 set.
        assert_eq!(xs.double_value(&[0, 0, 0]), 1.0);
        assert_eq!(xs.double_value(&[1, 0, 0]), 0.0);
        assert_eq!(xs.double_value(&[2, 0, 0]), 1.0);
        // 8 = 0b1000: only step 3.
        let y0: Vec<f64> = (0..8).map(|t| ys.double_value(&[t, 0, 0])).collect();
        assert_eq!(y0, vec![0., 0., 0., 1., 0., 0., 0., 0.]);
    }

    #[test]
    fn predictions_decode_to_targets() {
        let data = Dataset::draw_seeded(100, 6, 8, 7).unwrap();
        let (_, ys) = data.tensors(Device::Cpu);
        let probs = ys.squeeze_dim(2) * 0.8 + 0.1;
        assert_eq!(decode_predictions(&probs), data.y);
    }

    #[test]
    fn draw_is_seeded_and_in_range() {
        let a = Dataset::draw_seeded(1000, 6, 8, 1).unwrap();
        let b = Dataset::draw_seeded(1000, 6, 8, 1).unwrap();
        assert_eq!(a, b);
        assert!(a.x1.iter().chain(&a.x2).all(|&v| v < 64));
        assert!(a.x1.iter().any(|&v| v == 63), "upper end is reachable");
        let wide = Dataset::draw_seeded(100, 63, 64, 1).unwrap();
        assert!(wide.y.iter().any(|&v| v >= 1 << 62));
    }

    #[test]
    fn widths_reject_overflowing_sums() {
        assert!(check_widths(8, 8).is_err());
        assert!(check_widths(0, 8).is_err());
        assert!(check_widths(6, 65).is_err());
        assert!(check_widths(7, 8).is_ok());
        assert!(check_bits(1).is_err());
        assert!(check_bits(65).is_err());
        assert!(check_bits(64).is_ok());
        assert!(Dataset::from_operands(vec![200], vec![100], 8).is_err());
    }
}
