//! Little-endian byte codecs: a growable [`Writer`] and a bounds-checked [`Reader`].
//!
//! Every on-device structure is built and parsed through these two types, never by
//! casting a struct over bytes. A [`Reader`] knows the device offset of its first byte
//! so any parse error names the exact place that is wrong.

use super::FormatError;

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// A name: one length byte then the bytes (names are at most 255 bytes).
    pub fn name(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= super::NAME_MAX);
        self.u8(v.len() as u8).bytes(v)
    }
    /// Pad with zeros up to `len` bytes in total.
    pub fn pad_to(&mut self, len: usize) -> &mut Self {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self
    }
    /// Overwrite 4 bytes at `pos` (used to fill in a checksum field last).
    pub fn patch_u32(&mut self, pos: usize, v: u32) {
        self.buf[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads little-endian fields from a slice; every read is bounds-checked and a
/// short buffer is a [`FormatError::Corrupted`] naming `what` and the device offset.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// `base` is the device offset of `buf[0]`; `what` names the structure for errors.
    pub fn new(buf: &'a [u8], base: u64, what: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            base,
            what,
        }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Device offset of the next byte.
    pub fn device_offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    /// A corruption error at the current position.
    pub fn corrupt(&self, detail: impl std::fmt::Display) -> FormatError {
        FormatError::Corrupted {
            what: format!("{}: {}", self.what, detail),
            device_offset: self.device_offset(),
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(self.corrupt(format_args!(
                "truncated (need {n} bytes, {} left)",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        self.take(n)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        self.arr()
    }
    /// A name written by [`Writer::name`]; empty names and names containing `/` or
    /// NUL are corruption.
    pub fn name(&mut self) -> Result<Vec<u8>, FormatError> {
        let n = self.u8()? as usize;
        let s = self.take(n)?;
        if n == 0 || s.contains(&b'/') || s.contains(&0) || s == b"." || s == b".." {
            return Err(self.corrupt("invalid file name"));
        }
        Ok(s.to_vec())
    }
    /// A count that must fit in the bytes left, each item taking at least `min_item` bytes
    /// (so a corrupted count cannot make the caller allocate gigabytes).
    pub fn count(&mut self, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(self.corrupt(format_args!("count {n} exceeds record")));
        }
        Ok(n)
    }
}

/// crc32c of `data`, seeded with a value derived from `seed` (the record's device
/// offset and epoch), so a valid record copied to the wrong place or left over from
/// an older epoch does not verify.
pub fn crc(seed: u64, data: &[u8]) -> u32 {
    let s = crc32c::crc32c(&seed.to_le_bytes());
    crc32c::crc32c_append(s, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_fields() {
        let mut w = Writer::new();
        w.u8(7)
            .u16(0x1234)
            .u32(0xdead_beef)
            .u64(u64::MAX - 1)
            .i64(-5);
        w.name(b"hello");
        let mut r = Reader::new(&w.buf, 100, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.name().unwrap(), b"hello");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn f8_short_buffer_reports_offset() {
        let mut r = Reader::new(&[1, 2, 3], 4096, "thing");
        r.u8().unwrap();
        match r.u32() {
            Err(FormatError::Corrupted {
                device_offset,
                what,
            }) => {
                assert_eq!(device_offset, 4097);
                assert!(what.contains("thing"), "{what}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn f8_huge_count_is_rejected() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0], 0, "x");
        assert!(r.count(8).is_err());
    }

    #[test]
    fn crc_depends_on_seed() {
        assert_ne!(crc(1, b"abc"), crc(2, b"abc"));
        assert_eq!(crc(1, b"abc"), crc(1, b"abc"));
    }
}
