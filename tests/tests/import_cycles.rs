//! No import cycles between the files of one crate.
//!
//! For every crate target of the workspace (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`), this follows the `mod name;` declarations to the files of
//! the module tree, reads every path that starts with `crate::`, `super::` or
//! `self::` in each file (in `use` trees and in expressions, test modules
//! included), resolves it to the file that defines the module it names, and
//! fails on any cycle in the resulting file graph, naming each file of the
//! cycle and the paths that make each step.
//!
//! A `mod name;` declaration is not an edge: a parent owns its children. A
//! `pub use self::child::Item` re-export in the parent is one.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

#[test]
fn no_import_cycles_between_files_of_one_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    let mut files_seen = 0;
    for member in workspace_members(&root) {
        for target in crate_roots(&root.join(&member)) {
            let graph = FileGraph::of(&target);
            files_seen += graph.files.len();
            for (cycle, tangle) in graph.cycles() {
                let _ = writeln!(report, "{member}: {}", graph.describe(&cycle));
                if tangle.len() > cycle.len() {
                    let names: Vec<String> = tangle.iter().map(|&i| graph.name(i)).collect();
                    let _ = writeln!(report, "  (one of the cycles among {})", names.join(", "));
                }
            }
        }
    }
    assert!(
        files_seen > 50,
        "found only {files_seen} source files; is the workspace root right?"
    );
    assert!(
        report.is_empty(),
        "import cycles between files (move what both sides need into a module that imports \
         neither, so the files form a hierarchy):\n{report}"
    );
}

/// The checker itself: a cycle through `use super::`, a brace tree and an
/// expression path is found; a child that a parent only declares is not.
#[test]
fn the_checker_finds_a_cycle_and_ignores_mod_declarations() {
    let dir = pcap_tests::TempDir::new("import-cycles").unwrap();
    let src = dir.join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").unwrap();
    fs::write(
        src.join("a/mod.rs"),
        "// use crate::a::inner::Y;\npub mod inner;\nuse crate::{x, b::{Thing, other as o}};\n\
         const S: &str = \"crate::a::inner::Y\";\npub struct Y;\n",
    )
    .unwrap();
    fs::write(src.join("a/inner.rs"), "use super::Y;\n").unwrap();
    fs::write(
        src.join("b.rs"),
        "fn f<'a>(x: &'a u8) -> u8 { crate::c::N }\n",
    )
    .unwrap();
    fs::write(
        src.join("c.rs"),
        "#[cfg(test)]\nmod tests {\n    use super::super::a::Y;\n}\n",
    )
    .unwrap();
    let graph = FileGraph::of(&src.join("lib.rs"));
    let cycles = graph.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    let described = graph.describe(&cycles[0].0);
    for file in ["src/a/mod.rs", "src/b.rs", "src/c.rs", "src/a/inner.rs"] {
        assert_eq!(
            described.contains(file),
            file != "src/a/inner.rs",
            "{described}"
        );
    }
}

