//! The cluster key file, which holds the key that seals gossip (`core::seal`).
//!
//! Format: one or two keys, each a line of 64 hex characters (32 bytes; either case). The
//! first is the primary, used to seal; the optional second is also accepted while a key
//! rotation is in progress. `#` starts a comment, to the end of the line; blank lines are
//! ignored. `vipd keygen` prints a new key ([`generate_key`]).
//!
//! The file must belong to the user vipd runs as and must not be readable or writable by
//! group or others (`chmod 600`): a key that others can read lets them join or forge
//! gossip. Errors name the file and the fix, never the key material.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Largest key file read, in bytes: two keys with generous comments fit many times over.
pub const MAX_FILE_LEN: u64 = 64 * 1024;

/// The primary key, and the secondary if one is being rotated.
pub type Keys = ([u8; 32], Option<[u8; 32]>);

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "key file {p} is accessible by group or others (mode {mode:04o}); run `chmod 600 {p}`",
        p = path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error(
        "key file {p} is owned by uid {uid}, but vipd runs as uid {euid}; run `chown {euid} {p}`",
        p = path.display()
    )]
    Owner { path: PathBuf, uid: u32, euid: u32 },
    #[error("key file {} is larger than {MAX_FILE_LEN} bytes; it should hold one or two keys", path.display())]
    TooLarge { path: PathBuf },
    #[error(
        "key file {p} has no key; put one line of 64 hex characters in it (`vipd keygen > {p}`)",
        p = path.display()
    )]
    Empty { path: PathBuf },
    #[error(
        "key file {}, line {line}: {problem}; expected 64 hex characters (32 bytes), as printed by `vipd keygen`",
        path.display()
    )]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
    #[error(
        "key file {}, line {line}: a third key; at most two are allowed (the primary and, during rotation, one more)",
        path.display()
    )]
    TooMany { path: PathBuf, line: usize },
}

/// What is wrong with a line that should hold a key. Never includes the line's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineProblem {
    /// Not 64 characters long (the length found).
    Length(usize),
    /// 64 characters, but not all hex digits.
    NotHex,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineProblem::Length(n) => write!(f, "{n} characters"),
            LineProblem::NotHex => f.write_str("not all hex digits"),
        }
    }
}

/// Loads the primary key and the optional secondary from `path`, refusing a file that is
/// not private to the current user (see the module doc).
pub fn load_keys(path: &Path) -> Result<Keys, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    // Check the metadata of the file actually opened, so it cannot be swapped in between.
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Mode {
            path: path.to_owned(),
            mode,
        });
    }
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(KeyFileError::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mut raw = Vec::new();
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() as u64 > MAX_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    parse(&raw).map_err(|e| e.at(path))
}

/// A parse failure before the path is attached.
#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Empty,
    BadLine(usize, LineProblem),
    TooMany(usize),
}

impl ParseError {
    fn at(self, path: &Path) -> KeyFileError {
        let path = path.to_owned();
        match self {
            ParseError::Empty => KeyFileError::Empty { path },
            ParseError::BadLine(line, problem) => KeyFileError::BadLine {
                path,
                line,
                problem,
            },
            ParseError::TooMany(line) => KeyFileError::TooMany { path, line },
        }
    }
}

/// Parses the content of a key file. Works on bytes, so invalid UTF-8 is just a bad line.
fn parse(raw: &[u8]) -> Result<Keys, ParseError> {
    let mut keys: Vec<[u8; 32]> = Vec::with_capacity(2);
    for (i, line) in raw.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let content = match line.iter().position(|b| *b == b'#') {
            Some(hash) => &line[..hash],
            None => line,
        };
        let content = content.trim_ascii();
        if content.is_empty() {
            continue;
        }
        let key = parse_key(content).map_err(|p| ParseError::BadLine(line_no, p))?;
        if keys.len() == 2 {
            return Err(ParseError::TooMany(line_no));
        }
        keys.push(key);
    }
    match keys.as_slice() {
        [] => Err(ParseError::Empty),
        [a] => Ok((*a, None)),
        [a, b, ..] => Ok((*a, Some(*b))),
    }
}

fn parse_key(hex: &[u8]) -> Result<[u8; 32], LineProblem> {
    if hex.len() != 64 {
        // Count characters, not bytes, when the line is text.
        let n = std::str::from_utf8(hex).map_or(hex.len(), |s| s.chars().count());
        return Err(LineProblem::Length(n));
    }
    let mut key = [0u8; 32];
    for (out, pair) in key.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = hex_digit(pair[0]).ok_or(LineProblem::NotHex)?;
        let lo = hex_digit(pair[1]).ok_or(LineProblem::NotHex)?;
        *out = (hi << 4) | lo;
    }
    Ok(key)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A new random key as 64 lowercase hex characters, for `vipd keygen`. Pass a
