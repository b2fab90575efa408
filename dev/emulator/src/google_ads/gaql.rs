//! A small parser for the Google Ads Query Language.
//!
//! Grammar covered (keywords case-insensitive):
//!
//! ```text
//! SELECT field [, field]* FROM resource
//!   [WHERE condition [AND condition]*]
//!   [ORDER BY field [ASC|DESC] [, …]]
//!   [LIMIT n]
//!   [PARAMETERS name = value [, …]]
//! condition := field (= | != | > | >= | < | <=) literal
//!            | field [NOT] IN (literal [, literal]*)
//!            | field BETWEEN literal AND literal
//!            | field DURING DATE_RANGE_CONSTANT
//!            | field [NOT] LIKE 'pattern'
//!            | field IS [NOT] NULL
//! literal   := 'string' | "string" | number | ENUM_CONSTANT
//! ```
//!
//! Errors carry the real `QueryError` enum names so that extractors see what Google sends.

/// A GAQL error: `QueryError` code, message, offending text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct GaqlError {
    pub code: &'static str,
    pub message: String,
    pub trigger: Option<String>,
}

impl GaqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        GaqlError {
            code,
            message: message.into(),
            trigger: None,
        }
    }

    pub fn with_trigger(mut self, t: impl Into<String>) -> Self {
        self.trigger = Some(t.into());
        self
    }
}

/// A literal value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64, String),
    /// An enum constant or keyword-like bare word (`ENABLED`, `TRUE`).
    Ident(String),
}

impl Literal {
    /// The literal's text (for string comparisons).
    pub fn text(&self) -> &str {
        match self {
            Literal::Str(s) | Literal::Ident(s) => s,
            Literal::Num(_, s) => s,
        }
    }
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// One WHERE condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Cmp {
        field: String,
        op: CmpOp,
        value: Literal,
    },
    In {
        field: String,
        negated: bool,
        values: Vec<Literal>,
    },
    Between {
        field: String,
        lo: Literal,
        hi: Literal,
    },
    During {
        field: String,
        range: String,
    },
    Like {
        field: String,
        negated: bool,
        pattern: String,
    },
    IsNull {
        field: String,
        negated: bool,
    },
}

impl Condition {
    pub fn field(&self) -> &str {
        match self {
            Condition::Cmp { field, .. }
            | Condition::In { field, .. }
            | Condition::Between { field, .. }
            | Condition::During { field, .. }
            | Condition::Like { field, .. }
            | Condition::IsNull { field, .. } => field,
        }
    }
}

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub select: Vec<String>,
    pub from: String,
    pub conditions: Vec<Condition>,
    pub order_by: Vec<(String, bool)>,
    pub limit: Option<u64>,
    pub parameters: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Comma,
    LParen,
    RParen,
    Op(&'static str),
}

