//! The shape of the code, checked: no import cycle between the modules of any crate, and the
//! server side of the runtime never imports from its client side (what both need lives in
//! modules of its own).
//!
//! An arrow A -> B is a `use crate::`/`super::`/`self::` path (or such a path written inline)
//! in module A's file that names an item of module B, resolved to the deepest module file it
//! names. `mod` declarations and `pub use` re-exports are a module's structure, not arrows;
//! test code (`tests.rs`, and a file's text from its first `#[cfg(test)]`) is left out.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates' source folders, from the workspace root.
const CRATES: &[&str] = &[
    "mesh-core/src",
    "mesh-tower/src",
    "mesh-tower/process/src",
    "mesh-tonic/src",
    "control/src",
];

type Module = Vec<String>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every module file of a crate (binaries and test files left out), by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, src, out);
                }
                continue;
            }
            let Some(stem) = path
                .extension()
                .filter(|e| *e == "rs")
                .and(path.file_stem())
                .and_then(|s| s.to_str())
            else {
                continue;
            };
            if stem == "tests" {
                continue;
            }
            let relative = path.parent().unwrap().strip_prefix(src).unwrap();
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match stem {
                "lib" | "main" if module.is_empty() => {}
                "mod" => {}
                _ => module.push(stem.to_owned()),
            }
            out.entry(module).or_insert(path);
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// A file's code without its tests, comments and re-exports.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with("//"))
        .filter(|line| !(line.starts_with("pub use") || line.starts_with("pub(crate) use")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names: `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree];
    };
    let (head, group) = (&tree[..open], &tree[open + 1..tree.len().saturating_sub(1)]);
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&group[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(p).into_iter().map(move |e| format!("{head}{e}")))
        .collect()
}

/// The `crate::`, `super::` and `self::` paths a file's code names.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let after = &rest[at + 4..];
        let Some(end) = after.find(';') else { break };
        let tree = &after[..end];
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|p| tree.trim_start().starts_with(p))
        {
            out.extend(expand(tree));
        }
        rest = &after[end..];
    }
    // Inline paths: `crate::a::b` written in an expression or a type.
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let path: String = code[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(path);
    }
    out
}

/// The module file a path leads to from `here`: the deepest module it names.
fn resolve(here: &Module, path: &str, mods: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut parts = path
        .split("::")
        .map(|p| p.split(" as ").next().unwrap_or(p));
    let mut base: Module = match parts.next()? {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => here[..here.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut rest: Vec<&str> = parts.collect();
    while rest.first() == Some(&"super") {
        base.pop();
        rest.remove(0);
    }
    let mut best = None;
    for i in 0..=rest.len() {
        let mut candidate = base.clone();
        candidate.extend(rest[..i].iter().map(|s| (*s).to_owned()));
        if mods.contains_key(&candidate) {
            best = Some(candidate);
        }
    }
    best
}

/// The arrows between one crate's module files.
fn arrows(
    src: &Path,
) -> (
    BTreeMap<Module, PathBuf>,
    BTreeMap<Module, BTreeSet<Module>>,
) {
    let mods = modules(src);
    let mut graph = BTreeMap::new();
    for (module, file) in &mods {
        let targets: BTreeSet<Module> = paths(&code(file))
            .iter()
            .filter_map(|p| resolve(module, p, &mods))
            .filter(|target| target != module)
            .collect();
        graph.insert(module.clone(), targets);
    }
    (mods, graph)
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'a> {
        graph: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = Vec::new();
    for krate in CRATES {
        let (mods, graph) = arrows(&root().join(krate));
        assert!(mods.len() > 1, "{krate}: no modules found");
        for cycle in cycles(&graph) {
            let files: Vec<_> = cycle
                .iter()
                .map(|m| mods[m].strip_prefix(root()).unwrap().display().to_string())
                .collect();
            found.push(files.join(" <-> "));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_server_side_never_imports_from_the_client_side() {
    let (_, graph) = arrows(&root().join("mesh-tower/src"));
    let offending: Vec<_> = graph
        .iter()
        .filter(|(from, _)| from.first().is_some_and(|m| m == "server"))
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| t.first().is_some_and(|m| m == "client"))
                .map(move |t| format!("{} -> {}", from.join("::"), t.join("::")))
        })
        .collect();
    assert!(offending.is_empty(), "{offending:?}");
    // The check sees arrows at all: the layer uses the server's telemetry.
    assert!(
        graph[&vec!["server".to_owned(), "layer".to_owned()]]
            .contains(&vec!["server".to_owned(), "telemetry".to_owned()])
    );
}

#[test]
fn the_checker_finds_a_cycle_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::{B, other::X};\npub struct A;\n",
    )
    .unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B(crate::a::A);\n").unwrap();
    let (_, graph) = arrows(src);
    assert_eq!(cycles(&graph).len(), 1, "{graph:?}");
    std::fs::write(
        src.join("b.rs"),
        "pub struct B;\n#[cfg(test)]\nuse crate::a::A;\n",
    )
    .unwrap();
    let (_, graph) = arrows(src);
    assert!(
        cycles(&graph).is_empty(),
        "test code is left out: {graph:?}"
    );
}
