//! H.264 Annex-B tools: NAL unit splitting, IDR detection, SPS profile reading and
//! access-unit assembly.
//!
//! Everything here takes arbitrary bytes (from an encoder, a file or the network) and never
//! panics: malformed input yields fewer NAL units, `None` or an empty result, never a crash.
//!
//! Access units are delimited the way ITU-T H.264 §7.4.1.2.3 says a new primary picture
//! begins: an access-unit delimiter (type 9), SPS (7), PPS (8), SEI (6) or types 14–18 after
//! the picture's first slice, or a slice whose `first_mb_in_slice` is 0. Several slices of one
//! picture (x264 `tune=zerolatency` makes two per frame, hardware encoders make several) stay in
//! one access unit.

/// NAL unit types this crate cares about (ITU-T H.264 Table 7-1).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
    /// Coded slice data partition A.
    pub const SLICE_DPA: u8 = 2;
    /// Coded slice data partition C (last VCL partition type).
    pub const SLICE_DPC: u8 = 4;
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access-unit delimiter.
    pub const AUD: u8 = 9;
    /// End of sequence.
    pub const END_OF_SEQUENCE: u8 = 10;
    /// End of stream.
    pub const END_OF_STREAM: u8 = 11;
    /// Filler data.
    pub const FILLER: u8 = 12;
}

/// One NAL unit found in an Annex-B stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nal<'a> {
    /// Offset in the stream of the start code (3 or 4 bytes) that precedes the unit.
    pub start_code_offset: usize,
    /// The NAL unit itself: header byte first, no start code, no trailing zero bytes.
    pub data: &'a [u8],
}

impl Nal<'_> {
    /// `nal_unit_type` (low five bits of the header), or `None` for an empty unit.
    pub fn nal_type(&self) -> Option<u8> {
        self.data.first().map(|h| h & 0x1f)
    }

    /// Whether this is a slice of a coded picture (types 1 to 5).
    pub fn is_vcl(&self) -> bool {
        matches!(self.nal_type(), Some(t) if (nal_type::SLICE..=nal_type::IDR).contains(&t))
    }

    /// `first_mb_in_slice` of a slice NAL unit (types 1, 2 and 5), `None` for anything else
    /// or when the header is cut short.
    pub fn first_mb_in_slice(&self) -> Option<u32> {
        match self.nal_type()? {
            nal_type::SLICE | nal_type::SLICE_DPA | nal_type::IDR => {
                let mut bits = RbspBits::new(self.data.get(1..)?);
                bits.read_ue()
            }
            _ => None,
        }
    }
}

/// Iterator over the NAL units of an Annex-B byte stream; see [`nal_units`].
#[derive(Debug, Clone)]
pub struct NalUnits<'a> {
    stream: &'a [u8],
    /// Offset of the next start code to read, if any.
    next: Option<(usize, usize)>,
}

/// Finds the next start code (`00 00 01`) at or after `from`: returns the offset of its first
/// byte (including a leading zero of a four-byte code) and the offset just after it.
fn find_start_code(stream: &[u8], from: usize) -> Option<(usize, usize)> {
    let tail = stream.get(from..)?;
    let pos = tail.windows(3).position(|w| w == [0, 0, 1])?;
    let three = from + pos;
    let begin = if three > from && stream.get(three - 1) == Some(&0) {
        three - 1
    } else {
        three
    };
    Some((begin, three + 3))
}

/// Splits an Annex-B byte stream into NAL units. Bytes before the first start code are
/// ignored; empty units (two start codes in a row) are skipped.
pub fn nal_units(stream: &[u8]) -> NalUnits<'_> {
    NalUnits {
        stream,
        next: find_start_code(stream, 0),
    }
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Nal<'a>;

    fn next(&mut self) -> Option<Nal<'a>> {
        loop {
            let (start_code_offset, payload) = self.next?;
            let following = find_start_code(self.stream, payload);
            let end = following.map_or(self.stream.len(), |(begin, _)| begin);
            self.next = following;
            let mut data = self.stream.get(payload..end).unwrap_or_default();
            while let [rest @ .., 0] = data {
                data = rest;
            }
            if !data.is_empty() {
                return Some(Nal {
                    start_code_offset,
                    data,
                });
            }
        }
    }
}

