//! AD structures: the length-type-data records that make up BLE advertising data
//! (Bluetooth Core Specification, Vol 3, Part C, section 11).

/// AD type of a manufacturer-specific data record.
pub const MANUFACTURER_SPECIFIC: u8 = 0xff;
/// AD type of a service data record for a 16-bit service UUID.
pub const SERVICE_DATA_16: u8 = 0x16;

/// One AD structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStructure<'a> {
    pub ad_type: u8,
    pub data: &'a [u8],
}

/// Why bytes are not well-formed advertising data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    #[error("the advertisement is empty")]
    Empty,
    #[error(
        "the AD structure at byte {offset} declares {declared} bytes but only {available} remain"
    )]
    Truncated {
        offset: usize,
        declared: usize,
        available: usize,
    },
    #[error("byte {offset} follows the end marker (a zero length) but is not zero padding")]
    BadPadding { offset: usize },
}

/// Iterates over the AD structures of advertising data. After a zero length byte only zero
/// padding may follow; anything else, or a length running past the end, is an error.
pub struct AdStructures<'a> {
    data: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> AdStructures<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        AdStructures {
            data,
            offset: 0,
            failed: false,
        }
    }

    fn fail(&mut self, error: AdError) -> Option<Result<AdStructure<'a>, AdError>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for AdStructures<'a> {
    type Item = Result<AdStructure<'a>, AdError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.data.is_empty() {
            return self.fail(AdError::Empty);
        }
        let rest = &self.data[self.offset..];
        let (&length, after_length) = rest.split_first()?;
        if length == 0 {
            self.failed = true; // nothing more to yield either way
            return match after_length.iter().position(|&b| b != 0) {
                Some(i) => Some(Err(AdError::BadPadding {
                    offset: self.offset + 1 + i,
                })),
                None => None,
            };
        }
        let length = usize::from(length);
        if length > after_length.len() {
            return self.fail(AdError::Truncated {
                offset: self.offset,
                declared: length,
                available: after_length.len(),
            });
        }
        let (ad_type, data) = after_length[..length].split_first().expect("length >= 1");
        self.offset += 1 + length;
        Some(Ok(AdStructure {
            ad_type: *ad_type,
            data,
        }))
    }
}
