//! Just enough of Kubernetes' resource quantities for the downward API: a parser to an exact
//! decimal and the two roundings kubelet uses (`MilliValue` and `Value`, both rounding up).
//!
//! berth-api has a validating parser of its own; this one lives here so the node agent does not
//! depend on the API crate's internals. Inputs have passed API validation, but a bad string is
//! still an error here, never a panic.

/// An exact decimal `mantissa * 10^exp10` (binary suffixes are multiplied out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decimal {
    mantissa: i128,
    exp10: i32,
}

impl Decimal {
    pub(crate) fn parse(s: &str) -> Option<Decimal> {
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
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return None;
        }
        let mut mantissa: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(c - b'0'))?;
        }
        let mut exp10 = -i32::try_from(frac_part.len()).ok()?;
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
                if !(-40..=40).contains(&e) {
                    return None;
                }
                (e, 0)
            }
            _ => return None,
        };
        exp10 += dec;
        mantissa = mantissa.checked_mul(1i128.checked_shl(bin)?)?;
        if negative {
            mantissa = -mantissa;
        }
        Some(Decimal { mantissa, exp10 })
    }

    /// The value times `10^scale`, rounded up (towards +infinity) as Kubernetes rounds.
    fn scaled_ceil(self, scale: i32) -> Option<i128> {
        let e = self.exp10.checked_add(scale)?;
        if e >= 0 {
            self.mantissa
                .checked_mul(10i128.checked_pow(e.unsigned_abs())?)
        } else {
            let Some(div) = 10i128.checked_pow(e.unsigned_abs()) else {
                // Smaller than any representable unit: 0 or, rounded up, 1.
                return Some(i128::from(self.mantissa > 0));
            };
            Some(ceil_div(self.mantissa, div))
        }
    }

    /// `Quantity.MilliValue()`.
    pub(crate) fn milli_ceil(self) -> Option<i128> {
        self.scaled_ceil(3)
    }

    /// `Quantity.Value()`.
    pub(crate) fn value_ceil(self) -> Option<i128> {
        self.scaled_ceil(0)
    }
}

/// Integer division rounding towards +infinity; `None` when dividing by zero.
pub(crate) fn ceil_div_checked(a: i128, b: i128) -> Option<i128> {
    if b == 0 {
        return None;
    }
    let (a, b) = if b < 0 { (-a, -b) } else { (a, b) };
    Some(ceil_div(a, b))
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).expect("valid quantity")
    }

    #[test]
    fn rounds_like_kubernetes() {
        assert_eq!(d("500m").milli_ceil(), Some(500));
        assert_eq!(d("500m").value_ceil(), Some(1));
        assert_eq!(d("1.5").milli_ceil(), Some(1500));
        assert_eq!(d("1Gi").value_ceil(), Some(1 << 30));
        assert_eq!(d("1k").value_ceil(), Some(1000));
        assert_eq!(d("2e3").value_ceil(), Some(2000));
        assert_eq!(d("1n").milli_ceil(), Some(1));
        assert_eq!(d("0").milli_ceil(), Some(0));
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "lots", "1.2.3", "1Xi", "-", "1e999"] {
            assert_eq!(Decimal::parse(s), None, "{s}");
        }
    }

    #[test]
    fn ceil_division() {
        assert_eq!(ceil_div_checked(7, 2), Some(4));
        assert_eq!(ceil_div_checked(6, 2), Some(3));
        assert_eq!(ceil_div_checked(-7, 2), Some(-3));
        assert_eq!(ceil_div_checked(1, 0), None);
    }
}