/// Whether the bytes hold an IDR slice (NAL type 5).
pub fn contains_idr(stream: &[u8]) -> bool {
    nal_units(stream).any(|n| n.nal_type() == Some(nal_type::IDR))
}

/// Profile, constraint flags and level read from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpsProfile {
    /// `profile_idc`: 66 baseline, 77 main, 100 high.
    pub profile_idc: u8,
    /// `constraint_set0_flag` … `constraint_set5_flag` and the reserved bits, as one byte.
    pub constraint_flags: u8,
    /// `level_idc`: ten times the level (31 is level 3.1).
    pub level_idc: u8,
}

impl SpsProfile {
    /// Constrained baseline: profile 66 with `constraint_set1_flag`.
    pub fn is_constrained_baseline(&self) -> bool {
        self.profile_idc == 66 && self.constraint_flags & 0x40 != 0
    }

    /// High profile (100).
    pub fn is_high(&self) -> bool {
        self.profile_idc == 100
    }
}

/// Reads the profile of the first SPS in the stream.
pub fn sps_profile(stream: &[u8]) -> Option<SpsProfile> {
    let sps = nal_units(stream).find(|n| n.nal_type() == Some(nal_type::SPS))?;
    let mut bits = RbspBits::new(sps.data.get(1..)?);
    let profile_idc = bits.read_bits(8)? as u8;
    let constraint_flags = bits.read_bits(8)? as u8;
    let level_idc = bits.read_bits(8)? as u8;
    Some(SpsProfile {
        profile_idc,
        constraint_flags,
        level_idc,
    })
}

/// A bit reader over RBSP bytes that removes emulation-prevention bytes (`00 00 03`).
#[derive(Debug)]
struct RbspBits<'a> {
    bytes: &'a [u8],
    index: usize,
    zeros: u32,
    current: u8,
    bits_left: u32,
}

impl<'a> RbspBits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            index: 0,
            zeros: 0,
            current: 0,
            bits_left: 0,
        }
    }

    fn read_bit(&mut self) -> Option<u32> {
        if self.bits_left == 0 {
            let mut byte = *self.bytes.get(self.index)?;
            self.index += 1;
            if self.zeros >= 2 && byte == 3 {
                byte = *self.bytes.get(self.index)?;
                self.index += 1;
                self.zeros = 0;
            }
            self.zeros = if byte == 0 { self.zeros + 1 } else { 0 };
            self.current = byte;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Some(u32::from((self.current >> self.bits_left) & 1))
    }

    fn read_bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.read_bit()?;
        }
        Some(v)
    }

    /// Exp-Golomb unsigned; `None` past the end or beyond 32 bits.
    fn read_ue(&mut self) -> Option<u32> {
        let mut leading = 0u32;
        while self.read_bit()? == 0 {
            leading += 1;
            if leading > 31 {
                return None;
            }
        }
        let suffix = self.read_bits(leading)?;
        let value = (1u64 << leading) - 1 + u64::from(suffix);
        u32::try_from(value).ok()
    }
}

/// Whether `nal` begins a new access unit, given that the unit being built already holds a
/// slice of a picture (H.264 §7.4.1.2.3, with `first_mb_in_slice == 0` standing for "first
/// slice of a new primary picture": arbitrary slice order is not used by any encoder we drive).
fn starts_new_access_unit(nal: &Nal<'_>) -> bool {
    match nal.nal_type() {
        Some(nal_type::AUD | nal_type::SEI | nal_type::SPS | nal_type::PPS) => true,
        Some(14..=18) => true,
        Some(nal_type::SLICE | nal_type::SLICE_DPA | nal_type::IDR) => {
            nal.first_mb_in_slice() == Some(0)
        }
        _ => false,
    }
}

/// Splits an Annex-B stream into access units, each a slice of the input starting at the
/// start code of its first NAL unit. Leading parameter sets or delimiters without any picture
/// after them at the end of the stream are returned as a last unit without a slice only if
/// nothing else follows; use [`AccessUnitAssembler`] for streaming input.
pub fn split_access_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut current_start: Option<usize> = None;
    let mut has_vcl = false;
    for nal in nal_units(stream) {
        if current_start.is_some() && has_vcl && starts_new_access_unit(&nal) {
            if let Some(start) = current_start {
                units.push(stream.get(start..nal.start_code_offset).unwrap_or_default());
            }
            current_start = None;
            has_vcl = false;
        }
        if current_start.is_none() {
            current_start = Some(nal.start_code_offset);
        }
        has_vcl |= nal.is_vcl();
    }
    if let Some(start) = current_start {
        units.push(stream.get(start..).unwrap_or_default());
    }
    units
}

