//! Resource quantities (`500m`, `2`, `128Mi`, `1G`, `1e3`) as the integers the scheduler adds
//! and compares (the scheduler, the node agent): CPU in millicores, everything else in whole units.
//!
//! berth-api has a full quantity type for validation, but it is private to that crate and
//! exact; clients only need Kubernetes' `MilliValue()` and `Value()`, which round up.
//! The API server has already validated every quantity, so a string that does not parse here is
//! treated as zero rather than an error.

/// `MilliValue()`: the quantity times 1000, rounded up (so `0.1m` of CPU is 1 millicore),
/// saturating at `i64::MAX`. `None` when `s` is not a quantity.
pub fn milli_value(s: &str) -> Option<i64> {
    let parsed = parse(s)?;
    Some(parsed.scaled(3))
}

/// `Value()`: the quantity rounded up to a whole unit (bytes for memory, a count for pods).
pub fn value(s: &str) -> Option<i64> {
    let parsed = parse(s)?;
    Some(parsed.scaled(0))
}

/// `digits × binary × 10^exp10`, with the sign kept apart.
struct Parsed {
    negative: bool,
    digits: i128,
    binary: i128,
    exp10: i32,
}

impl Parsed {
    /// The value times `10^extra`, rounded up (away from zero for positives, as Kubernetes does).
    fn scaled(&self, extra: i32) -> i64 {
        let exp = self.exp10 + extra;
        let base = self.digits.saturating_mul(self.binary);
        let magnitude = if exp >= 0 {
            let mut v = base;
            for _ in 0..exp {
                v = v.saturating_mul(10);
            }
            v
        } else {
            // Beyond 10^38 every i128 rounds up to 1 (or stays 0).
            match 10i128.checked_pow(exp.unsigned_abs()) {
                Some(divisor) => (base + divisor - 1) / divisor,
                None => i128::from(base > 0),
            }
        };
        let clamped = i64::try_from(magnitude).unwrap_or(i64::MAX);
        if self.negative { -clamped } else { clamped }
    }
}

fn parse(s: &str) -> Option<Parsed> {
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let mut digits: i128 = 0;
    let mut exp10: i32 = 0;
    let mut after_point = false;
    for c in number.chars() {
        if c == '.' {
            after_point = true;
            continue;
        }
        let d = i128::from(c.to_digit(10)?);
        // Digits past i128's range only lose precision far below a millicore's worth.
        if digits < i128::MAX / 100 {
            digits = digits * 10 + d;
            if after_point {
                exp10 -= 1;
            }
        } else if !after_point {
            exp10 += 1;
        }
    }
    let (binary, suffix_exp) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1i128 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other => {
            let exponent = other.strip_prefix(['e', 'E'])?;
            (1, exponent.parse::<i32>().ok()?.clamp(-100, 100))
        }
    };
    Some(Parsed {
        negative,
        digits,
        binary,
        exp10: exp10 + suffix_exp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(milli_value("500m"), Some(500));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("100u"), Some(1), "rounds up like MilliValue");
        assert_eq!(milli_value("0"), Some(0));
    }

    #[test]
    fn memory_forms() {
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1E3"), Some(1000));
        assert_eq!(value("2Ki"), Some(2048));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("100m"), Some(1), "Value rounds up");
        assert_eq!(value("110"), Some(110));
    }

    #[test]
    fn extremes_saturate_and_garbage_is_none() {
        assert_eq!(value("100Ei"), Some(i64::MAX));
        assert_eq!(value("1e400"), Some(i64::MAX));
        assert_eq!(value("-1"), Some(-1));
        assert_eq!(value(""), None);
        assert_eq!(value("Mi"), None);
        assert_eq!(value("1.2.3"), None);
        assert_eq!(value("12xyz"), None);
    }
}
