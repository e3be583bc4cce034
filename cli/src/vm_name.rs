//! VM names (`--name`, `name =` in a definition): what a name may be. A name becomes a
//! directory under the runtime directory, so it is short and plain.

/// The longest name, in bytes (keeps socket paths far below `sun_path`'s 108 bytes).
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("VM name is empty")]
    Empty,
    /// Too long.
    #[error("VM name '{name}' is {len} bytes, at most {MAX_NAME_LEN} allowed")]
    TooLong {
        /// The name given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A character outside the set, or a bad first character.
    #[error("VM name '{0}' may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit")]
    Charset(String),
}

/// Checks a VM name: 1 to 64 bytes of ASCII letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit (so never `.`, `..` or an option-like `-x`).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            name: name.chars().take(MAX_NAME_LEN).collect::<String>() + "...",
            len: name.len(),
        });
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(NameError::Charset(name.escape_debug().to_string()));
    }
    Ok(())
}

/// For clap: a validated name.
pub fn parse_name(s: &str) -> Result<String, String> {
    validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["vm1", "web-01", "db_2.prod", "A", &"x".repeat(64)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name(&"x".repeat(65)),
            Err(NameError::TooLong { len: 65, .. })
        ));
        for bad in [
            ".", "..", "-x", ".hidden", "a/b", "a b", "é", "a\nb", "vm:1", "_x",
        ] {
            assert!(
                matches!(validate_name(bad), Err(NameError::Charset(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_name("a/b").unwrap_err(),
            "VM name 'a/b' may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit"
        );
    }
}
