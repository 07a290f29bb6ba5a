//! ISBT 128 identifiers a shipment carries: the donation identification
//! number (DIN, data structure 001) with its ISO/IEC 7064 Mod 37-2 check
//! character, and the product code's format. No ICCBBA tables are bundled:
//! a product code is checked for its shape only, never looked up.
//!
//! A DIN as it is keyed from the eye-readable label: 13 data characters
//! (facility identification number 5, year 2, sequence 6), 2 flag characters
//! and the check character, spaces anywhere and an optional leading `=` (the
//! bar code's data identifier) allowed:
//! `G1234 98 654321 00 H`, `=G123498654321 00H`.
//!
//! The check character is computed over the 13 data characters, without the
//! `=` and the flags (UK Blood Transfusion Services Red Book, Annex 2
//! "ISBT 128 check character calculation",
//! <https://www.transfusionguidelines.org/red-book/annex-2-isbt-128-check-character-calculation>,
//! which follows ISBT 128 ST-001): each character's value (0-9 = 0-9,
//! A-Z = 10-35, `*` = 36) times 2^n, n its position from the right (1 for the
//! last), summed; the checksum is (38 - sum mod 37) mod 37, shown as the
//! character of that value. Flags 60-96 are that checksum plus 60 (the bar
//! code's own check); other flag values are process-control flags and carry
//! no check.

use serde::{Deserialize, Serialize};

/// The characters of ISO/IEC 7064 Mod 37-2, by value.
const ALPHABET: &[u8; 37] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*";

/// Why a DIN was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DinError {
    /// Not 16 characters once spaces and the leading `=` are removed.
    #[error(
        "DIN {input:?}: expected 16 characters (facility 5, year 2, sequence 6, flags 2, check character 1; spaces allowed), got {len}"
    )]
    Length {
        /// What was given.
        input: String,
        /// Its length without spaces and `=`.
        len: usize,
    },
    /// The facility identification number is not a letter (not O) or digit
    /// 1-9 followed by four digits.
    #[error(
        "DIN {input:?}: facility identification number {fin:?}: expected A-N, P-Z or 1-9 then 4 digits"
    )]
    Facility {
        /// What was given.
        input: String,
        /// The 5 characters found.
        fin: String,
    },
    /// Year or sequence not all digits.
    #[error("DIN {input:?}: {field} {found:?}: expected {expected} digits")]
    Digits {
        /// What was given.
        input: String,
        /// `year` or `sequence`.
        field: &'static str,
        /// What was found.
        found: String,
        /// How many digits.
        expected: usize,
    },
    /// Flag characters that are not two digits, or a reserved value.
    #[error(
        "DIN {input:?}: flag characters {flags:?}: expected two digits, 00-59 (process control) or 60-96 (check value)"
    )]
    Flags {
        /// What was given.
        input: String,
        /// The 2 characters found.
        flags: String,
    },
    /// Flags 60-96 that do not carry the DIN's checksum.
    #[error(
        "DIN {input:?}: flag characters {flags} are a check value and do not match the data (expected {expected})"
    )]
    FlagCheck {
        /// What was given.
        input: String,
        /// The flags found.
        flags: String,
        /// 60 + the checksum.
        expected: u8,
    },
    /// The check character does not match the data.
    #[error(
        "DIN {input:?}: check character {found:?} does not match the data (ISO 7064 Mod 37-2 gives {expected:?}): a mistyped character?"
    )]
    Check {
        /// What was given.
        input: String,
        /// The check character given.
        found: char,
        /// The one computed.
        expected: char,
    },
}

/// A validated donation identification number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Din {
    /// Facility identification number (5 characters).
    pub facility: String,
    /// Year of collection (2 digits).
    pub year: String,
    /// Sequence number (6 digits).
    pub sequence: String,
    /// Flag characters (2 digits).
    pub flags: String,
    /// The check character.
    pub check: char,
}

impl Din {
    /// The 13 data characters the check character covers.
    pub fn data(&self) -> String {
        format!("{}{}{}", self.facility, self.year, self.sequence)
    }
}

impl std::fmt::Display for Din {
    /// The eye-readable layout: `G1234 98 654321 00 H`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.facility, self.year, self.sequence, self.flags, self.check
        )
    }
}