/// Builds whole access units out of encoder output that arrives in pieces (one V4L2 buffer
/// at a time, possibly with parameter sets in their own buffer, possibly with several slices
/// per picture).
///
/// Each pushed chunk must end on a NAL unit boundary, which is how V4L2 encoders hand out
/// their buffers. Units come out with four-byte start codes.
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    pending: Vec<u8>,
    has_vcl: bool,
    has_idr: bool,
}

/// One access unit produced by [`AccessUnitAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// Annex-B bytes of the whole picture, with any parameter sets that preceded it.
    pub data: Vec<u8>,
    /// Whether it holds an IDR slice.
    pub keyframe: bool,
}

impl AccessUnitAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of Annex-B bytes; returns the access units it completed (those followed
    /// by the start of another one).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<AccessUnit> {
        let mut done = Vec::new();
        for nal in nal_units(chunk) {
            if self.has_vcl
                && starts_new_access_unit(&nal)
                && let Some(unit) = self.take()
            {
                done.push(unit);
            }
            self.pending.extend_from_slice(&[0, 0, 0, 1]);
            self.pending.extend_from_slice(nal.data);
            self.has_vcl |= nal.is_vcl();
            self.has_idr |= nal.nal_type() == Some(nal_type::IDR);
        }
        done
    }

    /// Declares the current picture complete (the encoder said so, e.g. the end of a V4L2
    /// capture buffer); returns it if it holds a slice. Parameter sets with no picture yet are
    /// kept for the next one.
    pub fn end_of_picture(&mut self) -> Option<AccessUnit> {
        if self.has_vcl { self.take() } else { None }
    }

    /// Whether bytes are waiting for the rest of their picture.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops whatever is pending (after an encoder reset).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.has_vcl = false;
        self.has_idr = false;
    }

    fn take(&mut self) -> Option<AccessUnit> {
        if self.pending.is_empty() {
            return None;
        }
        let unit = AccessUnit {
            data: std::mem::take(&mut self.pending),
            keyframe: self.has_idr,
        };
        self.has_vcl = false;
        self.has_idr = false;
        Some(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A slice NAL header byte plus a slice header beginning with `first_mb` as ue(v).
    fn slice(nal_header: u8, first_mb: u32) -> Vec<u8> {
        // Write ue(v) by hand, then pad with a stop bit.
        let v = u64::from(first_mb) + 1;
        let len = 64 - v.leading_zeros();
        let mut bits: Vec<bool> = vec![false; (len - 1) as usize];
        for i in (0..len).rev() {
            bits.push((v >> i) & 1 == 1);
        }
        bits.push(true); // something after: slice_type ue(v) = 0 → "1"
        while !bits.len().is_multiple_of(8) {
            bits.push(false);
        }
        let mut out = vec![0, 0, 0, 1, nal_header];
        for chunk in bits.chunks(8) {
            out.push(chunk.iter().fold(0u8, |acc, &b| (acc << 1) | u8::from(b)));
        }
        out.push(0x80);
        out
    }

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let stream = [
            0xff, 0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 0, 0,
        ];
        let nals: Vec<_> = nal_units(&stream).collect();
        assert_eq!(nals.len(), 3);
        assert_eq!(nals[0].data, &[0x67, 1, 2]);
        assert_eq!(nals[0].start_code_offset, 1);
        assert_eq!(nals[1].data, &[0x68, 3]);
        assert_eq!(nals[1].start_code_offset, 8);
        assert_eq!(nals[2].data, &[0x65, 9]);
        assert_eq!(nals[2].nal_type(), Some(nal_type::IDR));
        assert!(contains_idr(&stream));
        assert!(nal_units(&[1, 2, 3]).next().is_none());
        assert!(nal_units(&[0, 0, 1, 0, 0, 1]).next().is_none());
    }

    #[test]
    fn reads_first_mb_in_slice_through_emulation_prevention() {
        for mb in [0u32, 1, 2, 7, 119, 3599, 8159] {
            let s = slice(0x41, mb);
            let nal = nal_units(&s).next().unwrap();
            assert_eq!(nal.first_mb_in_slice(), Some(mb), "mb {mb}");
        }
        // RBSP 00 00 01 ff ff fe needs an emulation-prevention byte: 00 00 03 01 ff ff fe.
        // 23 zero bits, a one, then 23 ones: 2^23 - 1 + 2^23 - 1.
        let escaped = [0, 0, 1, 0x41, 0, 0, 3, 1, 0xff, 0xff, 0xfe];
        let n = nal_units(&escaped).next().unwrap();
        assert_eq!(n.first_mb_in_slice(), Some((1 << 24) - 2));
        // Cut short: 24 zero bits, a one, then too few bits left; no panic.
        let short = [0, 0, 1, 0x41, 0, 0, 3, 0, 0x80];
        let n = nal_units(&short).next().unwrap();
        assert_eq!(n.first_mb_in_slice(), None);
        // Not a slice.
        let sps = [0, 0, 1, 0x67, 0x80];
        assert_eq!(nal_units(&sps).next().unwrap().first_mb_in_slice(), None);
    }

    #[test]
    fn slices_of_one_picture_stay_together() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xf0]); // AUD
        stream.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f]); // SPS
        stream.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce]); // PPS
        stream.extend(slice(0x65, 0));
        stream.extend(slice(0x65, 1800));
        let second_start = stream.len();
        stream.extend(slice(0x41, 0));
        stream.extend(slice(0x41, 1800));
        let third_start = stream.len();
        stream.extend_from_slice(&[0, 0, 0, 1, 0x09, 0xf0]);
        stream.extend(slice(0x41, 0));
        let units = split_access_units(&stream);
        assert_eq!(units.len(), 3);
        assert_eq!(units[0], &stream[..second_start]);
        assert!(contains_idr(units[0]));
        assert_eq!(units[1], &stream[second_start..third_start]);
        assert!(!contains_idr(units[1]));
        assert_eq!(units[2], &stream[third_start..]);
        assert_eq!(
            sps_profile(units[0]),
            Some(SpsProfile {
                profile_idc: 66,
                constraint_flags: 0xc0,
                level_idc: 31
            })
        );
    }

    #[test]
    fn assembler_keeps_parameter_sets_for_the_next_picture() {
        let mut a = AccessUnitAssembler::new();
        assert!(
            a.push(&[0, 0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xce])
                .is_empty()
        );
        assert_eq!(a.end_of_picture(), None);
        assert!(a.push(&slice(0x65, 0)).is_empty());
        assert!(a.push(&slice(0x65, 40)).is_empty());
        let first = a.end_of_picture().unwrap();
        assert!(first.keyframe);
        assert_eq!(nal_units(&first.data).count(), 4);
        // Two pictures in one chunk: the first comes out at the second's first slice.
        let mut two = slice(0x41, 0);
        two.extend(slice(0x41, 0));
        let done = a.push(&two);
        assert_eq!(done.len(), 1);
        assert!(!done[0].keyframe);
        assert!(a.end_of_picture().is_some());
        assert!(a.is_empty());
    }

    proptest! {
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let nals: Vec<_> = nal_units(&bytes).collect();
            for n in &nals {
                let _ = n.first_mb_in_slice();
                prop_assert!(!n.data.is_empty());
            }
            let units = split_access_units(&bytes);
            let total: usize = units.iter().map(|u| u.len()).sum();
            prop_assert!(total <= bytes.len());
            let _ = sps_profile(&bytes);
            let mut a = AccessUnitAssembler::new();
            let _ = a.push(&bytes);
            let _ = a.end_of_picture();
        }

        #[test]
        fn random_bytes_with_start_codes_never_panic(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..32)
        ) {
            let mut bytes = Vec::new();
            for p in &parts {
                bytes.extend_from_slice(&[0, 0, 1]);
                bytes.extend_from_slice(p);
            }
            let units = split_access_units(&bytes);
            // Units tile the stream from the first start code without overlap.
            let mut pos = nal_units(&bytes).next().map_or(bytes.len(), |n| n.start_code_offset);
            for u in &units {
                prop_assert_eq!(&bytes[pos..pos + u.len()], *u);
                pos += u.len();
            }
            let mut a = AccessUnitAssembler::new();
            for p in &parts {
                let mut chunk = vec![0, 0, 1];
                chunk.extend_from_slice(p);
                let _ = a.push(&chunk);
            }
            let _ = a.end_of_picture();
        }
    }
}
