//! The shape of the code: no circle between the top-level modules of `src/`, nor between the
//! sibling modules of one directory (`sync/`, `sandbox/`, `store/`, …), and `lib.rs`'s layout
//! paragraph names every module, each before the modules it uses.
//!
//! A module depends on another when its code (tests left out) names it: `crate::other…` or,
//! between siblings, `super::sibling…`. The scan reads the source as text, with comments,
//! strings and `#[cfg(test)]` items removed; it does not need the code to compile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name → the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn top_level_modules_form_no_circle() {
    let graph = top_level_graph(&src_dir());
    assert!(
        graph.len() > 20,
        "the scan found too few modules: {graph:?}"
    );
    assert_eq!(
        circles(&graph),
        Vec::<Vec<String>>::new(),
        "circles between src/ modules"
    );
}

#[test]
fn sibling_modules_form_no_circle() {
    let src = src_dir();
    let mut checked = 0;
    for dir in subdirectories(&src) {
        let graph = sibling_graph(&src, &dir);
        checked += graph.len();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            circles(&graph),
            Vec::<Vec<String>>::new(),
            "circles between the modules of src/{name}/"
        );
    }
    assert!(checked > 20, "the scan found too few modules");
}

#[test]
fn the_layout_paragraph_names_every_module() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let layout: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .skip_while(|l| !l.contains("# Layout"))
        .collect();
    let missing: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .filter(|m| !layout.contains(&format!("[`{m}`]")))
        .collect();
    assert!(!layout.is_empty(), "lib.rs has no `# Layout` paragraph");
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "modules lib.rs's layout leaves out"
    );
}

#[test]
fn each_module_uses_only_modules_the_layout_lists_after_it() {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    // The rank of each module: the line of the layout list naming it.
    let mut rank = BTreeMap::new();
    for (n, line) in lib.lines().filter(|l| l.starts_with("//! - ")).enumerate() {
        let names = line.split(':').next().unwrap_or_default();
        for name in names.split("[`").skip(1) {
            let name = name.split('`').next().unwrap_or_default();
            rank.entry(name.to_owned()).or_insert(n);
        }
    }
    let mut upward = Vec::new();
    for (module, uses) in top_level_graph(&src_dir()) {
        for used in uses {
            if let (Some(a), Some(b)) = (rank.get(&module), rank.get(&used))
                && a >= b
            {
                upward.push(format!("{module} uses {used}"));
            }
        }
    }
    assert_eq!(
        upward,
        Vec::<String>::new(),
        "lib.rs's layout lists these the wrong way round"
    );
}

#[test]
fn the_scan_sees_what_it_should() {
    let code = r#"
        //! Mentions crate::alpha in a comment.
        use crate::{beta::B, gamma};
        use super::delta::D;
        const S: &str = "crate::epsilon";
        const C: char = '"';
        fn f<'a>(x: &'a str) -> &'a str { crate::zeta::z(x) }
        #[cfg(test)]
        mod tests { use crate::eta; }
        #[cfg(test)]
        use crate::theta;
        /* crate::iota /* nested */ crate::kappa */
    "#;
    let text = code_only(code);
    assert_eq!(
        named_after(&text, "crate::"),
        ["beta", "gamma", "zeta"].map(String::from).into()
    );
    assert_eq!(
        named_after(&text, "super::"),
        ["delta"].map(String::from).into()
    );
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Every `.rs` file below `dir`, with its path relative to `dir`.
fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Files a parent declares `#[cfg(test)] mod name;`: test code as a whole.
fn test_only_files(files: &[(PathBuf, String)]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for (rel, text) in files {
        let dir = match rel.file_stem().unwrap().to_str().unwrap() {
            "lib" | "main" | "mod" => rel.parent().unwrap().to_path_buf(),
            stem => rel.with_file_name(stem),
        };
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[cfg(test)]") {
            rest = &rest[at + "#[cfg(test)]".len()..];
            let item = rest.trim_start();
            let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
            if let Some(decl) = item.strip_prefix("mod ")
                && let Some((name, _)) = decl.split_once(';')
                && !name.contains('{')
            {
                out.insert(dir.join(format!("{}.rs", name.trim())));
                out.insert(dir.join(name.trim()).join("mod.rs"));
            }
        }
    }
    out
}

fn top_level_graph(src: &Path) -> Graph {
    let files = rust_files(src);
    let tests = test_only_files(&files);
    let mut graph = Graph::new();
    for (rel, text) in &files {
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" || tests.contains(rel) {
            continue;
        }
        let named = named_after(&code_only(text), "crate::");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(named.into_iter().filter(|m| *m != module));
    }
    graph
}

/// The modules of `dir` (`src/sync/` → `action`, `apply`, …) and the siblings each names.
fn sibling_graph(src: &Path, dir: &Path) -> Graph {
    let parent = dir.file_name().unwrap().to_string_lossy().into_owned();
    let all = rust_files(src);
    let tests = test_only_files(&all);
    let files: Vec<_> = all
        .into_iter()
        .filter(|(rel, _)| rel.starts_with(&parent) && !tests.contains(rel))
        .collect();
    let module_of = |rel: &Path| -> Option<String> {
        let inner = rel.strip_prefix(&parent).unwrap();
        let first = inner.components().next()?.as_os_str().to_string_lossy();
        let name = first.trim_end_matches(".rs").to_owned();
        (name != "mod").then_some(name)
    };
    let siblings: BTreeSet<String> = files.iter().filter_map(|(rel, _)| module_of(rel)).collect();
    let mut graph = Graph::new();
    for (rel, text) in &files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let code = code_only(text);
        let mut named = named_after(&code, &format!("crate::{parent}::"));
        // `super::` names a sibling only from a file directly in the directory.
        if rel.components().count() == 2 {
            named.extend(named_after(&code, "super::"));
        }
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(
            named
                .into_iter()
                .filter(|m| *m != module && siblings.contains(m)),
        );
    }
    graph
}

/// The first path segment after each `prefix` (`prefix{a, b::c}` names `a` and `b`).
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        out.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out.remove("self");
    out
}

/// `text` with comments, string and char literals and `#[cfg(test)]` items blanked out.
fn code_only(text: &str) -> String {
    let stripped = strip_comments_and_strings(text);
    let mut out = String::with_capacity(stripped.len());
    let mut rest = stripped.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = skip_item(&rest[at + "#[cfg(test)]".len()..]);
    }
    out.push_str(rest);
    out
}

/// What follows the item at the start of `code`: after its `;`, or its braced body.
fn skip_item(code: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in code.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &code[i + 1..];
                }
            }
            ';' if depth == 0 => return &code[i + 1..],
            _ => {}
        }
    }
    ""
}

fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && is_raw_string(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            i += 2 + hashes;
            let close: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let close: Vec<char> = close.chars().collect();
            while i < chars.len() && !chars[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether the `r` at `i` starts a raw string (`r"…"`, `r#"…"#`), not an identifier's end.
fn is_raw_string(chars: &[char], i: usize) -> bool {
    let glued = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
    !glued && chars.get(i + 1 + hashes) == Some(&'"')
}

/// Every circle in `graph`, each once, as the modules along it.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    // Strongly connected components (Tarjan); any with more than one module is a circle.
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().position(|m| *m == v).unwrap();
                let component: Vec<String> = self.stack.drain(at..).map(str::to_owned).collect();
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    for c in &mut walk.found {
        c.sort();
    }
    walk.found
}