/// cryptographically secure rng (`rand::thread_rng()` or `StdRng::from_entropy()`).
pub fn generate_key(rng: &mut impl rand::RngCore) -> String {
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let mut s = String::with_capacity(64);
    for b in key {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A key file in the temp dir, unique per process and call, removed on drop.
    struct TempKey(PathBuf);

    impl TempKey {
        fn new(text: &str, mode: u32) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("vipd-keyfile-test-{}-{n}.key", std::process::id()));
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            TempKey(p)
        }
    }

    impl Drop for TempKey {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn k(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    #[test]
    fn good_file_one_key() {
        let f = TempKey::new(&format!("{}\n", k(0xab)), 0o600);
        assert_eq!(load_keys(&f.0).unwrap(), ([0xab; 32], None));
    }

    #[test]
    fn good_file_two_keys_comments_and_case() {
        let text = format!(
            "# vip-fabric cluster key\n\n  {}  # primary\r\n{}\n# end\n",
            k(0x01),
            k(0xcd).to_uppercase()
        );
        let f = TempKey::new(&text, 0o400);
        assert_eq!(load_keys(&f.0).unwrap(), ([0x01; 32], Some([0xcd; 32])));
    }

    #[test]
    fn bad_mode_is_refused_with_chmod_hint() {
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660] {
            let f = TempKey::new(&format!("{}\n", k(1)), mode);
            let e = load_keys(&f.0).unwrap_err();
            assert!(
                matches!(e, KeyFileError::Mode { mode: m, .. } if m == mode),
                "{mode:o}: {e}"
            );
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("chmod 600 {}", f.0.display())),
                "{msg}"
            );
        }
    }

    #[test]
    fn wrong_owner_is_refused() {
        // SAFETY: as in load_keys.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            // Only root can give a file away; the check itself is covered by load_keys.
            return;
        }
        let f = TempKey::new(&format!("{}\n", k(1)), 0o600);
        std::os::unix::fs::chown(&f.0, Some(65534), None).unwrap();
        let e = load_keys(&f.0).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::Owner {
                    uid: 65534,
                    euid: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("chown 0"), "{e}");
    }

    #[test]
    fn bad_hex_names_the_line() {
        let mut bad = k(1);
        bad.replace_range(10..11, "g");
        let f = TempKey::new(&format!("# key\n{}\n\n{bad}\n", k(2)), 0o600);
        let e = load_keys(&f.0).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::BadLine {
                    line: 4,
                    problem: LineProblem::NotHex,
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("line 4") && msg.contains(&f.0.display().to_string()));
        assert!(
            !msg.contains(&bad),
            "the message must not echo key material"
        );
    }

    #[test]
    fn wrong_length_names_the_line() {
        let f = TempKey::new(&format!("{}\n", &k(1)[..63]), 0o600);
        let e = load_keys(&f.0).unwrap_err();
        assert!(
            matches!(
                e,
                KeyFileError::BadLine {
                    line: 1,
                    problem: LineProblem::Length(63),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn three_keys_refused() {
        let f = TempKey::new(&format!("{}\n{}\n# c\n{}\n", k(1), k(2), k(3)), 0o600);
        let e = load_keys(&f.0).unwrap_err();
        assert!(matches!(e, KeyFileError::TooMany { line: 4, .. }), "{e}");
    }

    #[test]
    fn empty_and_comment_only_refused() {
        for text in ["", "\n\n", "# only a comment\n   # another\n"] {
            let f = TempKey::new(text, 0o600);
            let e = load_keys(&f.0).unwrap_err();
            assert!(matches!(e, KeyFileError::Empty { .. }), "{text:?}: {e}");
        }
    }

    #[test]
    fn missing_file_and_directory() {
        let p = std::env::temp_dir().join(format!("vipd-keyfile-missing-{}", std::process::id()));
        let e = load_keys(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::Io { .. }));
        assert!(e.to_string().contains(&p.display().to_string()));
        let dir = std::env::temp_dir().join(format!("vipd-keyfile-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = load_keys(&dir).unwrap_err();
        let _ = std::fs::remove_dir(&dir);
        assert!(matches!(e, KeyFileError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn oversized_file_refused() {
        let text = "#".repeat(MAX_FILE_LEN as usize + 1);
        let f = TempKey::new(&text, 0o600);
        assert!(matches!(
            load_keys(&f.0).unwrap_err(),
            KeyFileError::TooLarge { .. }
        ));
    }

    #[test]
    fn non_utf8_and_multibyte_lines_do_not_panic() {
        assert_eq!(
            parse(b"\xff\xfe\n"),
            Err(ParseError::BadLine(1, LineProblem::Length(2)))
        );
        // 64 bytes, but multi-byte characters: must not slice inside a character.
        let s = "é".repeat(32);
        assert_eq!(s.len(), 64);
        assert_eq!(
            parse(s.as_bytes()),
            Err(ParseError::BadLine(1, LineProblem::NotHex))
        );
    }

    #[test]
    fn generated_keys_load_back() {
        let mut rng = rand::thread_rng();
        let a = generate_key(&mut rng);
        let b = generate_key(&mut rng);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let f = TempKey::new(&format!("{a}\n{b}\n"), 0o600);
        let (pa, pb) = load_keys(&f.0).unwrap();
        let hex = |k: [u8; 32]| k.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(pa), a);
        assert_eq!(hex(pb.unwrap()), b);
    }
}
