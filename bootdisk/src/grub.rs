//! grub.cfg as grub-mkconfig writes it: the menu tree, each entry's kernel, initrds and
//! command line, and which entry is the default (`set default=`, grubenv's saved_entry
//! and next_entry). Not an interpreter: only `set`, assignments, `if` on `[ ... ]` tests,
//! `search`, `linux`, `initrd`, `menuentry` and `submenu` mean anything here.

use std::collections::HashMap;

use crate::grub_lexer::{Piece, Word};
use crate::grub_script::{parse, Stmt};

/// Most menu entries and submenus in one grub.cfg.
pub const MAX_ENTRIES: usize = 1000;
/// Most bytes one command's words expand to (`set a=$a$a` doubles).
const MAX_EXPANSION: usize = 64 << 10;
/// Most bytes all variables hold together.
const MAX_VAR_BYTES: usize = 1 << 20;

/// Which filesystem a path is on, as grub.cfg says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// The filesystem grub.cfg was found on.
    Config,
    /// `search --fs-uuid`.
    Uuid(String),
    /// `search --label`.
    Label(String),
    /// `search --file`: the first filesystem that has this file.
    File(String),
    /// `(hd0,gptN)`, `(hd0,msdosN)`: partition N of this disk.
    Partition(u32),
}

/// A path and the filesystem it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubPath {
    pub root: RootSpec,
    pub path: String,
}

/// One bootable leaf of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEntry {
    /// "Title", or "Submenu>Title" inside a submenu.
    pub title: String,
    pub id: Option<String>,
    /// `linux` line: the kernel (None for entries that boot no Linux).
    pub kernel: Option<GrubPath>,
    pub initrds: Vec<GrubPath>,
    /// `linux`'s arguments after the kernel, joined by spaces.
    pub cmdline: String,
}

/// The menu: entries in menu order (submenus flattened) and the default's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubMenu {
    pub entries: Vec<GrubEntry>,
    pub default: usize,
}

/// What went wrong: line (0: none) and what.
pub type GrubError = (u32, String);

enum Node {
    Entry(GrubEntry),
    Submenu { title: String, id: Option<String>, children: Vec<Node> },
}

