//! Label and field selectors: parsing the `labelSelector=` and `fieldSelector=` query
//! parameters the way `k8s.io/apimachinery` (`labels.Parse`, `fields.ParseSelector`) does,
//! matching objects against them, and the per-resource table of fields Kubernetes lets a
//! client select on.
//!
//! Label selectors are also built from the structured `metav1.LabelSelector` that Deployments,
//! ReplicaSets and StatefulSets carry ([`LabelSelector::from_k8s`]), so controllers and the
//! list handler share one matcher.
//!
//! Where berth differs from upstream on purpose: every unsupported field gets
//! `field label not supported: <field>` (upstream words it differently for kinds without a
//! registered conversion), `metadata.namespace` is only selectable on namespaced resources,
//! and the legacy aliases `spec.host` and `status.podIPs` of pods are not accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::Value;

use crate::resources::ResourceInfo;

/// A selector that does not parse, or names labels that cannot exist. The message is meant
/// for the user (a 400 Status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(String);

impl SelectorError {
    pub fn message(&self) -> &str {
        &self.0
    }
}

fn error(message: impl Into<String>) -> SelectorError {
    SelectorError(message.into())
}

// ---------------------------------------------------------------------------------------------
// Label selectors.

/// How a label requirement relates a label to its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// `key=value`
    Equals,
    /// `key==value` (kept apart from `=` only so that it prints back the same)
    DoubleEquals,
    /// `key!=value`: also true when the label is absent
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`: also true when the label is absent
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>3`: the label is an integer greater than the value
    GreaterThan,
    /// `key<3`
    LessThan,
}

/// One comma-separated term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    key: String,
    operator: LabelOperator,
    /// Sorted and deduplicated: every operator treats its values as a set.
    values: Vec<String>,
}