fn tokenize(q: &str) -> Result<Vec<Tok>, GaqlError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            c if c.is_whitespace() => i += 1,
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                out.push(Tok::Op(match (c, eq) {
                    ('<', true) => "<=",
                    ('<', false) => "<",
                    ('>', true) => ">=",
                    _ => ">",
                }));
                i += if eq { 2 } else { 1 };
            }
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(GaqlError::new(
                                "UNTERMINATED_STRING",
                                "Unterminated string literal.",
                            ));
                        }
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(&e) if e == quote || e == '\\' || e == '%' || e == '_' => {
                                    s.push(e)
                                }
                                _ => {
                                    return Err(GaqlError::new(
                                        "BAD_ESCAPE_SEQUENCE",
                                        "Invalid escape sequence.",
                                    ));
                                }
                            }
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_ascii_digit() || *ch == '.')
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '.')
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => {
                return Err(GaqlError::new(
                    "BAD_SYMBOL",
                    format!("Error in query: unexpected symbol '{other}'."),
                )
                .with_trigger(other.to_string()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn field(&mut self) -> Result<String, GaqlError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            Some(t) => Err(GaqlError::new(
                "BAD_FIELD_NAME",
                format!("Error in query: expected a field name, found {t:?}."),
            )),
            None => Err(end()),
        }
    }

    fn literal(&mut self) -> Result<Literal, GaqlError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Literal::Str(s)),
            Some(Tok::Num(n)) => n
                .parse::<f64>()
                .map(|v| Literal::Num(v, n.clone()))
                .map_err(|_| {
                    GaqlError::new(
                        "BAD_NUMBER",
                        format!("Encountered number can not be parsed: {n}."),
                    )
                    .with_trigger(n)
                }),
            Some(Tok::Word(w)) => Ok(Literal::Ident(w)),
            Some(t) => Err(GaqlError::new(
                "BAD_VALUE",
                format!("Error in query: expected a value, found {t:?}."),
            )),
            None => Err(end()),
        }
    }

    fn condition(&mut self) -> Result<Condition, GaqlError> {
        let field = self.field()?;
        if self.eat_kw("BETWEEN") {
            let lo = self.literal()?;
            if !self.eat_kw("AND") {
                return Err(GaqlError::new(
                    "EXPECTED_AND",
                    "Expected AND between values with BETWEEN operator.",
                ));
            }
            let hi = self.literal()?;
            return Ok(Condition::Between { field, lo, hi });
        }
        if self.eat_kw("DURING") {
            return match self.next() {
                Some(Tok::Word(w)) => Ok(Condition::During {
                    field,
                    range: w.to_ascii_uppercase(),
                }),
                _ => Err(GaqlError::new(
                    "INVALID_VALUE_WITH_DURING_OPERATOR",
                    "Invalid date literal supplied for DURING operator.",
                )),
            };
        }
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            if !self.eat_kw("NULL") {
                return Err(GaqlError::new(
                    "BAD_OPERATOR",
                    "Error in query: expected NULL after IS.",
                ));
            }
            return Ok(Condition::IsNull { field, negated });
        }
        let negated = self.eat_kw("NOT");
        if self.eat_kw("IN") {
            if self.next() != Some(Tok::LParen) {
                return Err(GaqlError::new(
                    "EXPECTED_LIST",
                    "The operator used in the conditions requires the value to be a list.",
                ));
            }
            let mut values = vec![self.literal()?];
            loop {
                match self.next() {
                    Some(Tok::Comma) => values.push(self.literal()?),
                    Some(Tok::RParen) => break,
                    Some(_) => {
                        return Err(GaqlError::new("EXPECTED_LIST", "Malformed list of values."));
                    }
                    None => return Err(end()),
                }
            }
            return Ok(Condition::In {
                field,
                negated,
                values,
            });
        }
        if self.eat_kw("LIKE") {
            return match self.next() {
                Some(Tok::Str(pattern)) => Ok(Condition::Like {
                    field,
                    negated,
                    pattern,
                }),
                _ => Err(GaqlError::new(
                    "BAD_VALUE",
                    "LIKE requires a string pattern.",
                )),
            };
        }
        if negated {
            return Err(GaqlError::new(
                "BAD_OPERATOR",
                "Error in query: NOT must be followed by IN or LIKE.",
            ));
        }
        let op = match self.next() {
            Some(Tok::Op("=")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Word(w)) => {
                return Err(GaqlError::new(
                    "BAD_OPERATOR",
                    format!("Invalid operator encountered: {w}."),
                )
                .with_trigger(w));
            }
            Some(_) => {
                return Err(GaqlError::new(
                    "BAD_OPERATOR",
                    "Invalid operator encountered.",
                ));
            }
            None => return Err(end()),
        };
        let value = self.literal()?;
        Ok(Condition::Cmp { field, op, value })
    }
}

fn end() -> GaqlError {
    GaqlError::new(
        "UNEXPECTED_END_OF_QUERY",
        "Error in query: unexpected end of query.",
    )
}

