//! Maps between field paths (`vip[2].backend[1].address`) and lines of the source, using
//! toml_edit's span-preserving parse. Both directions walk the same tree: [`Locator::line_of`]
//! goes from a path to the line of its value (or of the nearest enclosing table when the key
//! is missing), [`Locator::path_at`] from a byte offset (a serde error's span) to the deepest
//! path whose key or value covers it.

use std::fmt;
use std::ops::Range;

use toml_edit::{Item, Table, Value};

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted path into the document using the TOML key names, with 0-based indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// The last key of the path (ignoring trailing indices), if any.
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
    }

    /// Whether the path ends in an array index (an element rather than a key).
    pub fn is_element(&self) -> bool {
        matches!(self.0.last(), Some(Seg::Index(_)))
    }

    /// The segments, outermost first.
    pub fn segs(&self) -> &[Seg] {
        &self.0
    }

    /// Number of segments (deeper paths are more specific).
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Any node of the toml_edit tree: table-likes hold items, arrays hold values and arrays of
/// tables hold tables.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Item(i) => i.as_value(),
            Node::Value(v) => Some(v),
            Node::Table(_) => None,
        }
    }

    fn table_like(self) -> Option<&'a dyn toml_edit::TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
            Node::Table(t) => Some(t),
        }
    }

    /// The child at `seg` and the span of its key (for keys).
    fn child(self, seg: &Seg) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match seg {
            Seg::Key(k) => {
                let (key, item) = self.table_like()?.get_key_value(k)?;
                Some((Node::Item(item), key.span()))
            }
            Seg::Index(n) => {
                if let Node::Item(Item::ArrayOfTables(a)) = self {
                    return a.get(*n).map(|t| (Node::Table(t), None));
                }
                let v = self.value()?.as_array()?.get(*n)?;
                Some((Node::Value(v), None))
            }
        }
    }

    /// Every child with its path segment and key span.
    fn children(self) -> Vec<(Seg, Node<'a>, Option<Range<usize>>)> {
        if let Some(t) = self.table_like() {
            return t
                .iter()
                .map(|(k, item)| {
                    let span = t.key(k).and_then(|key| key.span());
                    (Seg::Key(k.to_owned()), Node::Item(item), span)
                })
                .collect();
        }
        if let Node::Item(Item::ArrayOfTables(a)) = self {
            return a
                .iter()
                .enumerate()
                .map(|(n, t)| (Seg::Index(n), Node::Table(t), None))
                .collect();
        }
        match self.value().and_then(Value::as_array) {
            Some(arr) => arr
                .iter()
                .enumerate()
                .map(|(n, v)| (Seg::Index(n), Node::Value(v), None))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Line lookups for one source file. Works (degraded to line 1) when the source does not
/// parse.
pub(crate) struct Locator<'a> {
    source: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    pub fn new(source: &'a str) -> Self {
        Self {
            source,
            doc: toml_edit::Document::parse(source).ok(),
        }
    }

    pub fn source(&self) -> &'a str {
        self.source
    }

    /// Whether the source is syntactically valid TOML.
    pub fn parsed(&self) -> bool {
        self.doc.is_some()
    }

    /// 1-based line of byte `offset`.
    pub fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.source.len());
        1 + self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }

    /// Line of the value at `path`; for a missing key, the line of the deepest table on the
    /// path that exists (e.g. the `[[vip.backend]]` header for a missing backend key).
    pub fn line_of(&self, path: &FieldPath) -> usize {
        let Some(doc) = &self.doc else { return 1 };
        let mut node = Node::Item(doc.as_item());
        let mut best: Option<usize> = None;
        for seg in &path.0 {
            let Some((child, key_span)) = node.child(seg) else {
                break;
            };
            node = child;
            if let Some(span) = child.span().or(key_span) {
                best = Some(span.start);
            }
        }
        best.map_or(1, |offset| self.line_at(offset))
    }

    /// The deepest path whose key or value span contains `offset` (root if none does).
    pub fn path_at(&self, offset: usize) -> FieldPath {
        let mut best = FieldPath::root();
        if let Some(doc) = &self.doc {
            visit(
                Node::Item(doc.as_item()),
                &FieldPath::root(),
                offset,
                &mut best,
            );
        }
        best
    }
}

fn contains(span: &Option<Range<usize>>, offset: usize) -> bool {
    span.as_ref()
        .is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn visit(node: Node<'_>, path: &FieldPath, offset: usize, best: &mut FieldPath) {
    for (seg, child, key_span) in node.children() {
        let child_path = FieldPath(path.0.iter().cloned().chain([seg]).collect());
        if (contains(&key_span, offset) || contains(&child.span(), offset))
            && child_path.len() > best.len()
        {
            *best = child_path.clone();
        }
        visit(child, &child_path, offset, best);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[node]\nname = \"a\"\n\n[[vip]]\nname = \"v\"\n\n[[vip]]\nname = \"w\"\n\
                       check = { kind = \"tcp\", rise = 0 }\n\n[[vip.backend]]\nname = \"b\"\n\
                       address = [\n  \"x\",\n  \"y\",\n]\n";

    #[test]
    fn path_display() {
        let p = FieldPath::root()
            .key("vip")
            .index(2)
            .key("backend")
            .index(1)
            .key("address");
        assert_eq!(p.to_string(), "vip[2].backend[1].address");
        assert_eq!(p.last_key(), Some("address"));
    }

    #[test]
    fn line_of_values_and_missing_keys() {
        let loc = Locator::new(SRC);
        let vip1 = FieldPath::root().key("vip").index(1);
        assert_eq!(loc.line_of(&FieldPath::root().key("node").key("name")), 2);
        assert_eq!(loc.line_of(&vip1.key("name")), 8);
        assert_eq!(loc.line_of(&vip1.key("check").key("rise")), 9);
        assert_eq!(
            loc.line_of(&vip1.key("port")),
            7,
            "missing key -> table header"
        );
        let b = vip1.key("backend").index(0);
        assert_eq!(loc.line_of(&b.key("port")), 11);
        assert_eq!(loc.line_of(&b.key("address").index(1)), 15);
        assert_eq!(
            loc.line_of(&FieldPath::root().key("cluster").key("hash_seed")),
            1
        );
    }

    #[test]
    fn path_at_offsets() {
        let loc = Locator::new(SRC);
        let at = |needle: &str| loc.path_at(SRC.find(needle).unwrap()).to_string();
        assert_eq!(at("rise"), "vip[1].check.rise");
        assert_eq!(at("0 }"), "vip[1].check.rise");
        assert_eq!(at("\"y\""), "vip[1].backend[0].address[1]");
        assert_eq!(at("\"a\""), "node.name");
    }
}
