//! Reading the descriptor's bit fields: `f(n)` and `ns(n)` (§A.8.1).

use super::DescriptorError;

/// A reader of bits, most significant first; every read past the end is [`TooShort`].
///
/// [`TooShort`]: DescriptorError::TooShort
pub(super) struct Bits<'a> {
    data: &'a [u8],
    /// The byte being read, at most `data.len()`.
    byte: usize,
    /// The next bit in it, 0..=7 from the most significant.
    bit: u8,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            byte: 0,
            bit: 0,
        }
    }

    pub(super) fn bit(&mut self) -> Result<bool, DescriptorError> {
        let b = self.data.get(self.byte).ok_or(DescriptorError::TooShort)?;
        let v = b >> (7 - self.bit) & 1;
        if self.bit == 7 {
            (self.byte, self.bit) = (self.byte + 1, 0);
        } else {
            self.bit += 1;
        }
        Ok(v == 1)
    }

    /// `f(n)`, `n` at most 32.
    pub(super) fn bits(&mut self, n: u32) -> Result<u32, DescriptorError> {
        (0..n).try_fold(0, |v: u32, _| Ok(v << 1 | u32::from(self.bit()?)))
    }

    /// `ns(n)`: a value below `n` in one bit fewer than `n` needs for its small values, one
    /// more bit for the others (0..=4 of n = 5: 00, 01, 10, 110, 111). No bits for n of 0 or 1.
    pub(super) fn ns(&mut self, n: u8) -> Result<u8, DescriptorError> {
        if n <= 1 {
            return Ok(0);
        }
        let n = u32::from(n);
        // n's bit length, 2..=8; n lies in [2^(w-1), 2^w).
        let w = u32::BITS - n.leading_zeros();
        // The count of short codes, 1..=2^(w-1).
        let m = (1 << w) - n;
        let v = self.bits(w - 1)?;
        if v < m {
            return Ok(v as u8);
        }
        let extra = self.bits(1)?;
        // At most n - 1.
        Ok(((v << 1) - m + extra) as u8)
    }
}
