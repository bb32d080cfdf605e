//! Declared alert rules: `name[@collection]: expression`, e.g.
//! `big_order@orders: amount > 10000`. An expression compares document fields (dotted paths)
//! with numbers, strings and booleans (`> >= < <= == !=`), combined with `and`, `or`, `not`
//! and parentheses. A rule fires on the change that makes it true for a key: an insert where
//! it holds, an update where it did not hold before and holds now.
//!
//! A small parser rather than a crate: `evalexpr` 12 and `cel-interpreter` (evaluated) bring
//! their own value types, functions and assignment, and neither reads a dotted path into a
//! JSON document without copying it into their context first; the grammar here is ten lines.
//! A comparison with a missing field, or with a value of another type, is false (`!=` is its
//! negation, so it is true).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Names the rule in alerts.
    pub name: String,
    /// The collection it watches; `None` is every collection.
    pub collection: Option<String>,
    /// The expression as written.
    pub source: String,
    #[serde(skip)]
    expr: Option<Expr>,
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `path op literal`.
    Cmp(String, Op, Value),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Rule {
    /// Parse `name[@collection]: expression`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((head, body)) = text.split_once(':') else {
            return Err(format!("rule `{text}`: write `name[@collection]: expression`"));
        };
        let (name, collection) = match head.split_once('@') {
            Some((n, c)) => (n.trim(), Some(c.trim().to_string())),
            None => (head.trim(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(format!("rule `{}`: the name must be letters, digits, `_`, `-` or `.`", head.trim()));
        }
        if collection.as_deref() == Some("") {
            return Err(format!("rule `{name}`: `@` must be followed by a collection"));
        }
        let expr = parse_expr(body).map_err(|e| format!("rule `{name}`: {e}"))?;
        Ok(Self { name: name.into(), collection, source: body.trim().into(), expr: Some(expr) })
    }

    /// Build a rule from a models file's `[[rule]]` table's parts.
    pub fn from_parts(name: &str, collection: Option<&str>, expression: &str) -> Result<Self, String> {
        let head = match collection {
            Some(c) => format!("{name}@{c}"),
            None => name.to_string(),
        };
        Self::parse(&format!("{head}: {expression}"))
    }

    /// After loading a checkpoint: parse the expression again.
    pub fn compiled(mut self) -> Result<Self, String> {
        self.expr = Some(parse_expr(&self.source).map_err(|e| format!("rule `{}`: {e}", self.name))?);
        Ok(self)
    }

    /// True if the rule watches `collection`.
    pub fn watches(&self, collection: &str) -> bool {
        self.collection.as_deref().is_none_or(|c| c == collection)
    }

    /// True if `doc` satisfies the rule.
    pub fn holds(&self, doc: &Value) -> bool {
        self.expr.as_ref().is_some_and(|e| eval(e, doc))
    }

    /// True if a change from `before` (the document held, if any) to `after` makes it true.
    pub fn fires(&self, before: Option<&Value>, after: &Value) -> bool {
        self.holds(after) && !before.is_some_and(|b| self.holds(b))
    }
}

/// Parse `SINK_ALERT_RULES`: rules separated by `;` (outside quotes); empty parts are skipped.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules: Vec<Rule> = Vec::new();
    for part in split_outside_quotes(text, ';') {
        if part.trim().is_empty() {
            continue;
        }
        let rule = Rule::parse(part)?;
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(format!("rule `{}` is declared twice", rule.name));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let (mut out, mut start, mut quote) = (Vec::new(), 0, None);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c == sep => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// Look up a dotted path.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, part| v.get(part))
}

fn eval(e: &Expr, doc: &Value) -> bool {
    match e {
        Expr::And(a, b) => eval(a, doc) && eval(b, doc),
        Expr::Or(a, b) => eval(a, doc) || eval(b, doc),
        Expr::Not(a) => !eval(a, doc),
        Expr::Cmp(path, op, lit) => {
            let ord = lookup(doc, path).and_then(|v| compare(v, lit));
            match (op, ord) {
                (Op::Ne, ord) => ord != Some(Ordering::Equal),
                (_, None) => false,
                (Op::Gt, Some(o)) => o == Ordering::Greater,
                (Op::Ge, Some(o)) => o != Ordering::Less,
                (Op::Lt, Some(o)) => o == Ordering::Less,
                (Op::Le, Some(o)) => o != Ordering::Greater,
                (Op::Eq, Some(o)) => o == Ordering::Equal,
            }
        }
    }
}