fn workspace_members(root: &Path) -> Vec<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest.find("members = [").expect("workspace members");
    let list = &manifest[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

fn crate_roots(member: &Path) -> Vec<PathBuf> {
    let src = member.join("src");
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(|f| src.join(f))
        .filter(|p| p.is_file())
        .collect();
    if let Ok(bins) = fs::read_dir(src.join("bin")) {
        let mut bins: Vec<PathBuf> = bins
            .filter_map(Result::ok)
            .map(|e| e.path())
            .map(|p| if p.is_dir() { p.join("main.rs") } else { p })
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs"))
            .collect();
        bins.sort();
        roots.extend(bins);
    }
    roots
}

/// The files of one crate target, keyed by module path, and the edges
/// between them with the paths that make each edge.
struct FileGraph {
    base: PathBuf,
    /// Module path (`["store", "config"]`) → file.
    files: BTreeMap<Vec<String>, PathBuf>,
    /// File index → file index → example paths.
    edges: BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>>,
}

impl FileGraph {
    fn of(root: &Path) -> Self {
        let base = root.parent().unwrap().parent().unwrap().to_path_buf();
        let mut files = BTreeMap::new();
        let mut sources = BTreeMap::new();
        let mut pending = vec![(Vec::<String>::new(), root.to_path_buf())];
        while let Some((module, file)) = pending.pop() {
            let text = strip(&fs::read_to_string(&file).unwrap());
            let dir = if module.is_empty() || file.file_name().is_some_and(|n| n == "mod.rs") {
                file.parent().unwrap().to_path_buf()
            } else {
                file.with_extension("")
            };
            for child in mod_declarations(&text) {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(&child).join("mod.rs");
                // A `#[path]` module outside the tree is not found; skip it.
                let Some(child_file) = [flat, nested].into_iter().find(|p| p.is_file()) else {
                    continue;
                };
                let mut child_module = module.clone();
                child_module.push(child);
                pending.push((child_module, child_file));
            }
            files.insert(module.clone(), file);
            sources.insert(module, text);
        }
        let index: BTreeMap<&Vec<String>, usize> =
            files.keys().enumerate().map(|(i, m)| (m, i)).collect();
        let mut edges: BTreeMap<usize, BTreeMap<usize, BTreeSet<String>>> = BTreeMap::new();
        for (module, text) in &sources {
            let from = index[module];
            for (path, written) in references(module, text) {
                let Some(target) = (0..=path.len())
                    .rev()
                    .map(|n| &path[..n])
                    .find(|p| files.contains_key(*p))
                else {
                    continue;
                };
                let to = index[&target.to_vec()];
                if to != from {
                    edges
                        .entry(from)
                        .or_default()
                        .entry(to)
                        .or_default()
                        .insert(written);
                }
            }
        }
        Self { base, files, edges }
    }

    fn name(&self, i: usize) -> String {
        let file = self.files.values().nth(i).unwrap();
        file.strip_prefix(&self.base)
            .unwrap_or(file)
            .display()
            .to_string()
    }

    /// One cycle per strongly connected component of more than one file
    /// (the shortest path from its first file back to itself), and the
    /// component.
    fn cycles(&self) -> Vec<(Vec<usize>, BTreeSet<usize>)> {
        let n = self.files.len();
        let reach = |from: usize| {
            let mut seen = BTreeSet::from([from]);
            let mut stack = vec![from];
            while let Some(i) = stack.pop() {
                for &j in self.edges.get(&i).into_iter().flat_map(BTreeMap::keys) {
                    if seen.insert(j) {
                        stack.push(j);
                    }
                }
            }
            seen
        };
        let reaches: Vec<BTreeSet<usize>> = (0..n).map(reach).collect();
        let mut done = BTreeSet::new();
        let mut cycles = Vec::new();
        for i in 0..n {
            if done.contains(&i) {
                continue;
            }
            let component: BTreeSet<usize> = reaches[i]
                .iter()
                .copied()
                .filter(|&j| reaches[j].contains(&i))
                .collect();
            done.extend(component.iter().copied());
            if component.len() > 1 {
                cycles.push((self.shortest_cycle(i, &component), component));
            }
        }
        cycles
    }

    fn shortest_cycle(&self, start: usize, within: &BTreeSet<usize>) -> Vec<usize> {
        let mut came_from = BTreeMap::new();
        let mut frontier = vec![start];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for i in frontier {
                for &j in self.edges.get(&i).into_iter().flat_map(BTreeMap::keys) {
                    if j == start {
                        let mut cycle = vec![i];
                        while let Some(&p) = came_from.get(cycle.last().unwrap()) {
                            cycle.push(p);
                        }
                        cycle.reverse();
                        return cycle;
                    }
                    if within.contains(&j) && !came_from.contains_key(&j) && j != start {
                        came_from.insert(j, i);
                        next.push(j);
                    }
                }
            }
            frontier = next;
        }
        unreachable!("a strongly connected component has a cycle through each file")
    }

    fn describe(&self, cycle: &[usize]) -> String {
        let mut out = String::new();
        for (k, &i) in cycle.iter().enumerate() {
            let j = cycle[(k + 1) % cycle.len()];
            let why: Vec<&str> = self.edges[&i][&j]
                .iter()
                .take(3)
                .map(String::as_str)
                .collect();
            let _ = write!(out, "{} -[{}]-> ", self.name(i), why.join(", "));
        }
        out.push_str(&self.name(cycle[0]));
        out
    }
}

/// Source text with comments, string and char literals blanked out.
fn strip(text: &str) -> String {
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
        } else if (c == 'r' || c == 'b')
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_hashes(&chars[i..]).is_some()
        {
            let (skip, hashes) = raw_string_hashes(&chars[i..]).unwrap();
            i += skip;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
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
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// For `r"`, `r#"`, `br##"`: the characters up to the opening quote and the
/// number of `#`.
fn raw_string_hashes(chars: &[char]) -> Option<(usize, usize)> {
    let mut i = usize::from(chars.first() == Some(&'b'));
    if chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
    (chars.get(i + hashes) == Some(&'"')).then_some((i + hashes + 1, hashes))
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open(char),
    Close(char),
    Comma,
    Semi,
    Other,
}

fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            out.push(Token::Ident(ident.trim_start_matches("r#").to_owned()));
            continue;
        }
        out.push(match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 1;
                Token::PathSep
            }
            '{' | '(' | '[' => Token::Open(c),
            '}' | ')' | ']' => Token::Close(c),
            ',' => Token::Comma,
            ';' => Token::Semi,
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => Token::Other,
        });
        i += 1;
    }
    out
}

