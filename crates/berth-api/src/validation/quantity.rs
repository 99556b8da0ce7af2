//! Parsing and comparing resource quantities (`500m`, `1Gi`, `2e3`).
//!
//! k8s-openapi keeps a Quantity as the string the client sent, so nothing has checked its
//! format before validation; this parser is what rejects `"lots"`. Values are kept exact
//! (an integer mantissa times a power of ten) so that `100m` and `0.1` compare equal.

use std::cmp::Ordering;

/// The message Kubernetes gives for a quantity it cannot parse.
pub(crate) const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// An exact decimal: `mantissa * 10^exp10`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantity {
    mantissa: i128,
    exp10: i32,
}

impl Quantity {
    pub(crate) fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        let (number, suffix) = rest.split_at(num_len);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return None;
        }
        let mut mantissa: i128 = 0;
        let mut exp10: i32 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            let digit = i128::from(c - b'0');
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)) {
                Some(m) => mantissa = m,
                // Beyond i128 the trailing digits cannot matter for any comparison we make.
                None => exp10 += 1,
            }
        }
        exp10 -= i32::try_from(frac_part.len()).ok()?;
        let (dec, bin): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().ok()?;
                if !(-1000..=1000).contains(&e) {
                    return None;
                }
                (e, 0)
            }
            _ => return None,
        };
        exp10 += dec;
        if bin > 0 {
            mantissa = match mantissa.checked_mul(1i128 << bin) {
                Some(m) => m,
                None => {
                    // Too big to be exact; keep the magnitude, which is all comparisons need.
                    let approx = (mantissa as f64) * 2f64.powi(bin as i32);
                    let digits = approx.log10().floor() as i32 - 30;
                    exp10 += digits;
                    (approx / 10f64.powi(digits)) as i128
                }
            };
        }
        if negative {
            mantissa = -mantissa;
        }
        Some(Quantity { mantissa, exp10 })
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// Whether the value is a whole number (Kubernetes: `MilliValue() % 1000 == 0`).
    pub(crate) fn is_integer(&self) -> bool {
        if self.exp10 >= 0 || self.mantissa == 0 {
            return true;
        }
        let Some(div) = 10i128.checked_pow(self.exp10.unsigned_abs()) else {
            return false;
        };
        self.mantissa % div == 0
    }

    pub(crate) fn cmp(&self, other: &Quantity) -> Ordering {
        let (a, b) = (self.mantissa, other.mantissa);
        if a.signum() != b.signum() {
            return a.signum().cmp(&b.signum());
        }
        if a == 0 {
            return Ordering::Equal;
        }
        // Scale the one with the larger exponent down to the other's; overflow means it is larger.
        let (hi, lo, hi_exp, lo_exp, flipped) = if self.exp10 >= other.exp10 {
            (a, b, self.exp10, other.exp10, false)
        } else {
            (b, a, other.exp10, self.exp10, true)
        };
        let diff = (hi_exp - lo_exp).unsigned_abs();
        let ord = match 10i128.checked_pow(diff).and_then(|p| hi.checked_mul(p)) {
            Some(scaled) => scaled.cmp(&lo),
            None => {
                if hi > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
        };
        if flipped { ord.reverse() } else { ord }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_and_compares() {
        assert_eq!(q("100m").cmp(&q("0.1")), Ordering::Equal);
        assert_eq!(q("1Gi").cmp(&q("1073741824")), Ordering::Equal);
        assert_eq!(q("1G").cmp(&q("1Gi")), Ordering::Less);
        assert_eq!(q("2").cmp(&q("1500m")), Ordering::Greater);
        assert_eq!(q("1e3").cmp(&q("1k")), Ordering::Equal);
        assert_eq!(q("-1").cmp(&q("0")), Ordering::Less);
        assert!(q("-1").is_negative());
        assert!(q("0Gi").is_zero());
        assert!(q("2").is_integer());
        assert!(!q("500m").is_integer());
        assert!(q("1000m").is_integer());
        for bad in ["", "abc", "1.2.3", "1K", "1 Gi", ".", "1Gib", "--1"] {
            assert!(Quantity::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(q("1000000Ei").cmp(&q("1Ei")), Ordering::Greater);
    }
}