/// The variables grub itself sets before reading grub.cfg.
fn initial_vars(env: &HashMap<String, String>) -> HashMap<String, String> {
    let mut v: HashMap<String, String> = [
        ("feature_menuentry_id", "y"),
        ("feature_platform_search_hint", "y"),
        ("feature_default_font_path", "y"),
        ("feature_all_video_module", "y"),
        ("feature_timeout_style", "y"),
        ("feature_chainloader_bpb", "y"),
        ("feature_ntldr", "y"),
        ("feature_200_final", "y"),
        ("grub_platform", "pc"),
        ("grub_cpu", "i386"),
        ("prefix", "/boot/grub"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, val) in env {
        v.insert(k.clone(), val.clone());
    }
    v
}

struct Scope {
    vars: HashMap<String, String>,
    /// Sum of the lengths of all values in `vars`.
    var_bytes: usize,
    root: RootSpec,
    has_env: bool,
    /// Inside a menu entry: the values its assignments replaced, to restore after it.
    undo: Vec<(String, Option<String>)>,
    local: usize,
}

impl Scope {
    /// Expand one word; None for an unquoted word that expands to nothing.
    fn expand(&self, w: &Word, budget: &mut usize) -> Result<Option<String>, String> {
        let mut s = String::new();
        for p in &w.pieces {
            let text = match p {
                Piece::Lit(l) => l.as_str(),
                Piece::Var(v) => self.vars.get(v).map(String::as_str).unwrap_or(""),
            };
            if text.len() > *budget {
                return Err(format!("a command expands to more than {} KiB", MAX_EXPANSION >> 10));
            }
            *budget -= text.len();
            s.push_str(text);
        }
        Ok((w.quoted || !s.is_empty()).then_some(s))
    }

    fn expand_all(&self, words: &[Word]) -> Result<Vec<String>, String> {
        let mut budget = MAX_EXPANSION;
        let mut out = Vec::new();
        for w in words {
            if let Some(s) = self.expand(w, &mut budget)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn set_var(&mut self, name: &str, value: Option<String>) -> Result<(), String> {
        let new_len = value.as_ref().map_or(0, String::len);
        let old = match value {
            Some(v) => self.vars.insert(name.to_string(), v),
            None => self.vars.remove(name),
        };
        self.var_bytes = self.var_bytes - old.as_ref().map_or(0, String::len) + new_len;
        if self.local > 0 {
            self.undo.push((name.to_string(), old));
        }
        if self.var_bytes > MAX_VAR_BYTES {
            return Err(format!("variables hold more than {} KiB", MAX_VAR_BYTES >> 10));
        }
        Ok(())
    }

    /// The value of an `if` condition (a `[ ... ]` test; other commands are false).
    fn test(&self, words: &[Word]) -> bool {
        let Ok(w) = self.expand_all(words) else { return false };
        let args: Vec<&str> = match w.first().map(String::as_str) {
            Some("[") if w.last().map(String::as_str) == Some("]") => w[1..w.len() - 1].iter().map(String::as_str).collect(),
            Some("test") => w[1..].iter().map(String::as_str).collect(),
            Some("true") => return true,
            _ => return false,
        };
        let (negate, args) = match args.split_first() {
            Some((&"!", rest)) => (true, rest),
            _ => (false, &args[..]),
        };
        let num = |s: &str| s.parse::<i64>().ok();
        let r = match args {
            [] => false,
            [s] => !s.is_empty(),
            ["-n", s] => !s.is_empty(),
            ["-z", s] => s.is_empty(),
            ["-s" | "-f" | "-e", p] => self.has_env && p.ends_with("/grubenv"),
            [a, "=" | "==", b] => a == b,
            [a, "!=", b] => a != b,
            [a, op, b] => match (num(a), num(b)) {
                (Some(a), Some(b)) => match *op {
                    "-eq" => a == b,
                    "-ne" => a != b,
                    "-lt" => a < b,
                    "-le" => a <= b,
                    "-gt" => a > b,
                    "-ge" => a >= b,
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        };
        r != negate
    }

    fn assign(&mut self, text: &str) -> Result<(), String> {
        if let Some((name, value)) = text.split_once('=') {
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.set_var(name, Some(value.to_string()))?;
            }
        }
        Ok(())
    }
}

/// `(hd0,gpt2)` / `hd0,msdos1` / `hd0,2`: partition 2 / 1 / 2 of this disk.
fn device_partition(dev: &str) -> Option<u32> {
    let dev = dev.trim_start_matches('(').trim_end_matches(')');
    let (disk, part) = dev.split_once(',')?;
    if !disk.starts_with("hd") {
        return None;
    }
    let n = part.trim_start_matches("gpt").trim_start_matches("msdos");
    n.parse().ok().filter(|n| *n > 0)
}

/// A path as `linux`/`initrd` name it, with an optional `(device)` prefix.
fn grub_path(scope: &Scope, text: &str) -> GrubPath {
    if let Some(rest) = text.strip_prefix('(') {
        if let Some((dev, path)) = rest.split_once(')') {
            let root = device_partition(dev).map(RootSpec::Partition).unwrap_or_else(|| scope.root.clone());
            return GrubPath { root, path: path.to_string() };
        }
    }
    GrubPath { root: scope.root.clone(), path: text.to_string() }
}

/// `search [options] KEY`: what it names, if it sets `root`.
fn search(args: &[String]) -> Option<RootSpec> {
    let mut kind = "file";
    let mut sets_root = false;
    let mut key = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--fs-uuid" | "-u" => kind = "uuid",
            "--label" | "-l" => kind = "label",
            "--file" | "-f" => kind = "file",
            "--set=root" => sets_root = true,
            "--set" | "-s" => {
                sets_root = args.get(i + 1).is_none_or(|v| v == "root");
                if args.get(i + 1).is_some_and(|v| !v.starts_with('-')) {
                    i += 1;
                }
            }
            _ if a.starts_with("--set=") => sets_root = false,
            _ if a.starts_with('-') => {}
            _ => key = Some(a.to_string()),
        }
        i += 1;
    }
    let key = key?;
    if !sets_root {
        return None;
    }
    Some(match kind {
        "uuid" => RootSpec::Uuid(key),
        "label" => RootSpec::Label(key),
        _ => RootSpec::File(key),
    })
}

struct Builder {
    count: usize,
}

impl Builder {
    /// Run statements; menu entries found go into `out`.
    fn run(&mut self, stmts: &[Stmt], scope: &mut Scope, out: &mut Vec<Node>, entry: &mut Option<GrubEntry>) -> Result<(), GrubError> {
        for s in stmts {
            match s {
                Stmt::If { branches, otherwise } => {
                    let body = branches.iter().find(|(c, _)| scope.test(c)).map(|(_, b)| b).unwrap_or(otherwise);
                    self.run(body, scope, out, entry)?;
                }
                Stmt::Menu { submenu, args, body, line } => {
                    self.count += 1;
                    if self.count > MAX_ENTRIES {
                        return Err((*line, format!("more than {MAX_ENTRIES} menu entries")));
                    }
                    let words = scope.expand_all(args).map_err(|e| (*line, e))?;
                    let (title, id) = menu_args(&words).ok_or((*line, "menuentry without a title".to_string()))?;
                    // The body runs in its own scope: what it sets is undone after it.
                    let (mark, root) = (scope.undo.len(), scope.root.clone());
                    scope.local += 1;
                    let result = if *submenu {
                        let mut children = Vec::new();
                        let r = self.run(body, scope, &mut children, &mut None);
                        out.push(Node::Submenu { title, id, children });
                        r
                    } else {
                        let mut e = Some(GrubEntry { title, id, kernel: None, initrds: Vec::new(), cmdline: String::new() });
                        let r = self.run(body, scope, &mut Vec::new(), &mut e);
                        if let Some(e) = e {
                            out.push(Node::Entry(e));
                        }
                        r
                    };
                    result?;
                    scope.local -= 1;
                    while scope.undo.len() > mark {
                        if let Some((name, old)) = scope.undo.pop() {
                            let len = scope.vars.get(&name).map_or(0, String::len);
                            scope.var_bytes -= len;
                            scope.var_bytes += old.as_ref().map_or(0, String::len);
                            match old {
                                Some(v) => scope.vars.insert(name, v),
                                None => scope.vars.remove(&name),
                            };
                        }
                    }
                    scope.root = root;
                }
                Stmt::Command(words, line) => {
                    let line = *line;
                    let w = scope.expand_all(words).map_err(|e| (line, e))?;
                    let Some((cmd, args)) = w.split_first() else { continue };
                    match cmd.as_str() {
                        "set" => {
                            for a in args {
                                scope.assign(a).map_err(|e| (line, e))?;
                            }
                        }
                        "unset" => {
                            for a in args {
                                scope.set_var(a, None).map_err(|e| (line, e))?;
                            }
                        }
                        "search" | "search.fs_uuid" | "search.fs_label" | "search.file" => {
                            let mut a = args.to_vec();
                            match cmd.as_str() {
                                "search.fs_uuid" => a.insert(0, "--fs-uuid".into()),
                                "search.fs_label" => a.insert(0, "--label".into()),
                                _ => {}
                            }
                            if cmd != "search" && a.len() >= 2 && !a[a.len() - 1].starts_with('-') && a.len() > 2 {
                                // search.fs_uuid UUID root: the last word is the variable.
                                let var = a.pop();
                                if var.as_deref() == Some("root") {
                                    a.push("--set=root".into());
                                }
                            }
                            if let Some(r) = search(&a) {
                                scope.root = r;
                            }
                        }
                        "linux" | "linux16" | "linuxefi" => {
                            if let (Some(e), Some((k, rest))) = (entry.as_mut(), args.split_first()) {
                                e.kernel = Some(grub_path(scope, k));
                                e.cmdline = rest.join(" ");
                            }
                        }
                        "initrd" | "initrd16" | "initrdefi" => {
                            if let Some(e) = entry.as_mut() {
                                e.initrds = args.iter().filter(|a| !a.starts_with("--")).map(|a| grub_path(scope, a)).collect();
                            }
                        }
                        _ if args.is_empty() && cmd.contains('=') => scope.assign(cmd).map_err(|e| (line, e))?,
                        _ => {}
                    }
                    if cmd == "set" && args.iter().any(|a| a.starts_with("root=")) {
                        let dev = scope.vars.get("root").cloned().unwrap_or_default();
                        if let Some(n) = device_partition(&dev) {
                            scope.root = RootSpec::Partition(n);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A menuentry's title and `--id` from its arguments.
fn menu_args(args: &[String]) -> Option<(String, Option<String>)> {
    let mut title = None;
    let mut id = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--class" | "--users" | "--hotkey" => i += 1,
            "--id" => {
                id = args.get(i + 1).cloned();
                i += 1;
            }
            a if a.starts_with("--") => {}
            a => {
                if title.is_none() {
                    title = Some(a.to_string());
                }
            }
        }
        i += 1;
    }
    title.map(|t| (t, id))
}

/// Flatten the tree: leaves in menu order with "Submenu>Title" titles, and each leaf's
/// path of indices.
fn flatten(nodes: Vec<Node>, prefix: &str, path: &[usize], out: &mut Vec<(Vec<usize>, GrubEntry)>) {
    for (i, n) in nodes.into_iter().enumerate() {
        let mut p = path.to_vec();
        p.push(i);
        match n {
            Node::Entry(mut e) => {
                e.title = format!("{prefix}{}", e.title);
                out.push((p, e));
            }
            Node::Submenu { title, children, .. } => flatten(children, &format!("{prefix}{title}>"), &p, out),
        }
    }
}

/// The index path `default` names ("2", "1>0", an id, a title, or a mix by level).
fn resolve_default(nodes: &[Node], default: &str) -> Option<Vec<usize>> {
    let mut level = nodes;
    let mut path = Vec::new();
    for part in default.split('>') {
        let i = match part.parse::<usize>() {
            Ok(n) => n,
            Err(_) => level.iter().position(|n| match n {
                Node::Entry(e) => e.id.as_deref() == Some(part) || e.title == part,
                Node::Submenu { title, id, .. } => id.as_deref() == Some(part) || title == part,
            })?,
        };
        path.push(i);
        match level.get(i)? {
            Node::Entry(_) => return Some(path),
            Node::Submenu { children, .. } => level = children,
        }
    }
    Some(path)
}

/// Parse a grubenv block: `# GRUB Environment Block` then NAME=VALUE lines, `#` padding.
pub fn parse_grubenv(bytes: &[u8]) -> HashMap<String, String> {
    let mut env = HashMap::new();
    let Ok(text) = std::str::from_utf8(bytes.split(|b| *b == 0).next().unwrap_or(&[])) else { return env };
    if !text.starts_with("# GRUB Environment Block\n") {
        return env;
    }
    for line in text.lines().skip(1) {
        if line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let mut val = String::new();
            let mut chars = v.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        val.push(if n == 'n' { '\n' } else { n });
                    }
                } else {
                    val.push(c);
                }
            }
            env.insert(k.to_string(), val);
        }
    }
    env
}

/// Read a grub.cfg menu; `env` is grubenv's variables (empty if there is none).
pub fn parse_menu(text: &str, env: &HashMap<String, String>) -> Result<GrubMenu, GrubError> {
    let stmts = parse(text)?;
    let vars = initial_vars(env);
    let var_bytes = vars.values().map(String::len).sum();
    let mut scope = Scope { vars, var_bytes, root: RootSpec::Config, has_env: !env.is_empty(), undo: Vec::new(), local: 0 };
    let mut nodes = Vec::new();
    Builder { count: 0 }.run(&stmts, &mut scope, &mut nodes, &mut None)?;
    let default_text = scope.vars.get("default").cloned().unwrap_or_default();
    let default_path = resolve_default(&nodes, &default_text);
    let mut flat = Vec::new();
    flatten(nodes, "", &[], &mut flat);
    // A default that names a submenu boots its first entry; one that names nothing, the first.
    let default = default_path.and_then(|p| flat.iter().position(|(fp, _)| fp.starts_with(&p))).unwrap_or(0);
    Ok(GrubMenu { default, entries: flat.into_iter().map(|(_, e)| e).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("../tests/fixtures/debian12-grub.cfg");
    const UBUNTU: &str = include_str!("../tests/fixtures/ubuntu-boot-partition-grub.cfg");
    const ROOT: &str = "5e1c2b0a-7c5d-4c4e-9d0b-1c2d3e4f5a6b";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn with_default(d: &str) -> GrubMenu {
        parse_menu(&DEBIAN.replace("set default=\"0\"", &format!("set default=\"{d}\"")), &HashMap::new()).unwrap()
    }

    #[test]
    fn debian_menu_titles_kernels_and_default() {
        let m = parse_menu(DEBIAN, &HashMap::new()).unwrap();
        let titles: Vec<&str> = m.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Debian GNU/Linux",
                "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64",
                "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
                "Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-9-amd64",
            ]
        );
        assert_eq!(m.default, 0);
        let e = &m.entries[0];
        assert_eq!(e.id.as_deref(), Some(format!("gnulinux-simple-{ROOT}").as_str()));
        assert_eq!(e.kernel, Some(GrubPath { root: RootSpec::Uuid(ROOT.into()), path: "/boot/vmlinuz-6.1.0-18-amd64".into() }));
        assert_eq!(e.initrds, [GrubPath { root: RootSpec::Uuid(ROOT.into()), path: "/boot/initrd.img-6.1.0-18-amd64".into() }]);
        assert_eq!(e.cmdline, format!("root=UUID={ROOT} ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0"));
        assert!(m.entries[2].cmdline.contains(" ro single "));
    }

    #[test]
    fn default_by_index_path_id_title_and_submenu() {
        assert_eq!(with_default("1>2").default, 3);
        assert_eq!(with_default("1>0").default, 1);
        assert_eq!(with_default(&format!("gnulinux-advanced-{ROOT}>gnulinux-6.1.0-9-amd64-advanced-{ROOT}")).default, 3);
        assert_eq!(with_default(&format!("gnulinux-simple-{ROOT}")).default, 0);
        assert_eq!(with_default("Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-9-amd64").default, 3);
        // A submenu alone boots its first entry; a default naming nothing boots the first.
        assert_eq!(with_default("1").default, 1);
        assert_eq!(with_default("7").default, 0);
        assert_eq!(with_default("no such").default, 0);
    }

    #[test]
    fn next_entry_beats_default_and_saved_entry_is_used() {
        let m = parse_menu(DEBIAN, &env(&[("next_entry", "1>1")])).unwrap();
        assert_eq!(m.default, 2);
        let saved = "gnulinux-advanced-aaaaaaaa-1111-2222-3333-444444444444>gnulinux-6.8.0-31-generic-recovery-aaaaaaaa-1111-2222-3333-444444444444";
        let m = parse_menu(UBUNTU, &env(&[("saved_entry", saved)])).unwrap();
        assert_eq!(m.default, 2);
        assert_eq!(parse_menu(UBUNTU, &HashMap::new()).unwrap().default, 0);
    }

    #[test]
    fn separate_boot_partition_and_microcode_initrds() {
        let m = parse_menu(UBUNTU, &HashMap::new()).unwrap();
        assert_eq!(m.entries.len(), 3);
        let boot = RootSpec::Uuid("bbbbbbbb-5555-6666-7777-888888888888".into());
        let e = &m.entries[0];
        assert_eq!(e.kernel, Some(GrubPath { root: boot.clone(), path: "/vmlinuz-6.8.0-31-generic".into() }));
        let initrds: Vec<&str> = e.initrds.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(initrds, ["/amd-ucode.img", "/initrd.img-6.8.0-31-generic"]);
        assert!(e.initrds.iter().all(|p| p.root == boot));
        // $vt_handoff is only set by a function grub-mkconfig defines: it expands to nothing.
        assert_eq!(e.cmdline, "root=UUID=aaaaaaaa-1111-2222-3333-444444444444 ro quiet splash");
    }

    #[test]
    fn devices_in_paths_and_set_root() {
        let cfg = "set root='hd0,gpt2'\nmenuentry 'a' { linux /k x=1\n initrd (hd0,msdos5)/i }\nmenuentry 'b' { linux ($root)/k2 }\n";
        let m = parse_menu(cfg, &HashMap::new()).unwrap();
        assert_eq!(m.entries[0].kernel, Some(GrubPath { root: RootSpec::Partition(2), path: "/k".into() }));
        assert_eq!(m.entries[0].initrds[0].root, RootSpec::Partition(5));
        assert_eq!(m.entries[1].kernel.as_ref().unwrap().path, "/k2");
        // No search, no root: the filesystem grub.cfg is on.
        let m = parse_menu("menuentry x { linux /vmlinuz }", &HashMap::new()).unwrap();
        assert_eq!(m.entries[0].kernel.as_ref().unwrap().root, RootSpec::Config);
    }

    #[test]
    fn variables_cannot_grow_without_bound_and_entries_do_not_leak_them() {
        let cfg = "set a=xxxxxxxxxxxxxxxx\n".to_string() + &"set a=$a$a\n".repeat(40);
        assert_eq!(parse_menu(&cfg, &HashMap::new()).unwrap_err(), (13, "a command expands to more than 64 KiB".to_string()));
        let cfg = "set v=1\nmenuentry a { set v=2\n search --fs-uuid --set=root U\n linux /k $v }\nmenuentry b { linux /k $v }\n";
        let m = parse_menu(cfg, &HashMap::new()).unwrap();
        assert_eq!(m.entries[0].cmdline, "2");
        assert_eq!(m.entries[1].cmdline, "1");
        assert_eq!(m.entries[1].kernel.as_ref().unwrap().root, RootSpec::Config);
    }

    #[test]
    fn grubenv_block() {
        let mut block = b"# GRUB Environment Block\nsaved_entry=1>2\nkernelopts=root=/dev/vda1 ro\\\\x\n".to_vec();
        block.resize(1024, b'#');
        let e = parse_grubenv(&block);
        assert_eq!(e.get("saved_entry").map(String::as_str), Some("1>2"));
        assert_eq!(e.get("kernelopts").map(String::as_str), Some("root=/dev/vda1 ro\\x"));
        assert!(parse_grubenv(b"saved_entry=1\n").is_empty());
    }

    #[test]
    fn too_many_entries_and_syntax_errors() {
        let cfg = "menuentry x { linux /k }\n".repeat(MAX_ENTRIES + 1);
        assert_eq!(parse_menu(&cfg, &HashMap::new()).unwrap_err(), ((MAX_ENTRIES + 1) as u32, format!("more than {MAX_ENTRIES} menu entries")));
        assert_eq!(parse_menu("menuentry 'x {\n", &HashMap::new()).unwrap_err().1, "unterminated single quote");
        assert_eq!(parse_menu("menuentry { }\n", &HashMap::new()).unwrap_err().1, "menuentry without a title");
    }
}