/// Parses a GAQL query.
pub fn parse(q: &str) -> Result<Query, GaqlError> {
    let mut p = Parser {
        toks: tokenize(q)?,
        pos: 0,
    };
    if !p.eat_kw("SELECT") {
        return Err(GaqlError::new(
            "EXPECTED_SELECT",
            "Error in query: expected SELECT.",
        ));
    }
    let mut select = vec![p.field()?];
    while p.peek() == Some(&Tok::Comma) {
        p.pos += 1;
        select.push(p.field()?);
    }
    if !p.eat_kw("FROM") {
        return Err(GaqlError::new("EXPECTED_FROM", "Missing FROM clause."));
    }
    let from = match p.next() {
        Some(Tok::Word(w)) => w,
        _ => {
            return Err(GaqlError::new(
                "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE",
                "Invalid resource type was specified in the FROM clause.",
            ));
        }
    };
    let mut conditions = Vec::new();
    if p.eat_kw("WHERE") {
        conditions.push(p.condition()?);
        while p.eat_kw("AND") {
            conditions.push(p.condition()?);
        }
    }
    let mut order_by = Vec::new();
    if p.eat_kw("ORDER") {
        if !p.eat_kw("BY") {
            return Err(GaqlError::new(
                "EXPECTED_BY",
                "Expecting ORDER BY to have BY.",
            ));
        }
        loop {
            let f = p.field()?;
            let desc = if p.eat_kw("DESC") {
                true
            } else {
                p.eat_kw("ASC");
                false
            };
            order_by.push((f, desc));
            if p.peek() == Some(&Tok::Comma) {
                p.pos += 1;
            } else {
                break;
            }
        }
    }
    let mut limit = None;
    if p.eat_kw("LIMIT") {
        match p.next() {
            Some(Tok::Num(n)) => match n.parse::<u64>() {
                Ok(v) if v > 0 => limit = Some(v),
                _ => {
                    return Err(GaqlError::new(
                        "BAD_LIMIT_VALUE",
                        format!("Limit value is invalid: {n}."),
                    )
                    .with_trigger(n));
                }
            },
            _ => return Err(GaqlError::new("BAD_LIMIT_VALUE", "Limit value is invalid.")),
        }
    }
    let mut parameters = Vec::new();
    if p.eat_kw("PARAMETERS") {
        loop {
            let name = p.field()?;
            if p.next() != Some(Tok::Op("=")) {
                return Err(GaqlError::new(
                    "BAD_PARAMETER_VALUE",
                    "Parameter must be name = value.",
                ));
            }
            let value = p.literal()?;
            parameters.push((name, value.text().to_string()));
            if p.peek() == Some(&Tok::Comma) {
                p.pos += 1;
            } else {
                break;
            }
        }
    }
    if let Some(t) = p.next() {
        let text = match t {
            Tok::Word(w) | Tok::Str(w) | Tok::Num(w) => w,
            other => format!("{other:?}"),
        };
        return Err(GaqlError::new(
            "UNEXPECTED_INPUT",
            format!("Error in query: unexpected input {text}."),
        )
        .with_trigger(text));
    }
    Ok(Query {
        select,
        from,
        conditions,
        order_by,
        limit,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_typical_metrics_query() {
        let q = parse(
            "SELECT campaign.id, ad_group_ad.ad.id, metrics.cost_micros, segments.date \
             FROM ad_group_ad \
             WHERE segments.date BETWEEN '2025-01-01' AND '2025-01-31' AND campaign.status != 'REMOVED' \
             AND metrics.impressions > 0 AND campaign.status IN (ENABLED, 'PAUSED') \
             ORDER BY segments.date DESC LIMIT 100 PARAMETERS include_drafts = true",
        );
        let q = match q {
            Ok(q) => q,
            Err(e) => panic!("parse failed: {e}"),
        };
        assert_eq!(q.select.len(), 4);
        assert_eq!(q.from, "ad_group_ad");
        assert_eq!(q.conditions.len(), 4);
        assert!(
            matches!(&q.conditions[0], Condition::Between { field, .. } if field == "segments.date")
        );
        assert_eq!(q.order_by, vec![("segments.date".to_string(), true)]);
        assert_eq!(q.limit, Some(100));
        assert_eq!(
            q.parameters,
            vec![("include_drafts".to_string(), "true".to_string())]
        );
    }

    #[test]
    fn reports_real_error_codes() {
        assert_eq!(
            parse("SELECT campaign.id").map_err(|e| e.code),
            Err("EXPECTED_FROM")
        );
        assert_eq!(parse("SELECT campaign.id FROM campaign WHERE segments.date BETWEEN '2025-01-01' '2025-01-02'").map_err(|e| e.code), Err("EXPECTED_AND"));
        assert_eq!(
            parse("SELECT campaign.id FROM campaign LIMIT 0").map_err(|e| e.code),
            Err("BAD_LIMIT_VALUE")
        );
        assert_eq!(
            parse("SELECT campaign.id FROM campaign WHERE campaign.name = 'x").map_err(|e| e.code),
            Err("UNTERMINATED_STRING")
        );
    }
}
