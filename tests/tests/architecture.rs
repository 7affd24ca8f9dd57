//! The shape of the code, checked (docs/architecture.md): no import cycle between the files of
//! one crate, and no production file over 400 lines without a one-line reason at its top.
//!
//! An import is a `crate::…` or `super::…` path outside comments and outside the file's
//! `#[cfg(test)]` tail; it points at the longest prefix of the path that names a file. A parent
//! module declaring its children (`mod x;`) is the module tree, not an import.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 5] = ["core", "control-plane", "proxy", "app", "testkit"];
/// Above this many production lines a file says why at its top ("Over 400 lines: …").
const LONG_FILE_LINES: usize = 420;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The crate's production source files (test modules and test-only files left out).
fn sources(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The part of a file that ships: up to its first `#[cfg(test)]`.
fn production(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or("")
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of `file` below `src` (`lib.rs` and `mod.rs` name their directory).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file a module path points into: its longest prefix that is a file.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let base = path[..n].iter().fold(src.to_owned(), |p, s| p.join(s));
        [base.with_extension("rs"), base.join("mod.rs")]
            .into_iter()
            .find(|f| f.is_file())
    })
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every `crate::a::b…` and `super::…` path in `code`, as module paths from the crate root
/// (a `{a, b}` group counts each member's first segment).
fn imports(code: &str, here: &[String], is_dir_module: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, keyword) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::x` is read from its first `super`
        }
        let mut base: Vec<String> = if keyword == "crate::" {
            Vec::new()
        } else {
            let mut b = here.to_vec();
            if !is_dir_module || !b.is_empty() {
                b.pop();
            }
            b
        };
        let mut rest = &code[at + keyword.len()..];
        while let Some(next) = rest.strip_prefix("super::") {
            base.pop();
            rest = next;
        }
        let mut path = base;
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for member in group.split(',') {
                    let first = ident(member.trim());
                    if !first.is_empty() && first != "self" {
                        let mut p = path.clone();
                        p.push(first.to_owned());
                        out.push(p);
                    }
                }
                break;
            }
            let segment = ident(rest);
            if segment.is_empty() {
                out.push(path);
                break;
            }
            path.push(segment.to_owned());
            rest = &rest[segment.len()..];
            match rest.strip_prefix("::") {
                Some(next) => rest = next,
                None => {
                    out.push(path);
                    break;
                }
            }
        }
    }
    out
}

type Graph = BTreeMap<PathBuf, BTreeSet<PathBuf>>;

fn import_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in sources(src) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = without_comments(production(&text));
        let here = module_of(src, &file);
        let is_dir_module = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs" | "main.rs")
        );
        let targets = imports(&code, &here, is_dir_module)
            .into_iter()
            .filter_map(|p| file_of(src, &p))
            .filter(|t| *t != file)
            .collect();
        graph.insert(file, targets);
    }
    graph
}

/// One cycle of `graph`, if it has any (depth-first search with colours).
fn find_cycle(graph: &Graph) -> Option<Vec<PathBuf>> {
    fn visit(
        node: &PathBuf,
        graph: &Graph,
        done: &mut BTreeSet<PathBuf>,
        stack: &mut Vec<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            return Some(stack[i..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let root = workspace();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let graph = import_graph(&src);
        assert!(
            graph.len() > 3,
            "{krate}: no sources found under {}",
            src.display()
        );
        if let Some(cycle) = find_cycle(&graph) {
            let names: Vec<_> = cycle
                .iter()
                .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
                .collect();
            panic!("{krate}: import cycle {}", names.join(" -> "));
        }
    }
}

/// The checker itself finds a cycle where there is one.
#[test]
fn the_cycle_check_finds_a_two_file_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use super::a::{A};\npub struct B;\n").unwrap();
    std::fs::write(src.join("c.rs"), "// crate::a is only mentioned\n").unwrap();
    let graph = import_graph(src);
    let cycle = find_cycle(&graph).expect("a <-> b is a cycle");
    assert_eq!(cycle.len(), 2);
    std::fs::write(src.join("b.rs"), "pub struct B;\n").unwrap();
    assert_eq!(find_cycle(&import_graph(src)), None);
}

#[test]
fn long_production_files_say_why_at_their_top() {
    let root = workspace();
    let mut unexplained = Vec::new();
    // The testkit is test code: only the product's crates are held to this.
    for krate in ["core", "control-plane", "proxy", "app"] {
        for file in sources(&root.join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            let lines = production(&text).lines().count();
            let head: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
            if lines > LONG_FILE_LINES && !head.contains("Over 400 lines") {
                let name = file.strip_prefix(&root).unwrap().display().to_string();
                unexplained.push(format!("{name} ({lines} lines)"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "over {LONG_FILE_LINES} production lines without an `Over 400 lines: <why>` line near the top: {unexplained:?}"
    );
}