impl LabelRequirement {
    /// A requirement, checked as Kubernetes' `labels.NewRequirement` checks it: the key must
    /// be a qualified name, the values valid label values, and their number fit the operator.
    pub fn new(
        key: impl Into<String>,
        operator: LabelOperator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        let mut problems = Vec::new();
        let key_problems = label_key_problems(&key);
        if !key_problems.is_empty() {
            problems.push(format!(
                "invalid label key {key:?}: {}",
                key_problems.join("; ")
            ));
        }
        match operator {
            LabelOperator::In | LabelOperator::NotIn => {
                if values.is_empty() {
                    problems.push("for 'in', 'notin' operators, values set can't be empty".into());
                }
            }
            LabelOperator::Equals | LabelOperator::DoubleEquals | LabelOperator::NotEquals => {
                if values.len() != 1 {
                    problems.push("exact-match compatibility requires one single value".into());
                }
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist => {
                if !values.is_empty() {
                    problems.push("values set must be empty for exists and does not exist".into());
                }
            }
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                if values.len() != 1 {
                    problems.push("for 'Gt', 'Lt' operators, exactly one value is required".into());
                }
                for value in &values {
                    if value.parse::<i64>().is_err() {
                        problems.push(format!(
                            "invalid value {value:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        ));
                    }
                }
            }
        }
        for value in &values {
            let value_problems = label_value_problems(value);
            if !value_problems.is_empty() {
                problems.push(format!(
                    "invalid label value {value:?} for key {key:?}: {}",
                    value_problems.join("; ")
                ));
            }
        }
        match problems.len() {
            0 => {}
            1 => return Err(error(problems.remove(0))),
            _ => return Err(error(format!("[{}]", problems.join(", ")))),
        }
        let values: BTreeSet<String> = values.into_iter().collect();
        Ok(LabelRequirement {
            key,
            operator,
            values: values.into_iter().collect(),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> LabelOperator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label with value `label` (`None`: the object lacks the label) satisfies this.
    pub fn matches(&self, label: Option<&str>) -> bool {
        let listed = |value: &str| self.values.iter().any(|v| v == value);
        match self.operator {
            LabelOperator::In | LabelOperator::Equals | LabelOperator::DoubleEquals => {
                label.is_some_and(listed)
            }
            LabelOperator::NotIn | LabelOperator::NotEquals => !label.is_some_and(listed),
            LabelOperator::Exists => label.is_some(),
            LabelOperator::DoesNotExist => label.is_none(),
            LabelOperator::GreaterThan | LabelOperator::LessThan => {
                let (Some(label), [bound]) = (label, self.values.as_slice()) else {
                    return false;
                };
                match (label.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(label), Ok(bound)) if self.operator == LabelOperator::GreaterThan => {
                        label > bound
                    }
                    (Ok(label), Ok(bound)) => label < bound,
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            LabelOperator::Exists => write!(f, "{}", self.key),
            LabelOperator::DoesNotExist => write!(f, "!{}", self.key),
            LabelOperator::Equals => write!(f, "{}={values}", self.key),
            LabelOperator::DoubleEquals => write!(f, "{}=={values}", self.key),
            LabelOperator::NotEquals => write!(f, "{}!={values}", self.key),
            LabelOperator::In => write!(f, "{} in ({values})", self.key),
            LabelOperator::NotIn => write!(f, "{} notin ({values})", self.key),
            LabelOperator::GreaterThan => write!(f, "{}>{values}", self.key),
            LabelOperator::LessThan => write!(f, "{}<{values}", self.key),
        }
    }
}

/// A label selector: the AND of its requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stably), as upstream sorts them, so the printed form is canonical.
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the string form (`app=web,tier in (db,cache),!canary`).
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        Parser::new(selector).parse()
    }

    pub fn from_requirements(requirements: impl IntoIterator<Item = LabelRequirement>) -> Self {
        let mut requirements: Vec<LabelRequirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// The selector of a `metav1.LabelSelector` (`matchLabels` and `matchExpressions`), as
    /// `metav1.LabelSelectorAsSelector` builds it. An empty one matches everything; a missing
    /// one (a nil pointer upstream) matches nothing, which the caller decides.
    pub fn from_k8s(selector: &meta::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(LabelRequirement::new(
                key.as_str(),
                LabelOperator::Equals,
                [value.as_str()],
            )?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => LabelOperator::In,
                "NotIn" => LabelOperator::NotIn,
                "Exists" => LabelOperator::Exists,
                "DoesNotExist" => LabelOperator::DoesNotExist,
                other => {
                    return Err(error(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            requirements.push(LabelRequirement::new(
                expression.key.as_str(),
                operator,
                expression.values.iter().flatten().map(String::as_str),
            )?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The selector requiring exactly these labels (`labels.SelectorFromSet`), e.g. a
    /// Service's `spec.selector`. Like upstream it does not validate them: a label that cannot
    /// exist simply never matches.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        Self::from_requirements(labels.iter().map(|(key, value)| LabelRequirement {
            key: key.clone(),
            operator: LabelOperator::Equals,
            values: vec![value.clone()],
        }))
    }

    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Matches a `metadata.labels` JSON object; anything else (absent, null) has no labels.
    pub fn matches_value(&self, labels: &Value) -> bool {
        self.matches_with(|key| labels.get(key).and_then(Value::as_str))
    }

    fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(label(&requirement.key)))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(selector: &str) -> Result<Self, Self::Err> {
        Self::parse(selector)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    End,
    OpenPar,
    ClosedPar,
    Comma,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    Identifier(&'a str),
}

impl<'a> Token<'a> {
    fn literal(self) -> &'a str {
        match self {
            Token::End => "",
            Token::OpenPar => "(",
            Token::ClosedPar => ")",
            Token::Comma => ",",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Identifier(s) => s,
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// labels.Lexer: identifiers run until whitespace or one of `=!(),<>`.
fn lex(input: &str) -> Vec<Token<'_>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while bytes.get(pos).copied().is_some_and(is_whitespace) {
            pos += 1;
        }
        let Some(&b) = bytes.get(pos) else {
            tokens.push(Token::End);
            return tokens;
        };
        if is_special(b) {
            let doubled = bytes.get(pos + 1) == Some(&b'=');
            let (token, len) = match b {
                b'=' if doubled => (Token::DoubleEquals, 2),
                b'!' if doubled => (Token::NotEquals, 2),
                b'=' => (Token::Equals, 1),
                b'!' => (Token::Bang, 1),
                b'(' => (Token::OpenPar, 1),
                b')' => (Token::ClosedPar, 1),
                b',' => (Token::Comma, 1),
                b'>' => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            tokens.push(token);
            pos += len;
        } else {
            let start = pos;
            while bytes
                .get(pos)
                .is_some_and(|&b| !is_special(b) && !is_whitespace(b))
            {
                pos += 1;
            }
            // Both ends sit next to ASCII bytes (or the ends of the input): char boundaries.
            let word = input.get(start..pos).unwrap_or_default();
            tokens.push(match word {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
}

/// Where `in`/`notin` are keywords (after a key) and where they are just words (keys, values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// labels.Parser, a recursive descent over the token list.
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            tokens: lex(input),
            pos: 0,
        }
    }

    fn lookahead(&self, context: Context) -> Token<'a> {
        let token = self.tokens.get(self.pos).copied().unwrap_or(Token::End);
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier(token.literal()),
            _ => token,
        }
    }

    fn consume(&mut self, context: Context) -> Token<'a> {
        let token = self.lookahead(context);
        self.pos += 1;
        token
    }

    fn parse(mut self) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.lookahead(Context::Values) {
                Token::Identifier(_) | Token::Bang => {
                    let requirement = self.parse_requirement().map_err(|e| {
                        error(format!("unable to parse requirement: {}", e.message()))
                    })?;
                    requirements.push(requirement);
                    match self.consume(Context::Values) {
                        Token::End => break,
                        Token::Comma => {
                            let next = self.lookahead(Context::Values);
                            if !matches!(next, Token::Identifier(_) | Token::Bang) {
                                return Err(error(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(error(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )));
                        }
                    }
                }
                Token::End => break,
                other => {
                    return Err(error(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )));
                }
            }
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    fn parse_requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = unary {
            return LabelRequirement::new(key, operator, Vec::<String>::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            LabelOperator::In | LabelOperator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        LabelRequirement::new(key, operator, values)
    }

    /// The key, and `Exists`/`DoesNotExist` when nothing but `,` or the end follows.
    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(&'a str, Option<LabelOperator>), SelectorError> {
        let mut operator = None;
        let mut token = self.consume(Context::Values);
        if token == Token::Bang {
            operator = Some(LabelOperator::DoesNotExist);
            token = self.consume(Context::Values);
        }
        let Token::Identifier(key) = token else {
            return Err(error(format!(
                "found '{}', expected: identifier",
                token.literal()
            )));
        };
        let problems = label_key_problems(key);
        if !problems.is_empty() {
            return Err(error(format!(
                "invalid label key {key:?}: {}",
                problems.join("; ")
            )));
        }
        if operator.is_none()
            && matches!(self.lookahead(Context::Values), Token::End | Token::Comma)
        {
            operator = Some(LabelOperator::Exists);
        }
        Ok((key, operator))
    }

    fn parse_operator(&mut self) -> Result<LabelOperator, SelectorError> {
        Ok(match self.consume(Context::KeyAndOperator) {
            Token::In => LabelOperator::In,
            Token::NotIn => LabelOperator::NotIn,
            Token::Equals => LabelOperator::Equals,
            Token::DoubleEquals => LabelOperator::DoubleEquals,
            Token::NotEquals => LabelOperator::NotEquals,
            Token::GreaterThan => LabelOperator::GreaterThan,
            Token::LessThan => LabelOperator::LessThan,
            other => {
                return Err(error(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                )));
            }
        })
    }

    /// `(a,b)`; `()` and empty items between commas are the empty value.
    fn parse_values(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        let open = self.consume(Context::Values);
        if open != Token::OpenPar {
            return Err(error(format!("found '{}' expected: '('", open.literal())));
        }
        match self.lookahead(Context::Values) {
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.consume(Context::Values);
                if close != Token::ClosedPar {
                    return Err(error(format!("found '{}', expected: ')'", close.literal())));
                }
                Ok(values.into_iter().collect())
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![""])
            }
            other => Err(error(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            ))),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<&'a str>, SelectorError> {
        let mut values = BTreeSet::new();
        loop {
            match self.consume(Context::Values) {
                Token::Identifier(value) => {
                    values.insert(value);
                    match self.lookahead(Context::Values) {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(values),
                        other => {
                            return Err(error(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            )));
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert("");
                    }
                    match self.lookahead(Context::Values) {
                        Token::ClosedPar => {
                            values.insert("");
                            return Ok(values);
                        }
                        Token::Comma => {
                            values.insert("");
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(error(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    )));
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<&'a str>, SelectorError> {
        if matches!(self.lookahead(Context::Values), Token::End | Token::Comma) {
            return Ok(vec![""]);
        }
        match self.consume(Context::Values) {
            Token::Identifier(value) => Ok(vec![value]),
            other => Err(error(format!(
                "found '{}', expected: identifier",
                other.literal()
            ))),
        }
    }
}

// Kubernetes' qualified-name and label-value rules (k8s.io/apimachinery validation), with its
// messages: they are what a user sees when a selector names a label that cannot exist.

const LABEL_NAME_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

/// What is wrong with `key` as a label key (IsQualifiedName); empty when it is valid.
fn label_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX {
                    problems.push(format!(
                        "prefix part must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
                    ));
                }
                if !is_dns1123_subdomain(prefix) {
                    problems.push(format!("prefix part {DNS1123_SUBDOMAIN_MESSAGE}"));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {LABEL_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_NAME_MAX {
        problems.push(format!(
            "name part must be no more than {LABEL_NAME_MAX} characters"
        ));
    }
    if !is_label_name(name) {
        problems.push(format!("name part {LABEL_NAME_MESSAGE}"));
    }
    problems
}

/// What is wrong with `value` as a label value; empty when it is valid.
fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > LABEL_NAME_MAX {
        problems.push(format!("must be no more than {LABEL_NAME_MAX} characters"));
    }
    if !value.is_empty() && !is_label_name(value) {
        problems.push(LABEL_VALUE_MESSAGE.to_string());
    }
    problems
}

/// Whether `key` is a valid label key (a qualified name).
pub fn is_valid_label_key(key: &str) -> bool {
    label_key_problems(key).is_empty()
}

/// Whether `value` is a valid label value.
pub fn is_valid_label_value(value: &str) -> bool {
    label_value_problems(value).is_empty()
}

// ---------------------------------------------------------------------------------------------
// Field selectors.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

/// One term of a field selector, its value unescaped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

impl FieldRequirement {
    /// Whether a field whose value is `actual` (`None`: the object lacks it, which Kubernetes
    /// compares as "") satisfies this.
    pub fn matches(&self, actual: Option<&str>) -> bool {
        let equal = actual.unwrap_or_default() == self.value;
        match self.operator {
            FieldOperator::Equals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{operator}{}", self.field, escape_value(&self.value))
    }
}

/// A field selector: the AND of its requirements. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// Sorted, so that equal selectors compare and print equal.
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses `a=b,c!=d,e==f` as `fields.ParseSelector` does: no whitespace trimming, and
    /// `\,`, `\=` and `\\` escape those characters in values.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(selector) {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(error(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                )));
            };
            let value = unescape_value(raw)?;
            // Upstream's identity transform turns a bare `=` into "everything".
            if field.is_empty() && value.is_empty() {
                continue;
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value,
            });
        }
        requirements.sort();
        Ok(FieldSelector { requirements })
    }

    pub fn from_requirements(requirements: impl IntoIterator<Item = FieldRequirement>) -> Self {
        let mut requirements: Vec<FieldRequirement> = requirements.into_iter().collect();
        requirements.sort();
        FieldSelector { requirements }
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The value `field` must equal, if the selector pins it (`metadata.name=x` lets a list
    /// become a get).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Whether the object whose fields `value_of` returns is selected.
    pub fn matches(&self, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches(value_of(&r.field).as_deref()))
    }

    /// [`FieldSelector::matches`] with the fields Kubernetes exposes for `info`.
    pub fn matches_object(&self, info: &ResourceInfo, object: &Value) -> bool {
        self.matches(&|field| field_value(info, object, field))
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(selector: &str) -> Result<Self, Self::Err> {
        Self::parse(selector)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped; the terms keep their escapes.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(selector.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    terms.push(selector.get(start..).unwrap_or_default());
    terms
}

/// The first `!=`, `==` or `=` splits a term into field, operator and raw value.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = term.get(i..).unwrap_or_default();
        let field = term.get(..i).unwrap_or_default();
        for (symbol, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(symbol) {
                return Some((field, operator, value));
            }
        }
    }
    None
}

fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    if !raw.contains(['\\', ',', '=']) {
        return Ok(raw.to_string());
    }
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => value.push(c),
                _ => {
                    return Err(error(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    )));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(error(format!(
                    "invalid field selector: unescaped character in value: {c:?}"
                )));
            }
            _ => value.push(c),
        }
    }
    if escaped {
        return Err(error("invalid field selector: invalid escape sequence: \\"));
    }
    Ok(value)
}

fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

// ---------------------------------------------------------------------------------------------
// Selectable fields per resource: each resource's `ToSelectableFields` and field-label
// conversion in k8s.io/kubernetes (pkg/registry/*/strategy.go, pkg/apis/*/v1/conversion.go).

/// Where a selectable field's value comes from in the object's JSON.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A string at this path; absent is "".
    At(&'static [&'static str]),
    /// A boolean at this path, printed as Go does; absent is "false".
    Bool(&'static [&'static str]),
    /// An integer at this path; absent is "0".
    Int(&'static [&'static str]),
    /// The first address of `status.podIPs`, else `status.podIP`.
    PodIp,
    /// The string at the first path, or at the second when that is empty (event `source`).
    Either(&'static [&'static str], &'static [&'static str]),
}