/// The ISO/IEC 7064 Mod 37-2 checksum (0-36) of `data`, or `None` when a
/// character is outside 0-9, A-Z, `*`.
pub fn checksum(data: &str) -> Option<u8> {
    let mut sum: u32 = 0;
    for b in data.bytes() {
        let v = ALPHABET.iter().position(|&c| c == b)? as u32;
        // Horner's form of sum(v_i * 2^n_i) mod 37, n counted from the right
        // starting at 1: the final doubling gives the last character 2^1.
        sum = ((sum + v) * 2) % 37;
    }
    Some(((38 - sum) % 37) as u8)
}

/// The check character of `data` (its checksum's character).
pub fn check_character(data: &str) -> Option<char> {
    checksum(data).map(|v| ALPHABET[v as usize] as char)
}

/// Parses and checks a DIN as keyed from a label (see the module docs).
/// Lower-case letters are taken as upper case.
pub fn parse_din(input: &str) -> Result<Din, DinError> {
    let compact: Vec<u8> = input
        .trim()
        .trim_start_matches('=')
        .bytes()
        .filter(|b| *b != b' ')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let input_s = input.to_string();
    if compact.len() != 16 || !compact.is_ascii() {
        return Err(DinError::Length {
            input: input_s,
            len: String::from_utf8_lossy(&compact).chars().count(),
        });
    }
    let s = |r: std::ops::Range<usize>| String::from_utf8_lossy(&compact[r]).into_owned();
    let (facility, year, sequence, flags) = (s(0..5), s(5..7), s(7..13), s(13..15));
    let first = compact[0];
    let first_ok = (first.is_ascii_uppercase() && first != b'O') || (b'1'..=b'9').contains(&first);
    if !first_ok || !compact[1..5].iter().all(u8::is_ascii_digit) {
        return Err(DinError::Facility {
            input: input_s,
            fin: facility,
        });
    }
    for (field, value, n) in [("year", &year, 2), ("sequence", &sequence, 6)] {
        if !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DinError::Digits {
                input: input_s,
                field,
                found: value.clone(),
                expected: n,
            });
        }
    }
    let data = format!("{facility}{year}{sequence}");
    let sum = checksum(&data).expect("checked: digits and upper-case letters only");
    let flag_value: Option<u8> = if flags.bytes().all(|b| b.is_ascii_digit()) {
        flags.parse().ok()
    } else {
        None
    };
    match flag_value {
        Some(0..=59) => {}
        Some(v @ 60..=96) => {
            if v != 60 + sum {
                return Err(DinError::FlagCheck {
                    input: input_s,
                    flags,
                    expected: 60 + sum,
                });
            }
        }
        _ => {
            return Err(DinError::Flags {
                input: input_s,
                flags,
            });
        }
    }
    let check = compact[15] as char;
    let expected = ALPHABET[sum as usize] as char;
    if check != expected {
        return Err(DinError::Check {
            input: input_s,
            found: check,
            expected,
        });
    }
    Ok(Din {
        facility,
        year,
        sequence,
        flags,
        check,
    })
}

/// Why a product code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "product code {0:?}: expected an ISBT 128 product description code (a letter and 4 digits, e.g. S1194), optionally followed by the type of donation and the division (3 letters or digits, e.g. S1194V00)"
)]
pub struct ProductCodeError(pub String);

