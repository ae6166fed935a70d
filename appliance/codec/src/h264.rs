//! H.264 Annex-B tools: NAL units, key-frame detection, and access-unit
//! assembly. Encoders may emit several slices per picture (x264 with
//! `tune=zerolatency`, most hardware encoders); RTP packetizers and decoders
//! need whole pictures, so units are split on an access-unit delimiter or on
//! a slice with `first_mb_in_slice == 0`, never per slice.

/// NAL unit types that matter here (ITU-T H.264 Table 7-1).
pub mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const SLICE: u8 = 1;
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
}

/// The NAL units of an Annex-B byte stream, without their start codes.
/// Bytes before the first start code are skipped; empty units are dropped.
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(stream).filter_map(|unit| {
        // openh264 returns each unit with its `00 00 01` prefix.
        let start = unit.iter().position(|&b| b != 0)?;
        let payload = unit.get(start + 1..)?;
        // Trailing zero bytes belong to the next start code (`00 00 00 01`).
        let end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        (end > 0).then(|| &payload[..end])
    })
}

/// The type of a NAL unit (without start code).
pub fn unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

fn is_vcl(t: u8) -> bool {
    (1..=5).contains(&t)
}

/// Whether a slice NAL starts a new picture: `first_mb_in_slice`, the first
/// ue(v) after the header, is 0 exactly when its first bit is 1.
fn starts_picture(nal: &[u8]) -> bool {
    nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

/// Whether an Annex-B access unit holds an IDR slice.
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| unit_type(n) == Some(nal_type::IDR))
}

/// `profile_idc`, constraint flags and `level_idc` from the first SPS in the stream.
pub fn sps_profile(stream: &[u8]) -> Option<(u8, u8, u8)> {
    let sps = nal_units(stream).find(|n| unit_type(n) == Some(nal_type::SPS))?;
    Some((*sps.get(1)?, *sps.get(2)?, *sps.get(3)?))
}

/// One whole picture, Annex-B framed with 4-byte start codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The bytes.
    pub data: Vec<u8>,
    /// Holds an IDR slice.
    pub keyframe: bool,
}

/// Groups NAL units into access units, one NAL at a time.
#[derive(Debug, Default)]
pub struct AccessUnitAssembler {
    current: Vec<u8>,
    has_slice: bool,
    keyframe: bool,
}

impl AccessUnitAssembler {
    /// A new assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one NAL unit (without start code); returns the previous access
    /// unit when this NAL begins a new one.
    pub fn push(&mut self, nal: &[u8]) -> Option<AccessUnit> {
        let t = unit_type(nal)?;
        let begins_new = self.has_slice
            && match t {
                nal_type::AUD | nal_type::SEI | nal_type::SPS | nal_type::PPS => true,
                t if is_vcl(t) => starts_picture(nal),
                // Types 14-18 (prefix, subset SPS, …) also open a unit.
                14..=18 => true,
                _ => false,
            };
        let done = if begins_new { self.take() } else { None };
        self.current.extend_from_slice(&[0, 0, 0, 1]);
        self.current.extend_from_slice(nal);
        if is_vcl(t) {
            self.has_slice = true;
            self.keyframe |= t == nal_type::IDR;
        }
        done
    }

    /// Returns what is buffered as a last access unit, if it holds a picture.
    pub fn flush(&mut self) -> Option<AccessUnit> {
        if self.has_slice { self.take() } else { None }
    }

    fn take(&mut self) -> Option<AccessUnit> {
        let unit = AccessUnit {
            data: std::mem::take(&mut self.current),
            keyframe: self.keyframe,
        };
        self.has_slice = false;
        self.keyframe = false;
        Some(unit)
    }
}

/// Splits a whole Annex-B stream into access units.
pub fn split_access_units(stream: &[u8]) -> Vec<AccessUnit> {
    let mut assembler = AccessUnitAssembler::new();
    let mut units: Vec<AccessUnit> = nal_units(stream)
        .filter_map(|n| assembler.push(n))
        .collect();
    units.extend(assembler.flush());
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat())
            .collect()
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xaa];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR_FIRST: &[u8] = &[0x65, 0x88, 0x84];
    const IDR_SECOND_SLICE: &[u8] = &[0x65, 0x40, 0x11]; // first_mb_in_slice != 0
    const P_FIRST: &[u8] = &[0x41, 0x9a, 0x02];
    const P_SECOND_SLICE: &[u8] = &[0x41, 0x20, 0x03];
    const AUD: &[u8] = &[0x09, 0xf0];

    #[test]
    fn two_slice_pictures_stay_whole() {
        let stream = annexb(&[
            SPS,
            PPS,
            IDR_FIRST,
            IDR_SECOND_SLICE,
            P_FIRST,
            P_SECOND_SLICE,
            P_FIRST,
        ]);
        let units = split_access_units(&stream);
        assert_eq!(units.len(), 3);
        assert!(units[0].keyframe && !units[1].keyframe && !units[2].keyframe);
        assert_eq!(
            units[0].data,
            annexb(&[SPS, PPS, IDR_FIRST, IDR_SECOND_SLICE])
        );
        assert_eq!(units[1].data, annexb(&[P_FIRST, P_SECOND_SLICE]));
    }

    #[test]
    fn delimiters_split_units() {
        let stream = annexb(&[AUD, SPS, PPS, IDR_FIRST, AUD, P_FIRST, AUD, P_FIRST]);
        let units = split_access_units(&stream);
        assert_eq!(units.len(), 3);
        assert_eq!(units[1].data, annexb(&[AUD, P_FIRST]));
    }

    #[test]
    fn three_byte_start_codes_and_leading_garbage() {
        let mut stream = vec![0xde, 0xad, 0, 0, 1];
        stream.extend_from_slice(SPS);
        stream.extend_from_slice(&[0, 0, 1]);
        stream.extend_from_slice(IDR_FIRST);
        let nals: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(nals, vec![SPS, IDR_FIRST]);
        assert!(is_keyframe(&stream));
        assert_eq!(sps_profile(&stream), Some((0x42, 0xc0, 0x1f)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..3000 {
            let len = round % 97;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Mostly zeros and ones so start codes appear often.
                    match seed % 4 {
                        0 | 1 => 0,
                        2 => 1,
                        _ => (seed >> 8) as u8,
                    }
                })
                .collect();
            let units = split_access_units(&bytes);
            let _ = is_keyframe(&bytes);
            let _ = sps_profile(&bytes);
            for u in units {
                assert!(u.data.starts_with(&[0, 0, 0, 1]));
            }
        }
    }
}
