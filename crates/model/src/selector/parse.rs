//! Recursive-descent parser for the selector expression language.

use std::collections::BTreeSet;

use thiserror::Error;

use super::Selector;

/// A selector that could not be parsed, with the byte offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid selector {text:?} at offset {offset}: {reason}")]
pub struct SelectorParseError {
    pub text: String,
    pub offset: usize,
    pub reason: String,
}

pub(super) fn parse(text: &str) -> Result<Selector, SelectorParseError> {
    let mut p = Parser { text, pos: 0 };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("empty selector (use all() to select everything)"));
    }
    let sel = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error("unexpected trailing text"));
    }
    Ok(sel)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')
}

impl<'a> Parser<'a> {
    fn error(&self, reason: &str) -> SelectorParseError {
        SelectorParseError {
            text: self.text.to_string(),
            offset: self.pos,
            reason: reason.to_string(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    /// Consumes `token` (after whitespace) if it is next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Consumes a keyword only when it is not the start of a longer key.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with(word) && !rest[word.len()..].starts_with(is_key_char) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), SelectorParseError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {token:?}")))
        }
    }

    fn or(&mut self) -> Result<Selector, SelectorParseError> {
        let mut terms = vec![self.and()?];
        while self.eat("||") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Selector::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Selector, SelectorParseError> {
        let mut terms = vec![self.unary()?];
        while self.eat("&&") {
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Selector::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Selector, SelectorParseError> {
        self.skip_ws();
        if self.rest().starts_with("!=") {
            return Err(self.error("'!=' needs a key before it"));
        }
        if self.eat("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if self.eat_word("all") {
            self.expect("(")?;
            self.expect(")")?;
            return Ok(Selector::All);
        }
        if self.eat_word("has") {
            self.expect("(")?;
            let key = self.key()?;
            self.expect(")")?;
            return Ok(Selector::Has(key));
        }
        let key = self.key()?;
        if self.eat("==") {
            return Ok(Selector::Eq(key, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Selector::NotEq(key, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("expected 'in' after 'not'"));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        Err(self.error("expected '==', '!=', 'in' or 'not in' after a key"))
    }

    fn key(&mut self) -> Result<String, SelectorParseError> {
        self.skip_ws();
        let len = self
            .rest()
            .find(|c: char| !is_key_char(c))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a label key"));
        }
        let key = self.rest()[..len].to_string();
        self.pos += len;
        Ok(key)
    }

    fn string(&mut self) -> Result<String, SelectorParseError> {
        self.skip_ws();
        let quote = match self.rest().chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => return Err(self.error("expected a quoted string")),
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                c => out.push(c),
            }
        }
        Err(self.error("unterminated string"))
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorParseError> {
        self.expect("{")?;
        let mut values = BTreeSet::new();
        if self.eat("}") {
            return Ok(values);
        }
        loop {
            values.insert(self.string()?);
            if self.eat("}") {
                return Ok(values);
            }
            self.expect(",")?;
        }
    }
}