/// Order a field's value against a literal of the same type; `None` across types.
fn compare(v: &Value, lit: &Value) -> Option<Ordering> {
    match (v, lit) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Value),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokens(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if "<>=!".contains(c) {
            let two = cs.get(i + 1) == Some(&'=');
            let op = match (c, two) {
                ('>', true) => Op::Ge,
                ('>', false) => Op::Gt,
                ('<', true) => Op::Le,
                ('<', false) => Op::Lt,
                ('=', true) => Op::Eq,
                ('!', true) => Op::Ne,
                _ => return Err(format!("`{c}` is not an operator (use > >= < <= == !=)")),
            };
            out.push(Tok::Op(op));
            i += if two { 2 } else { 1 };
        } else if c == '"' || c == '\'' {
            let end = cs[i + 1..].iter().position(|&d| d == c).ok_or("a string is not closed")?;
            out.push(Tok::Lit(Value::String(cs[i + 1..i + 1 + end].iter().collect())));
            i += end + 2;
        } else if c.is_ascii_digit()
            || ((c == '-' || c == '+' || c == '.') && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit() || *d == '.'))
        {
            let start = i;
            i += 1;
            while i < cs.len()
                && (cs[i].is_ascii_alphanumeric()
                    || cs[i] == '.'
                    || ((cs[i] == '-' || cs[i] == '+') && matches!(cs[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            let text: String = cs[start..i].iter().collect();
            let n: f64 = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
            let v = serde_json::Number::from_f64(n).ok_or_else(|| format!("`{text}` is not a finite number"))?;
            out.push(Tok::Lit(Value::Number(v)));
        } else if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || "_.$-".contains(cs[i])) {
                i += 1;
            }
            let word: String = cs[start..i].iter().collect();
            out.push(match word.as_str() {
                "and" => Tok::And,
                "or" => Tok::Or,
                "not" => Tok::Not,
                "true" => Tok::Lit(Value::Bool(true)),
                "false" => Tok::Lit(Value::Bool(false)),
                _ => Tok::Ident(word),
            });
        } else {
            return Err(format!("unexpected `{c}`"));
        }
    }
    Ok(out)
}

fn parse_expr(s: &str) -> Result<Expr, String> {
    let toks = tokens(s)?;
    if toks.is_empty() {
        return Err("the expression is empty".into());
    }
    let mut p = Parser { toks, at: 0 };
    let e = p.or()?;
    if p.at < p.toks.len() {
        return Err(format!("unexpected {} after a complete expression", p.describe()));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end".into(),
            Some(Tok::Ident(w)) => format!("`{w}`"),
            Some(Tok::Lit(v)) => format!("`{v}`"),
            Some(Tok::Op(_)) => "an operator".into(),
            Some(Tok::And) => "`and`".into(),
            Some(Tok::Or) => "`or`".into(),
            Some(Tok::Not) => "`not`".into(),
            Some(Tok::Open) => "`(`".into(),
            Some(Tok::Close) => "`)`".into(),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Tok::Open) => {
                self.at += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return Err(format!("expected `)` but found {}", self.describe()));
                }
                self.at += 1;
                Ok(e)
            }
            Some(Tok::Ident(path)) => {
                self.at += 1;
                let Some(Tok::Op(op)) = self.peek().cloned() else {
                    return Err(format!("expected a comparison after `{path}` but found {}", self.describe()));
                };
                self.at += 1;
                let Some(Tok::Lit(v)) = self.peek().cloned() else {
                    return Err(format!(
                        "expected a number, a string or a boolean after `{path}` but found {}",
                        self.describe()
                    ));
                };
                self.at += 1;
                Ok(Expr::Cmp(path, op, v))
            }
            _ => Err(format!("expected a field, `not` or `(` but found {}", self.describe())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_parse_and_evaluate() {
        let rules =
            parse_rules(r#"big_order@orders: amount > 10000; bulk: quantity >= 50 and status == "new"; "#).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].collection.as_deref(), Some("orders"));
        assert!(rules[0].watches("orders") && !rules[0].watches("users") && rules[1].watches("users"));
        assert!(rules[0].holds(&json!({"amount": 10_000.5})));
        assert!(!rules[0].holds(&json!({"amount": 10_000})));
        assert!(!rules[0].holds(&json!({"amount": "20000"})), "a string is not a number");
        assert!(rules[1].holds(&json!({"quantity": 50, "status": "new"})));
        assert!(!rules[1].holds(&json!({"quantity": 50, "status": "paid"})));
        let r = Rule::parse("x: not (a.b < -1.5 or c != true) and d <= 'z;'").unwrap();
        assert!(r.holds(&json!({"a": {"b": 0}, "c": true, "d": "a"})));
        assert!(!r.holds(&json!({"a": {"b": -2}, "c": true, "d": "a"})));
        assert!(r.holds(&json!({"c": true, "d": "a"})), "a missing field compares false, so `not` of it is true");
        assert!(!r.holds(&json!({"c": false, "d": "a"})));
        assert_eq!(parse_rules("a: x > 1; b: y == 'a;b'").unwrap()[1].source, "y == 'a;b'");
    }

    #[test]
    fn edges_fire_once() {
        let r = Rule::parse("big: amount > 10").unwrap();
        assert!(r.fires(None, &json!({"amount": 11})));
        assert!(!r.fires(None, &json!({"amount": 9})));
        assert!(r.fires(Some(&json!({"amount": 9})), &json!({"amount": 11})));
        assert!(!r.fires(Some(&json!({"amount": 12})), &json!({"amount": 11})));
    }

    #[test]
    fn mistakes_are_one_readable_line() {
        for (text, want) in [
            ("big amount > 1", "write `name[@collection]: expression`"),
            ("big: amount >", "expected a number, a string or a boolean after `amount` but found the end"),
            ("big: amount => 1", "`=` is not an operator"),
            ("big: (amount > 1", "expected `)` but found the end"),
            ("big: amount > 1 1", "unexpected `1.0` after a complete expression"),
            ("big: ", "the expression is empty"),
            ("b c: x > 1", "the name must be"),
            ("big@: x > 1", "`@` must be followed by a collection"),
            ("big: x == \"open", "a string is not closed"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(parse_rules("a: x > 1; a: y > 2").unwrap_err(), "rule `a` is declared twice");
    }
}
