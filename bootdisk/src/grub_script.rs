//! grub.cfg's structure: commands, `if`/`elif`/`else`/`fi`, menuentry and submenu blocks.

use crate::grub_lexer::{tokenize, Token, Word};

/// Deepest nesting of blocks accepted.
const MAX_DEPTH: usize = 32;

/// One statement of grub.cfg.
#[derive(Debug, Clone)]
pub enum Stmt {
    /// A command's words and its line.
    Command(Vec<Word>, u32),
    If { branches: Vec<(Vec<Word>, Vec<Stmt>)>, otherwise: Vec<Stmt> },
    /// `menuentry` (submenu: false) or `submenu` with its arguments and body.
    Menu { submenu: bool, args: Vec<Word>, body: Vec<Stmt>, line: u32 },
}

/// A syntax error: line and what.
pub type SyntaxError = (u32, String);

enum Item {
    Cmd(Vec<Word>, u32),
    Open(u32),
    Close(u32),
}

/// Group tokens into commands; `then`/`else`/`fi`/`do`/`done` are commands of their own.
fn commands(tokens: Vec<Token>) -> Vec<Item> {
    let mut out = Vec::new();
    let mut cur: Vec<Word> = Vec::new();
    let mut cur_line = 0;
    let flush = |cur: &mut Vec<Word>, line: u32, out: &mut Vec<Item>| {
        if !cur.is_empty() {
            out.push(Item::Cmd(std::mem::take(cur), line));
        }
    };
    for t in tokens {
        match t {
            Token::Word(w, line) => {
                if cur.is_empty() {
                    cur_line = line;
                    if matches!(w.bare(), Some("then" | "else" | "fi" | "do" | "done")) {
                        out.push(Item::Cmd(vec![w], line));
                        continue;
                    }
                }
                cur.push(w);
            }
            Token::Sep(_) => flush(&mut cur, cur_line, &mut out),
            Token::Open(line) => {
                flush(&mut cur, cur_line, &mut out);
                out.push(Item::Open(line));
            }
            Token::Close(line) => {
                flush(&mut cur, cur_line, &mut out);
                out.push(Item::Close(line));
            }
        }
    }
    flush(&mut cur, cur_line, &mut out);
    out
}

struct Parser {
    items: std::vec::IntoIter<Item>,
    peeked: Option<Item>,
    last_line: u32,
}

fn keyword(item: &Item) -> Option<&str> {
    match item {
        Item::Cmd(w, _) => w.first().and_then(Word::bare),
        _ => None,
    }
}

impl Parser {
    fn next(&mut self) -> Option<Item> {
        let item = self.peeked.take().or_else(|| self.items.next());
        if let Some(Item::Cmd(_, l) | Item::Open(l) | Item::Close(l)) = &item {
            self.last_line = *l;
        }
        item
    }

    fn peek(&mut self) -> Option<&Item> {
        if self.peeked.is_none() {
            self.peeked = self.items.next();
        }
        self.peeked.as_ref()
    }

    fn err<T>(&self, what: impl Into<String>) -> Result<T, SyntaxError> {
        Err((self.last_line, what.into()))
    }

    /// Statements up to (not including) one of `ends` (a keyword, or "}" for a closing brace).
    fn block(&mut self, ends: &[&str], depth: usize) -> Result<Vec<Stmt>, SyntaxError> {
        if depth > MAX_DEPTH {
            return self.err(format!("blocks nested more than {MAX_DEPTH} deep"));
        }
        let mut out = Vec::new();
        loop {
            let end_here = match self.peek() {
                None => return if ends.is_empty() { Ok(out) } else { self.err(format!("missing {}", ends.join(" or "))) },
                Some(Item::Close(_)) => ends.contains(&"}"),
                Some(item) => keyword(item).is_some_and(|k| ends.contains(&k)),
            };
            if end_here {
                return Ok(out);
            }
            match self.next() {
                Some(Item::Open(_)) => return self.err("unexpected '{'"),
                Some(Item::Close(_)) => return self.err("unexpected '}'"),
                Some(Item::Cmd(words, line)) => {
                    if let Some(s) = self.statement(words, line, depth)? {
                        out.push(s);
                    }
                }
                None => return Ok(out),
            }
        }
    }