/// Checks an ISBT 128 product code's shape (data structure 003 without its
/// data identifier): `S1194` or `S1194V00`. Returns it trimmed and in upper
/// case. Whether the code exists is ICCBBA's table, not checked here.
pub fn parse_product_code(input: &str) -> Result<String, ProductCodeError> {
    let code = input.trim().to_ascii_uppercase();
    let b = code.as_bytes();
    let shape = (b.len() == 5 || b.len() == 8)
        && b[0].is_ascii_uppercase()
        && b[1..5].iter().all(u8::is_ascii_digit)
        && b[5..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if shape {
        Ok(code)
    } else {
        Err(ProductCodeError(input.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Red Book's worked example (Annex 2, Table A2.2): donation number
    /// G123 498 654 321, sum of weighted values 148354, mod 37 = 21,
    /// 38 - 21 = 17, check character H, bar code flags 77.
    #[test]
    fn published_example() {
        assert_eq!(checksum("G123498654321"), Some(17));
        assert_eq!(check_character("G123498654321"), Some('H'));
        let d = parse_din("G1234 98 654321 00 H").unwrap();
        assert_eq!(d.data(), "G123498654321");
        assert_eq!(d.to_string(), "G1234 98 654321 00 H");
        // The same with the data identifier, no spaces, the check value as
        // flags, lower case.
        assert_eq!(parse_din("=G123498654321 77 H").unwrap().flags, "77");
        assert_eq!(parse_din("g123498654321 00h").unwrap(), d);
    }

    /// ISO/IEC 7064 pure systems: appending the check character makes the
    /// whole string's weighted sum 1 mod 37. Checked independently of the
    /// Horner form for every facility letter.
    #[test]
    fn check_character_closes_the_sum() {
        for first in b"ABCDEFGHIJKLMNPQRSTUVWXYZ123456789" {
            let data = format!("{}000126000042", *first as char);
            let full = format!("{data}{}", check_character(&data).unwrap());
            let n = full.len() as u32;
            let total: u64 = full
                .bytes()
                .enumerate()
                .map(|(i, c)| {
                    let v = ALPHABET.iter().position(|&a| a == c).unwrap() as u64;
                    v * (1u64 << (n - 1 - i as u32))
                })
                .sum();
            assert_eq!(total % 37, 1, "{full}");
        }
    }

    #[test]
    fn wrong_check_character_is_refused_naming_the_expected_one() {
        let e = parse_din("G1234 98 654321 00 J").unwrap_err();
        assert_eq!(
            e,
            DinError::Check {
                input: "G1234 98 654321 00 J".into(),
                found: 'J',
                expected: 'H'
            }
        );
        assert!(e.to_string().contains("gives 'H'"), "{e}");
        // A transposition in the data is caught too.
        assert!(matches!(
            parse_din("G1234 89 654321 00 H"),
            Err(DinError::Check { .. })
        ));
    }

    #[test]
    fn wrong_length_is_refused_with_the_count() {
        for (input, len) in [
            ("G1234 98 654321", 13),
            ("G1234 98 654321 00", 15),
            ("G1234 98 6543210 00 H", 17),
            ("", 0),
        ] {
            let e = parse_din(input).unwrap_err();
            assert_eq!(
                e,
                DinError::Length {
                    input: input.into(),
                    len
                },
                "{input}"
            );
            assert!(e.to_string().contains("expected 16 characters"));
        }
    }

    #[test]
    fn bad_flags_and_fields_are_named() {
        assert!(matches!(
            parse_din("G1234 98 654321 0X H"),
            Err(DinError::Flags { .. })
        ));
        assert!(matches!(
            parse_din("G1234 98 654321 97 H"),
            Err(DinError::Flags { .. })
        ));
        assert_eq!(
            parse_din("G1234 98 654321 78 H"),
            Err(DinError::FlagCheck {
                input: "G1234 98 654321 78 H".into(),
                flags: "78".into(),
                expected: 77
            })
        );
        assert!(matches!(
            parse_din("O1234 98 654321 00 H"),
            Err(DinError::Facility { .. })
        ));
        assert!(matches!(
            parse_din("G1234 9A 654321 00 H"),
            Err(DinError::Digits { field: "year", .. })
        ));
        assert!(matches!(
            parse_din("G1234 98 65432Z 00 H"),
            Err(DinError::Digits {
                field: "sequence",
                ..
            })
        ));
        assert!(matches!(
            parse_din("G1234 98 654321 00 é"),
            Err(DinError::Length { .. })
        ));
    }

    #[test]
    fn product_codes_are_shape_checked() {
        assert_eq!(parse_product_code(" s1194 ").unwrap(), "S1194");
        assert_eq!(parse_product_code("S1194V00").unwrap(), "S1194V00");
        for bad in ["", "S119", "11194", "S11940", "S1194-00", "S1194V0"] {
            assert_eq!(
                parse_product_code(bad),
                Err(ProductCodeError(bad.into())),
                "{bad}"
            );
        }
    }
}