type Selectable = (&'static str, Source);

const POD_FIELDS: &[Selectable] = &[
    ("spec.nodeName", Source::At(&["spec", "nodeName"])),
    ("spec.restartPolicy", Source::At(&["spec", "restartPolicy"])),
    ("spec.schedulerName", Source::At(&["spec", "schedulerName"])),
    (
        "spec.serviceAccountName",
        Source::At(&["spec", "serviceAccountName"]),
    ),
    ("spec.hostNetwork", Source::Bool(&["spec", "hostNetwork"])),
    ("status.phase", Source::At(&["status", "phase"])),
    ("status.podIP", Source::PodIp),
    (
        "status.nominatedNodeName",
        Source::At(&["status", "nominatedNodeName"]),
    ),
];

const CORE_EVENT_FIELDS: &[Selectable] = &[
    (
        "involvedObject.kind",
        Source::At(&["involvedObject", "kind"]),
    ),
    (
        "involvedObject.namespace",
        Source::At(&["involvedObject", "namespace"]),
    ),
    (
        "involvedObject.name",
        Source::At(&["involvedObject", "name"]),
    ),
    ("involvedObject.uid", Source::At(&["involvedObject", "uid"])),
    (
        "involvedObject.apiVersion",
        Source::At(&["involvedObject", "apiVersion"]),
    ),
    (
        "involvedObject.resourceVersion",
        Source::At(&["involvedObject", "resourceVersion"]),
    ),
    (
        "involvedObject.fieldPath",
        Source::At(&["involvedObject", "fieldPath"]),
    ),
    ("reason", Source::At(&["reason"])),
    ("reportingComponent", Source::At(&["reportingComponent"])),
    (
        "source",
        Source::Either(&["source", "component"], &["reportingComponent"]),
    ),
    ("type", Source::At(&["type"])),
];

// events.k8s.io/v1 is stored as the core Event; its conversion maps its own names onto the
// core ones, so the values are the same fields under their events.k8s.io spelling.
const EVENTS_V1_FIELDS: &[Selectable] = &[
    ("regarding.kind", Source::At(&["regarding", "kind"])),
    (
        "regarding.namespace",
        Source::At(&["regarding", "namespace"]),
    ),
    ("regarding.name", Source::At(&["regarding", "name"])),
    ("regarding.uid", Source::At(&["regarding", "uid"])),
    (
        "regarding.apiVersion",
        Source::At(&["regarding", "apiVersion"]),
    ),
    (
        "regarding.resourceVersion",
        Source::At(&["regarding", "resourceVersion"]),
    ),
    (
        "regarding.fieldPath",
        Source::At(&["regarding", "fieldPath"]),
    ),
    ("reason", Source::At(&["reason"])),
    ("reportingController", Source::At(&["reportingController"])),
    (
        "source",
        Source::Either(&["deprecatedSource", "component"], &["reportingController"]),
    ),
    ("type", Source::At(&["type"])),
];

fn specific_fields(info: &ResourceInfo) -> &'static [Selectable] {
    match (info.group, info.kind) {
        ("", "Pod") => POD_FIELDS,
        ("", "Event") => CORE_EVENT_FIELDS,
        ("events.k8s.io", "Event") => EVENTS_V1_FIELDS,
        ("", "Secret") => &[("type", Source::At(&["type"]))],
        ("", "Node") => &[(
            "spec.unschedulable",
            Source::Bool(&["spec", "unschedulable"]),
        )],
        ("", "Namespace") => &[("status.phase", Source::At(&["status", "phase"]))],
        ("", "Service") => &[
            ("spec.clusterIP", Source::At(&["spec", "clusterIP"])),
            ("spec.type", Source::At(&["spec", "type"])),
        ],
        ("apps", "ReplicaSet") => &[("status.replicas", Source::Int(&["status", "replicas"]))],
        _ => &[],
    }
}