    fn expect(&mut self, kw: &str) -> Result<(), SyntaxError> {
        match self.next() {
            Some(item) if keyword(&item) == Some(kw) => Ok(()),
            Some(Item::Close(_)) if kw == "}" => Ok(()),
            _ => self.err(format!("expected '{kw}'")),
        }
    }

    fn braced(&mut self, depth: usize) -> Result<Vec<Stmt>, SyntaxError> {
        match self.next() {
            Some(Item::Open(_)) => {}
            _ => return self.err("expected '{'"),
        }
        let body = self.block(&["}"], depth + 1)?;
        self.expect("}")?;
        Ok(body)
    }

    fn statement(&mut self, mut words: Vec<Word>, line: u32, depth: usize) -> Result<Option<Stmt>, SyntaxError> {
        let kw = words.first().and_then(Word::bare).unwrap_or("").to_string();
        match kw.as_str() {
            "if" => {
                words.remove(0);
                let mut branches = Vec::new();
                let mut cond = words;
                loop {
                    self.expect("then")?;
                    let body = self.block(&["elif", "else", "fi"], depth + 1)?;
                    branches.push((cond, body));
                    match self.next() {
                        Some(Item::Cmd(mut w, _)) if w.first().and_then(Word::bare) == Some("elif") => {
                            w.remove(0);
                            cond = w;
                        }
                        Some(Item::Cmd(w, _)) if w.first().and_then(Word::bare) == Some("else") => {
                            let otherwise = self.block(&["fi"], depth + 1)?;
                            self.expect("fi")?;
                            return Ok(Some(Stmt::If { branches, otherwise }));
                        }
                        _ => return Ok(Some(Stmt::If { branches, otherwise: Vec::new() })),
                    }
                }
            }
            "menuentry" | "submenu" => {
                words.remove(0);
                let body = self.braced(depth)?;
                Ok(Some(Stmt::Menu { submenu: kw == "submenu", args: words, body, line }))
            }
            "function" => {
                self.braced(depth)?;
                Ok(None)
            }
            "for" | "while" | "until" => {
                self.expect("do")?;
                self.block(&["done"], depth + 1)?;
                self.expect("done")?;
                Ok(None)
            }
            "then" | "elif" | "else" | "fi" | "do" | "done" => self.err(format!("unexpected '{kw}'")),
            _ => Ok(Some(Stmt::Command(words, line))),
        }
    }
}

/// Parse grub.cfg text into statements.
pub fn parse(text: &str) -> Result<Vec<Stmt>, SyntaxError> {
    let tokens = tokenize(text)?;
    let mut p = Parser { items: commands(tokens).into_iter(), peeked: None, last_line: 1 };
    let out = p.block(&[], 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_menuentry_and_submenu_nest() {
        let s = parse("if [ x ] ; then set a=1\nelif true; then b\nelse c; fi\nsubmenu 'S' {\n menuentry 'E' { linux /k\n }\n}\nfunction f { x }\n").unwrap();
        assert_eq!(s.len(), 2);
        match &s[0] {
            Stmt::If { branches, otherwise } => {
                assert_eq!(branches.len(), 2);
                assert_eq!(branches[0].1.len(), 1);
                assert_eq!(otherwise.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        match &s[1] {
            Stmt::Menu { submenu: true, body, .. } => assert!(matches!(&body[0], Stmt::Menu { submenu: false, .. })),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(parse("a\nif x; then\nb\n").unwrap_err(), (3, "missing elif or else or fi".to_string()));
        assert_eq!(parse("menuentry 'x' {\n linux /k\n").unwrap_err().1, "missing }");
        assert_eq!(parse("}\n").unwrap_err().1, "unexpected '}'");
        assert_eq!(parse("fi\n").unwrap_err().1, "unexpected 'fi'");
        assert_eq!(parse("menuentry x\n").unwrap_err().1, "expected '{'");
        let deep = "if a; then\n".repeat(40);
        assert!(parse(&deep).unwrap_err().1.contains("nested more than"));
    }
}