/// The `mod name;` declarations at the top level of a file (inline
/// `mod name { .. }` modules stay in the file).
fn mod_declarations(text: &str) -> Vec<String> {
    let tokens = tokens(text);
    let mut depth = 0usize;
    let mut found = Vec::new();
    for (k, token) in tokens.iter().enumerate() {
        match token {
            Token::Open(_) => depth += 1,
            Token::Close(_) => depth = depth.saturating_sub(1),
            Token::Ident(m) if m == "mod" && depth == 0 => {
                if let (Some(Token::Ident(name)), Some(Token::Semi)) =
                    (tokens.get(k + 1), tokens.get(k + 2))
                {
                    found.push(name.clone());
                }
            }
            _ => {}
        }
    }
    found
}

/// Every `crate::`/`super::`/`self::` path in a file, resolved to an
/// absolute module path, with the text it was written as.
fn references(module: &[String], text: &str) -> Vec<(Vec<String>, String)> {
    let tokens = tokens(text);
    // The module path at each brace depth, for inline `mod name { .. }`.
    let mut scopes: Vec<(usize, Vec<String>)> = vec![(0, module.to_vec())];
    let mut depth = 0usize;
    let mut found = Vec::new();
    let mut k = 0;
    while k < tokens.len() {
        match &tokens[k] {
            Token::Open(c) => {
                depth += 1;
                if *c == '{'
                    && k >= 2
                    && tokens[k - 2] == Token::Ident("mod".into())
                    && let Token::Ident(name) = &tokens[k - 1]
                {
                    let mut inner = scopes.last().unwrap().1.clone();
                    inner.push(name.clone());
                    scopes.push((depth, inner));
                }
            }
            Token::Close(_) => {
                if scopes.last().unwrap().0 == depth && scopes.len() > 1 {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(first)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && tokens.get(k + 1) == Some(&Token::PathSep)
                    && !(k > 0 && tokens[k - 1] == Token::PathSep) =>
            {
                let here = &scopes.last().unwrap().1;
                let (paths, end) = path_tree(&tokens, k);
                for path in paths {
                    if let Some(absolute) = resolve(here, &path) {
                        found.push((absolute, path.join("::")));
                    }
                }
                k = end;
                continue;
            }
            _ => {}
        }
        k += 1;
    }
    found
}

/// The paths of a path or `use` tree starting at `tokens[k]`, expanded
/// (`a::{b, c::d}` → `a::b`, `a::c::d`), and the index after it.
fn path_tree(tokens: &[Token], mut k: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match tokens.get(k) {
            Some(Token::Ident(segment)) => {
                prefix.push(segment.clone());
                k += 1;
                if tokens.get(k) == Some(&Token::PathSep) {
                    k += 1;
                } else {
                    return (vec![prefix], k);
                }
            }
            Some(Token::Open('{')) => {
                k += 1;
                let mut paths = Vec::new();
                while !matches!(tokens.get(k), Some(Token::Close('}')) | None) {
                    let (inner, end) = path_tree(tokens, k);
                    paths.extend(inner.into_iter().map(|p| [prefix.clone(), p].concat()));
                    k = end;
                    // Skip `as name` and anything else up to the separator.
                    while !matches!(tokens.get(k), Some(Token::Comma | Token::Close('}')) | None) {
                        k += 1;
                    }
                    if tokens.get(k) == Some(&Token::Comma) {
                        k += 1;
                    }
                }
                return (paths, k + 1);
            }
            // `*`, `<`, or the end: the path so far.
            _ => return (vec![prefix], k),
        }
    }
}

/// `crate::a::b` / `super::super::c` / `self::d` written in module `here`,
/// as an absolute module path; `None` for a `self` or `super` that leaves the
/// crate, or a path that is only `self`.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut absolute: Vec<String> = here.to_vec();
    let mut rest = path;
    if rest.first().is_some_and(|s| s == "crate") {
        absolute.clear();
        rest = &rest[1..];
    }
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                absolute.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    absolute.extend(rest.iter().cloned());
    Some(absolute)
}
