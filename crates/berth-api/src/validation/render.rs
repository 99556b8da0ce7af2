//! Rendering bad values the way Kubernetes 1.33's `field.Error` does.
//!
//! Go prints a string with `%q`, a number or bool with `%v`, and anything else with `%#v`,
//! so a bad label map reads `map[string]string{"app":"web"}` and a bad selector reads
//! `v1.LabelSelector{MatchLabels:...}`. kubectl users see these strings, so they are copied
//! here rather than replaced by JSON.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A value that can stand in a `FieldError`.
pub(crate) trait GoValue {
    fn go(&self) -> String;
}

impl GoValue for str {
    fn go(&self) -> String {
        quote(self)
    }
}

impl GoValue for String {
    fn go(&self) -> String {
        quote(self)
    }
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl GoValue for $t {
            fn go(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
plain!(i32, i64, u32, u64, usize, bool);

/// A value rendered by the caller (maps, structs).
pub(crate) struct Raw(pub String);

impl GoValue for Raw {
    fn go(&self) -> String {
        self.0.clone()
    }
}

/// A nil pointer: Kubernetes 1.33 prints it as the string "null".
pub(crate) struct Null;

impl GoValue for Null {
    fn go(&self) -> String {
        quote("null")
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || is_unprintable_space(c) => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` refuses every space but U+0020, and the format characters.
fn is_unprintable_space(c: char) -> bool {
    matches!(
        c,
        '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200f}'
            | '\u{2028}'..='\u{202f}'
            | '\u{205f}'..='\u{2064}'
            | '\u{3000}'
            | '\u{feff}'
    )
}

/// `%#v` of a `map[string]string`; Go sorts the keys.
pub(crate) fn string_map(m: Option<&BTreeMap<String, String>>) -> String {
    match m {
        None => "map[string]string(nil)".to_string(),
        Some(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

/// `%#v` of a `[]string`.
pub(crate) fn string_slice(v: Option<&[String]>) -> String {
    match v {
        None => "[]string(nil)".to_string(),
        Some(v) => {
            let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
            format!("[]string{{{}}}", items.join(", "))
        }
    }
}

/// `%#v` of a `metav1.LabelSelector`, as `spec.selector: Invalid value: ...` shows it.
pub(crate) fn label_selector(sel: &LabelSelector) -> String {
    let exprs = match &sel.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(exprs) => {
            let items: Vec<String> = exprs
                .iter()
                .map(|r| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        quote(&r.key),
                        quote(&r.operator),
                        string_slice(r.values.as_deref())
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        string_map(sel.match_labels.as_ref()),
        exprs
    )
}

/// `%#v` of an `intstr.IntOrString`; an absent one is the zero value.
pub(crate) fn int_or_string(v: Option<&IntOrString>) -> String {
    match v {
        None => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
        Some(IntOrString::Int(i)) => {
            format!("intstr.IntOrString{{Type:0, IntVal:{i}, StrVal:\"\"}}")
        }
        Some(IntOrString::String(s)) => {
            format!(
                "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
                quote(s)
            )
        }
    }
}

/// Go's `time.Time.String()` for a UTC time: `2024-01-02 03:04:05 +0000 UTC`.
pub(crate) fn time(t: &Time) -> String {
    let ts = t.0;
    let base = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = ts.subsec_nanosecond();
    let frac = if nanos > 0 {
        let digits = format!("{nanos:09}");
        format!(".{}", digits.trim_end_matches('0'))
    } else {
        String::new()
    };
    format!("{base}{frac} +0000 UTC")
}

/// A quoted string if present, else Go's rendering of a nil `*string`.
pub(crate) fn opt_str(v: Option<&str>) -> String {
    match v {
        Some(s) => quote(s),
        None => Null.go(),
    }
}

/// Any serializable value as JSON, for structs whose Go rendering is not worth copying.
pub(crate) fn json<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// What changed between two versions of a spec, one `-`/`+` pair per changed field, in the
/// spirit of the `cmp.Diff` Kubernetes appends to "may not change" errors.
pub(crate) fn spec_diff<T: serde::Serialize>(old: &T, new: &T) -> String {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let mut lines = Vec::new();
    diff_values(&old, &new, String::new(), &mut lines);
    const MAX: usize = 20;
    let more = lines.len().saturating_sub(MAX);
    lines.truncate(MAX);
    if more > 0 {
        lines.push(format!("  ... // {more} more differences"));
    }
    lines.join("\n")
}

fn diff_values(
    old: &serde_json::Value,
    new: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff_values(
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                    join(k),
                    out,
                );
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(x, y, format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a != b => {
            if !a.is_null() {
                out.push(format!("- \t{path}: {a}"));
            }
            if !b.is_null() {
                out.push(format!("+ \t{path}: {b}"));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_go() {
        assert_eq!(quote("abc"), "\"abc\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("a\u{0}b"), "\"a\\x00b\"");
        assert_eq!(quote("tab\there\n"), "\"tab\\there\\n\"");
        assert_eq!(quote("ünï"), "\"ünï\"");
        assert_eq!(quote("\u{85}"), "\"\\u0085\"");
    }

    #[test]
    fn maps_and_selectors_match_go() {
        let mut m = BTreeMap::new();
        m.insert("b".to_string(), "2".to_string());
        m.insert("a".to_string(), "1".to_string());
        assert_eq!(
            string_map(Some(&m)),
            r#"map[string]string{"a":"1", "b":"2"}"#
        );
        assert_eq!(string_map(None), "map[string]string(nil)");
        let sel = LabelSelector {
            match_labels: Some(m),
            match_expressions: None,
        };
        assert_eq!(
            label_selector(&sel),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"a":"1", "b":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
        assert_eq!(
            int_or_string(Some(&IntOrString::Int(0))),
            r#"intstr.IntOrString{Type:0, IntVal:0, StrVal:""}"#
        );
    }
}
