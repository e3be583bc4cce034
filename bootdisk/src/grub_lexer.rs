//! grub.cfg's words: quotes, escapes, comments, `$var` references, braces and separators.

/// A piece of a word: literal text or a variable to expand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Lit(String),
    Var(String),
}

/// One word of a command, expanded later against the variables in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub pieces: Vec<Piece>,
    /// Some part was quoted: the word survives expanding to nothing.
    pub quoted: bool,
}

impl Word {
    /// The word's text if it is plain unquoted literal text (a keyword can only be that).
    pub fn bare(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Lit(s)] if !self.quoted => Some(s),
            _ => None,
        }
    }
}

/// A lexical item with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Word(Word, u32),
    /// Newline or `;`.
    Sep(u32),
    Open(u32),
    Close(u32),
}

/// The first lexical error: line and what.
pub type LexError = (u32, String);

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: u32,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Lexer<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    /// After a `$`: a variable reference, or a literal `$`.
    fn variable(&mut self) -> Result<Piece, LexError> {
        match self.chars.peek().copied() {
            Some('{') => {
                self.bump();
                let mut name = String::new();
                loop {
                    match self.bump() {
                        Some('}') => return Ok(Piece::Var(name)),
                        Some(c) if c != '\n' && name.len() < 256 => name.push(c),
                        _ => return Err((self.line, "unterminated ${...}".into())),
                    }
                }
            }
            Some(c) if c == '?' || c == '#' || c == '*' || c == '@' => {
                self.bump();
                Ok(Piece::Var(c.to_string()))
            }
            Some(c) if is_name_char(c) => {
                let mut name = String::new();
                while let Some(c) = self.chars.peek().copied().filter(|c| is_name_char(*c)) {
                    self.bump();
                    name.push(c);
                }
                Ok(Piece::Var(name))
            }
            _ => Ok(Piece::Lit("$".into())),
        }
    }
}

fn push_lit(pieces: &mut Vec<Piece>, c: char) {
    if let Some(Piece::Lit(s)) = pieces.last_mut() {
        s.push(c);
    } else {
        pieces.push(Piece::Lit(c.to_string()));
    }
}

/// Split grub.cfg text into tokens.
pub fn tokenize(text: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer { chars: text.chars().peekable(), line: 1 };
    let mut out = Vec::new();
    loop {
        // Between words.
        let Some(c) = lx.chars.peek().copied() else { return Ok(out) };
        match c {
            ' ' | '\t' | '\r' => {
                lx.bump();
                continue;
            }
            '\n' | ';' => {
                let line = lx.line;
                lx.bump();
                out.push(Token::Sep(line));
                continue;
            }
            '#' => {
                while lx.chars.peek().is_some_and(|c| *c != '\n') {
                    lx.bump();
                }
                continue;
            }
            '\\' => {
                let mut probe = lx.chars.clone();
                probe.next();
                if probe.peek() == Some(&'\n') {
                    lx.bump();
                    lx.bump();
                    continue;
                }
            }
            _ => {}
        }
        let line = lx.line;
        let mut word = Word { pieces: Vec::new(), quoted: false };
        while let Some(c) = lx.chars.peek().copied() {
            match c {
                ' ' | '\t' | '\r' | '\n' | ';' => break,
                '\'' => {
                    lx.bump();
                    word.quoted = true;
                    let mut s = String::new();
                    loop {
                        match lx.bump() {
                            Some('\'') => break,
                            Some(c) => s.push(c),
                            None => return Err((line, "unterminated single quote".into())),
                        }
                    }
                    word.pieces.push(Piece::Lit(s));
                }
                '"' => {
                    lx.bump();
                    word.quoted = true;
                    word.pieces.push(Piece::Lit(String::new()));
                    loop {
                        match lx.bump() {
                            Some('"') => break,
                            Some('\\') => match lx.bump() {
                                Some('\n') => {}
                                Some(c @ ('$' | '"' | '\\')) => push_lit(&mut word.pieces, c),
                                Some(c) => {
                                    push_lit(&mut word.pieces, '\\');
                                    push_lit(&mut word.pieces, c);
                                }
                                None => return Err((line, "unterminated double quote".into())),
                            },
                            Some('$') => {
                                let p = lx.variable()?;
                                word.pieces.push(p);
                            }
                            Some(c) => push_lit(&mut word.pieces, c),
                            None => return Err((line, "unterminated double quote".into())),
                        }
                    }
                }
                '\\' => {
                    lx.bump();
                    match lx.bump() {
                        Some('\n') => {}
                        Some(c) => {
                            push_lit(&mut word.pieces, c);
                            word.quoted = true;
                        }
                        None => {}
                    }
                }
                '$' => {
                    lx.bump();
                    let p = lx.variable()?;
                    word.pieces.push(p);
                }
                c => {
                    lx.bump();
                    push_lit(&mut word.pieces, c);
                }
            }
        }
        match word.bare() {
            Some("{") => out.push(Token::Open(line)),
            Some("}") => out.push(Token::Close(line)),
            _ => out.push(Token::Word(word, line)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Token::Word(w, _) => w
                    .pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Lit(s) => s.clone(),
                        Piece::Var(v) => format!("<{v}>"),
                    })
                    .collect(),
                Token::Sep(_) => ";".into(),
                Token::Open(_) => "{".into(),
                Token::Close(_) => "}".into(),
            })
            .collect()
    }

    #[test]
    fn quotes_escapes_comments_and_braces() {
        assert_eq!(
            words("menuentry 'A b' --id \"x-$y\" {\n  linux /k a\\ b # c\n}"),
            ["menuentry", "A b", "--id", "x-<y>", "{", ";", "linux", "/k", "a b", ";", "}"]
        );
        assert_eq!(words("set default=\"${saved_entry}\";x='a\"b'"), ["set", "default=<saved_entry>", ";", "x=a\"b"]);
        assert_eq!(words("echo \"a\\\"b\\$c\" \\\n next"), ["echo", "a\"b$c", "next"]);
        assert_eq!(words("if [ \"$?\" = 0 ]"), ["if", "[", "<?>", "=", "0", "]"]);
    }

    #[test]
    fn unterminated_quotes_are_errors_with_their_line() {
        assert_eq!(tokenize("a\nb 'c").unwrap_err(), (2, "unterminated single quote".to_string()));
        assert_eq!(tokenize("\"c").unwrap_err().1, "unterminated double quote");
        assert_eq!(tokenize("${abc").unwrap_err().1, "unterminated ${...}");
    }
}
