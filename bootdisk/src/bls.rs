//! Boot Loader Specification entries (`loader/entries/*.conf`).

use std::cmp::Ordering;
use std::collections::HashMap;

/// One BLS entry as its file says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlsEntry {
    /// The file name without `.conf`.
    pub id: String,
    pub title: String,
    pub version: String,
    pub sort_key: String,
    pub linux: Option<String>,
    pub initrds: Vec<String>,
    pub options: String,
}

/// Expand `$name` / `${name}` from grubenv (RHEL 8's `$kernelopts`) as grub's blscfg
/// does: a name grubenv lacks expands to nothing; without a grubenv nothing is expanded.
fn expand(text: &str, env: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(inner) => match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match env.get(name) {
            Some(v) if !name.is_empty() => out.push_str(v),
            _ if env.is_empty() || name.is_empty() => {
                out.push('$');
                out.push_str(&after[..len]);
            }
            _ => {}
        }
        rest = &after[len..];
        if out.len() > MAX_EXPANDED {
            return Err(format!("a line expands to more than {} KiB", MAX_EXPANDED >> 10));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Most bytes an entry's expanded `options` or `initrd` lines may reach.
const MAX_EXPANDED: usize = 64 << 10;

/// Parse one entry file; an error if `$variables` make it larger than 64 KiB.
pub fn parse_entry(id: &str, text: &str, env: &HashMap<String, String>) -> Result<BlsEntry, String> {
    let mut e = BlsEntry {
        id: id.to_string(),
        title: String::new(),
        version: String::new(),
        sort_key: String::new(),
        linux: None,
        initrds: Vec::new(),
        options: String::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        match key {
            "title" => e.title = value.to_string(),
            "version" => e.version = value.to_string(),
            "sort-key" => e.sort_key = value.to_string(),
            "linux" => e.linux = Some(value.to_string()),
            "initrd" => e.initrds.extend(expand(value, env)?.split_whitespace().map(str::to_string)),
            "options" => {
                if !e.options.is_empty() {
                    e.options.push(' ');
                }
                e.options.push_str(&expand(value, env)?.split_whitespace().collect::<Vec<_>>().join(" "));
                if e.options.len() > MAX_EXPANDED {
                    return Err(format!("options longer than {} KiB", MAX_EXPANDED >> 10));
                }
            }
            _ => {}
        }
    }
    if e.title.is_empty() {
        e.title = e.id.clone();
    }
    Ok(e)
}

/// Compare versions the way the UAPI version format does, roughly: runs of digits as
/// numbers, runs of letters as text, `~` before anything.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        let skip = |s: &[u8]| s.iter().position(|c| c.is_ascii_alphanumeric() || *c == b'~').unwrap_or(s.len());
        a = &a[skip(a)..];
        b = &b[skip(b)..];
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (Some(b'~'), Some(b'~')) => {
                a = &a[1..];
                b = &b[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            _ => {}
        }
        let digits = a[0].is_ascii_digit();
        if digits != b[0].is_ascii_digit() {
            return if digits { Ordering::Greater } else { Ordering::Less };
        }
        let run = |s: &[u8]| s.iter().position(|c| c.is_ascii_digit() != digits || !c.is_ascii_alphanumeric()).unwrap_or(s.len());
        let (ra, rb) = (&a[..run(a)], &b[..run(b)]);
        let ord = if digits {
            let trim = |s: &[u8]| -> Vec<u8> { s.iter().skip_while(|c| **c == b'0').copied().collect() };
            let (ta, tb) = (trim(ra), trim(rb));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb))
        } else {
            ra.cmp(rb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
        a = &a[ra.len()..];
        b = &b[rb.len()..];
    }
}

/// Sort as the specification says: by sort-key, then by version newest first, then by id.
pub fn sort(entries: &mut [BlsEntry]) {
    entries.sort_by(|x, y| {
        x.sort_key
            .cmp(&y.sort_key)
            .then_with(|| compare_versions(&y.version, &x.version))
            .then_with(|| compare_versions(&y.id, &x.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("5.14.0-362.el9", "5.14.0-70.el9"), Ordering::Greater);
        assert_eq!(compare_versions("6.1.0-10", "6.1.0-9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(compare_versions("1.0", "1.0"), Ordering::Equal);
    }

    #[test]
    fn entry_fields_and_kernelopts() {
        let env: HashMap<String, String> = [("kernelopts".to_string(), "root=/dev/vda2 ro".to_string())].into();
        let e = parse_entry(
            "abc-4.18.0",
            "title Red Hat\nversion 4.18.0\nlinux /vmlinuz-4.18.0\ninitrd /a.img /b.img\ninitrd /c.img\noptions $kernelopts quiet ${nope} $\n",
            &env,
        )
        .unwrap();
        assert_eq!(e.title, "Red Hat");
        assert_eq!(e.linux.as_deref(), Some("/vmlinuz-4.18.0"));
        assert_eq!(e.initrds, ["/a.img", "/b.img", "/c.img"]);
        assert_eq!(e.options, "root=/dev/vda2 ro quiet $");
        let none = parse_entry("x", "options a $b ${c}\n", &HashMap::new()).unwrap();
        let big: HashMap<String, String> = [("k".to_string(), "x".repeat(1000))].into();
        let err = parse_entry("x", &format!("options {}\n", "$k ".repeat(100)), &big).unwrap_err();
        assert_eq!(err, "a line expands to more than 64 KiB");
        assert_eq!(none.options, "a $b ${c}");
    }

    #[test]
    fn sorted_newest_first() {
        let env = HashMap::new();
        let mut v = vec![parse_entry("a", "version 5.9\n", &env).unwrap(), parse_entry("b", "version 5.10\n", &env).unwrap()];
        sort(&mut v);
        assert_eq!(v[0].id, "b");
    }
}