/// The field selectors Kubernetes accepts for `info`: `metadata.name`, `metadata.namespace`
/// for namespaced resources, and the resource's own.
pub fn supported_fields(info: &ResourceInfo) -> Vec<&'static str> {
    let mut fields = vec!["metadata.name"];
    if info.namespaced() {
        fields.push("metadata.namespace");
    }
    fields.extend(specific_fields(info).iter().map(|(name, _)| *name));
    fields
}

/// The value of selectable `field` of `object` as Kubernetes compares it (absent strings are
/// "", absent booleans "false", absent counts "0"); `None` when `field` is not selectable for
/// `info`.
pub fn field_value(info: &ResourceInfo, object: &Value, field: &str) -> Option<String> {
    let source = match field {
        "metadata.name" => Source::At(&["metadata", "name"]),
        "metadata.namespace" if info.namespaced() => Source::At(&["metadata", "namespace"]),
        _ => {
            specific_fields(info)
                .iter()
                .find(|(name, _)| *name == field)?
                .1
        }
    };
    Some(match source {
        Source::At(path) => text(at(object, path)),
        Source::Bool(path) => at(object, path)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        Source::Int(path) => at(object, path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string(),
        Source::PodIp => {
            let first =
                text(at(object, &["status", "podIPs"]).and_then(|ips| ips.get(0)?.get("ip")));
            if first.is_empty() {
                text(at(object, &["status", "podIP"]))
            } else {
                first
            }
        }
        Source::Either(path, fallback) => {
            let value = text(at(object, path));
            if value.is_empty() {
                text(at(object, fallback))
            } else {
                value
            }
        }
    })
}

/// Checks every field of `selector` is selectable for `info`, with Kubernetes' message.
pub fn validate_fields(info: &ResourceInfo, selector: &FieldSelector) -> Result<(), String> {
    let supported = supported_fields(info);
    match selector
        .requirements()
        .iter()
        .find(|r| !supported.contains(&r.field.as_str()))
    {
        Some(r) => Err(format!("field label not supported: {}", r.field)),
        None => Ok(()),
    }
}

fn at<'v>(object: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(object, |value, key| value.get(*key))
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCES, lookup};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector:?}: {e}"))
            .matches(&labels(pairs))
    }

    fn resource(group: &str, plural: &str) -> &'static ResourceInfo {
        lookup(group, "v1", plural).expect("resource in the table")
    }

    #[test]
    fn label_operators_match_as_kubernetes_does() {
        let web = [("app", "web"), ("tier", "front"), ("replicas", "3")];
        for (selector, expected) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (x)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("replicas>2", true),
            ("replicas>3", false),
            ("replicas<4", true),
            ("app>1", false),
            ("missing<4", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("  app = web ,\ttier in ( front , back ) ", true),
            ("missing=", false),
            ("missing!=", true),
        ] {
            assert_eq!(selects(selector, &web), expected, "{selector:?}");
        }
        assert!(selects("a=", &[("a", "")]));
        assert!(selects("a in (,x)", &[("a", "")]));
        assert!(selects("a in ()", &[("a", "")]));
        assert!(selects(
            "app.kubernetes.io/name=web",
            &[("app.kubernetes.io/name", "web")]
        ));
        // "in" and "notin" are keywords only where an operator goes.
        assert!(selects("in in (notin)", &[("in", "notin")]));
        assert!(selects("notin=in", &[("notin", "in")]));
    }

    #[test]
    fn label_selectors_print_canonically() {
        for (input, printed) in [
            ("b=1,a in (y,x)", "a in (x,y),b=1"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("!a,b==c,d!=e,f>1,g<2", "!a,b==c,d!=e,f>1,g<2"),
            ("a in (x,x)", "a in (x)"),
            ("a=", "a="),
        ] {
            let selector: LabelSelector = input.parse().unwrap();
            assert_eq!(selector.to_string(), printed, "{input:?}");
            assert_eq!(LabelSelector::parse(printed).unwrap(), selector);
        }
    }

    #[test]
    fn bad_label_selectors_say_why() {
        for (input, needle) in [
            ("a b", "expected: in, notin, =, ==, !=, gt, lt"),
            ("a=b=c", "found '=', expected: ',' or 'end of string'"),
            ("a=b,", "expected: identifier after ','"),
            ("a,,b", "expected: identifier after ','"),
            (",a", "expected: !, identifier, or 'end of string'"),
            ("!", "found '', expected: identifier"),
            ("!a=b", "expected: ',' or 'end of string'"),
            ("a in x", "expected: '('"),
            ("a in (x", "expected: ',' or ')'"),
            ("a in (x y)", "expected: ',' or ')'"),
            ("a in (=)", "expected: ',', ')' or identifier"),
            ("a>x", "the value must be an integer"),
            ("a>", "the value must be an integer"),
            ("a>-1", "invalid label value"),
            ("-a=b", "name part must consist of alphanumeric characters"),
            ("a=-b", "a valid label must be an empty string"),
            (
                "Example.com/a=b",
                "prefix part a lowercase RFC 1123 subdomain",
            ),
            ("/a", "prefix part must be non-empty"),
            ("a/", "name part must be non-empty"),
            ("a/b/c", "a valid label key must consist of"),
            (
                &format!("{}=x", "k".repeat(64)),
                "must be no more than 63 characters",
            ),
            (
                &format!("k={}", "v".repeat(64)),
                "must be no more than 63 characters",
            ),
        ] {
            let err = LabelSelector::parse(input).unwrap_err();
            assert!(
                err.message().contains(needle),
                "{input:?}: {err} (wanted {needle:?})"
            );
        }
        assert!(LabelSelector::parse(&format!("{}/{}=x", "p".repeat(253), "k".repeat(63))).is_ok());
        assert!(LabelSelector::parse(&format!("{}/k=x", "p".repeat(254))).is_err());
    }

    #[test]
    fn structured_label_selectors() {
        let selector = LabelSelector::from_k8s(&meta::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "edge".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "Exists".into(),
                    values: Some(vec![]),
                },
            ]),
        })
        .unwrap();
        assert_eq!(
            selector.to_string(),
            "app=web,!canary,tier in (edge,front),zone"
        );
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "edge"), ("zone", "a")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("zone", "a"),
            ("canary", "1")
        ])));

        assert!(
            LabelSelector::from_k8s(&meta::LabelSelector::default())
                .unwrap()
                .is_empty()
        );
        let bad = |operator: &str, values: Option<Vec<String>>| {
            LabelSelector::from_k8s(&meta::LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "k".into(),
                    operator: operator.into(),
                    values,
                }]),
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad("Gt", Some(vec!["1".into()])).contains("\"Gt\" is not a valid"));
        assert!(bad("In", None).contains("can't be empty"));
        assert!(bad("Exists", Some(vec!["x".into()])).contains("must be empty"));
        let invalid_label = LabelSelector::from_k8s(&meta::LabelSelector {
            match_labels: Some(labels(&[("app", "not valid")])),
            match_expressions: None,
        });
        assert!(invalid_label.is_err());
    }

    #[test]
    fn label_selectors_from_sets_and_json() {
        let selector = LabelSelector::from_labels(&labels(&[("app", "web"), ("tier", "db")]));
        assert_eq!(selector.to_string(), "app=web,tier=db");
        assert!(selector.matches_value(&json!({"app": "web", "tier": "db", "x": "y"})));
        assert!(!selector.matches_value(&json!({"app": "web"})));
        assert!(!selector.matches_value(&Value::Null));
        assert!(LabelSelector::everything().matches_value(&Value::Null));
        let absent = LabelSelector::parse("!app").unwrap();
        assert!(absent.matches_value(&json!({"metadata": {}})["metadata"]["labels"]));
        assert!(!absent.matches_value(&json!({"app": "x"})));
    }

    #[test]
    fn field_selectors_parse_like_fields_parse_selector() {
        let selector =
            FieldSelector::parse("status.phase!=Running,metadata.name=web,spec.nodeName==n1")
                .unwrap();
        assert_eq!(
            selector.to_string(),
            "metadata.name=web,spec.nodeName=n1,status.phase!=Running"
        );
        assert_eq!(selector.exact("metadata.name"), Some("web"));
        assert_eq!(selector.exact("status.phase"), None);
        assert_eq!(selector.exact("spec.nodeName"), Some("n1"));

        let escaped = FieldSelector::parse(r"a=x\,y\=z\\w,b!=").unwrap();
        assert_eq!(
            escaped.requirements(),
            &[
                FieldRequirement {
                    field: "a".into(),
                    operator: FieldOperator::Equals,
                    value: r"x,y=z\w".into()
                },
                FieldRequirement {
                    field: "b".into(),
                    operator: FieldOperator::NotEquals,
                    value: "".into()
                },
            ]
        );
        assert_eq!(escaped.to_string(), r"a=x\,y\=z\\w,b!=");

        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,=,").unwrap().is_empty());
        // No trimming, as upstream.
        assert_eq!(
            FieldSelector::parse("a = b").unwrap().requirements()[0].field,
            "a "
        );

        for (input, needle) in [
            ("abc", "invalid selector: 'abc'; can't understand 'abc'"),
            ("a=b,c", "can't understand 'c'"),
            (r"a=b\x", r"invalid escape sequence: \x"),
            (r"a=b\", r"invalid escape sequence: \"),
            ("a=b=c", "unescaped character in value: '='"),
        ] {
            let err = FieldSelector::parse(input).unwrap_err();
            assert!(err.message().contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn absent_fields_compare_as_empty() {
        let pods = resource("", "pods");
        let pending = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {}});
        let running = json!({"metadata": {"name": "q", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.1"}]}});
        let select = |s: &str, object: &Value| {
            FieldSelector::parse(s)
                .unwrap()
                .matches_object(pods, object)
        };
        assert!(select("spec.nodeName=", &pending));
        assert!(!select("spec.nodeName=", &running));
        assert!(select("spec.nodeName!=", &running));
        assert!(select("spec.hostNetwork=false", &pending));
        assert!(select(
            "spec.hostNetwork=true,status.phase=Running",
            &running
        ));
        assert!(select("status.podIP=10.0.0.1", &running));
        assert!(select(
            "metadata.namespace=default,metadata.name!=p",
            &running
        ));
        // An unsupported field is absent here; validate_fields is what rejects it.
        assert!(select("spec.bogus=", &running));
        let plain = FieldSelector::parse("a=1,b!=2").unwrap();
        assert!(plain.matches(&|f| (f == "a").then(|| "1".to_string())));
        assert!(!plain.matches(&|f| Some(if f == "a" { "1" } else { "2" }.to_string())));
    }

    #[test]
    fn selectable_fields_per_resource() {
        let pods = resource("", "pods");
        assert_eq!(
            supported_fields(pods),
            [
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName"
            ]
        );
        let nodes = resource("", "nodes");
        assert_eq!(
            supported_fields(nodes),
            ["metadata.name", "spec.unschedulable"]
        );
        assert_eq!(
            field_value(
                nodes,
                &json!({"metadata": {"name": "n"}}),
                "spec.unschedulable"
            ),
            Some("false".into())
        );
        assert_eq!(
            field_value(
                nodes,
                &json!({"metadata": {"name": "n"}}),
                "metadata.namespace"
            ),
            None
        );
        let pod = json!({"status": {"podIP": "10.0.0.9"}});
        assert_eq!(
            field_value(pods, &pod, "status.podIP"),
            Some("10.0.0.9".into())
        );
        assert_eq!(field_value(pods, &pod, "metadata.name"), Some("".into()));

        let replicasets = resource("apps", "replicasets");
        assert_eq!(
            field_value(replicasets, &json!({}), "status.replicas"),
            Some("0".into())
        );
        assert_eq!(
            field_value(
                replicasets,
                &json!({"status": {"replicas": 3}}),
                "status.replicas"
            ),
            Some("3".into())
        );
        assert_eq!(
            field_value(resource("", "secrets"), &json!({"type": "Opaque"}), "type"),
            Some("Opaque".into())
        );
        assert_eq!(
            field_value(
                resource("", "namespaces"),
                &json!({"status": {"phase": "Active"}}),
                "status.phase"
            ),
            Some("Active".into())
        );
        assert_eq!(
            field_value(
                resource("", "services"),
                &json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1"}}),
                "spec.clusterIP"
            ),
            Some("10.96.0.1".into())
        );

        let events = resource("", "events");
        let event = json!({"involvedObject": {"kind": "Pod", "name": "p", "uid": "u"},
                           "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"});
        assert_eq!(
            field_value(events, &event, "involvedObject.kind"),
            Some("Pod".into())
        );
        assert_eq!(
            field_value(events, &event, "source"),
            Some("kubelet".into())
        );
        let with_source = json!({"source": {"component": "scheduler"}, "reportingComponent": "x"});
        assert_eq!(
            field_value(events, &with_source, "source"),
            Some("scheduler".into())
        );

        let events_v1 = resource("events.k8s.io", "events");
        let event =
            json!({"regarding": {"kind": "Pod", "name": "p"}, "reportingController": "kubelet"});
        assert_eq!(
            field_value(events_v1, &event, "regarding.name"),
            Some("p".into())
        );
        assert_eq!(
            field_value(events_v1, &event, "source"),
            Some("kubelet".into())
        );
        assert_eq!(field_value(events_v1, &event, "involvedObject.name"), None);

        assert_eq!(
            supported_fields(resource("", "configmaps")),
            ["metadata.name", "metadata.namespace"]
        );
        assert_eq!(
            supported_fields(resource("storage.k8s.io", "storageclasses")),
            ["metadata.name"]
        );
        for info in RESOURCES {
            for field in supported_fields(info) {
                assert!(
                    field_value(info, &json!({}), field).is_some(),
                    "{}: {field}",
                    info.kind
                );
            }
        }
    }

    #[test]
    fn unsupported_fields_get_kubernetes_message() {
        let deployments = resource("apps", "deployments");
        let ok = FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system").unwrap();
        assert_eq!(validate_fields(deployments, &ok), Ok(()));
        let bad = FieldSelector::parse("metadata.name=web,spec.replicas=1").unwrap();
        assert_eq!(
            validate_fields(deployments, &bad),
            Err("field label not supported: spec.replicas".into())
        );
        let cluster = FieldSelector::parse("metadata.namespace=x").unwrap();
        assert_eq!(
            validate_fields(resource("", "nodes"), &cluster),
            Err("field label not supported: metadata.namespace".into())
        );
        let pods = FieldSelector::parse("spec.nodeName=n1,status.phase=Running").unwrap();
        assert_eq!(validate_fields(resource("", "pods"), &pods), Ok(()));
    }

    /// Strings made of what matters to the label lexer and parser.
    fn label_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b"),
                Just("1"),
                Just("-"),
                Just("."),
                Just("/"),
                Just("x.io/"),
                Just("="),
                Just("=="),
                Just("!"),
                Just("!="),
                Just(","),
                Just("("),
                Just(")"),
                Just(" "),
                Just(">"),
                Just("<"),
                Just(" in "),
                Just(" notin "),
                Just("in"),
                Just("é"),
            ],
            0..16,
        )
        .prop_map(|parts| parts.concat())
    }

    fn field_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just("b."),
                Just("="),
                Just("=="),
                Just("!"),
                Just("!="),
                Just(","),
                Just("\\"),
                Just("\\,"),
                Just("\\="),
                Just("\\\\"),
                Just(" "),
                Just("ü"),
            ],
            0..14,
        )
        .prop_map(|parts| parts.concat())
    }

    fn label_key() -> impl Strategy<Value = String> {
        (
            prop::option::of("[a-z0-9]([a-z0-9.-]{0,6}[a-z0-9])?"),
            "[A-Za-z0-9]([A-Za-z0-9._-]{0,6}[A-Za-z0-9])?",
        )
            .prop_filter_map("valid key", |(prefix, name)| {
                let key = match prefix {
                    Some(prefix) => format!("{prefix}/{name}"),
                    None => name,
                };
                is_valid_label_key(&key).then_some(key)
            })
    }

    fn label_value() -> impl Strategy<Value = String> {
        "([A-Za-z0-9]([A-Za-z0-9._-]{0,4}[A-Za-z0-9])?)?"
    }

    fn requirement() -> impl Strategy<Value = String> {
        (
            label_key(),
            0..9usize,
            prop::collection::vec(label_value(), 1..4),
            -5i64..50,
        )
            .prop_map(|(key, op, values, n)| match op {
                0 => format!("{key}={}", values[0]),
                1 => format!("{key}=={}", values[0]),
                2 => format!("{key} != {}", values[0]),
                3 => format!("{key} in ({})", values.join(",")),
                4 => format!("{key} notin ({})", values.join(", ")),
                5 => key,
                6 => format!("!{key}"),
                7 => format!("{key}>{}", n.max(0)),
                _ => format!("{key}<{}", n.max(0)),
            })
    }

    proptest! {
        #[test]
        fn label_parser_never_panics(input in any::<String>(), soup in label_soup()) {
            let _ = LabelSelector::parse(&input);
            let _ = LabelSelector::parse(&soup);
        }

        #[test]
        fn printed_label_selectors_parse_back(soup in label_soup()) {
            if let Ok(selector) = LabelSelector::parse(&soup) {
                let printed = selector.to_string();
                prop_assert_eq!(LabelSelector::parse(&printed), Ok(selector), "{}", printed);
            }
        }

        #[test]
        fn generated_label_selectors_round_trip(requirements in prop::collection::vec(requirement(), 0..5)) {
            let input = requirements.join(",");
            let selector = LabelSelector::parse(&input);
            prop_assert!(selector.is_ok(), "{}: {:?}", input, selector);
            let selector = selector.unwrap();
            prop_assert_eq!(selector.requirements().len(), requirements.len());
            let printed = selector.to_string();
            prop_assert_eq!(LabelSelector::parse(&printed), Ok(selector), "{}", printed);
        }

        #[test]
        fn a_set_selects_itself(set in prop::collection::btree_map(label_key(), label_value(), 0..5)) {
            let selector = LabelSelector::from_labels(&set);
            prop_assert!(selector.matches(&set));
            prop_assert_eq!(LabelSelector::parse(&selector.to_string()), Ok(selector));
        }

        #[test]
        fn field_parser_never_panics(input in any::<String>(), soup in field_soup()) {
            let _ = FieldSelector::parse(&input);
            let _ = FieldSelector::parse(&soup);
        }

        #[test]
        fn printed_field_selectors_parse_back(soup in field_soup()) {
            if let Ok(selector) = FieldSelector::parse(&soup) {
                let printed = selector.to_string();
                prop_assert_eq!(FieldSelector::parse(&printed), Ok(selector), "{}", printed);
            }
        }

        #[test]
        fn field_values_survive_escaping(field in "[a-z.]{1,8}", value in any::<String>()) {
            let selector = FieldSelector::from_requirements([FieldRequirement {
                field: field.clone(),
                operator: FieldOperator::Equals,
                value: value.clone(),
            }]);
            let parsed = FieldSelector::parse(&selector.to_string()).unwrap();
            prop_assert_eq!(parsed.exact(&field), Some(value.as_str()));
        }
    }
}
