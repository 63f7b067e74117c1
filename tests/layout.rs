//! Data flows one way, and so do the imports: every `crate::` path in `src/` (outside tests)
//! names a module of a lower layer than its own, or its own. The layers, lowest first, are
//! those `src/lib.rs`'s layout notes describe.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A module may use the modules of the layers before its own, never after.
const LAYERS: [&str; 16] = [
    "model",      // Hatchet's contract, nothing else
    "ids",        // UUIDs, run keys, series ids
    "setting",    // one error for a setting, one duration parser
    "log_limit",  // warnings at most N a second
    "decode",     // bytes -> a validated update
    "events",     // every observable event of the service (logs and self-metrics)
    "aggregate",  // pure, synchronous statistics
    "thresholds", // rules evaluated against the statistics, as numbers
    "config",     // the config file, which reads every layer's settings
    "sizing",     // the memory the config's caps allow
    "pipeline",   // one message through decode and aggregate
    "service",    // the running service's shared state
    "source",     // Kafka and replayed files feed the service
    "exporter",   // /metrics and the probes, rendered from the service
    "reload",     // thresholds applied again while running
    "traffic",    // the traffic tools, which the service never uses
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the binary, `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "main.rs" | "lib.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The modules a file's code (not its comments, not its tests) names through `crate::`.
fn uses_of(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break; // the rest of the file is its tests
        }
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
            rest = after;
        }
    }
    used
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let layer = |name: &str| LAYERS.iter().position(|l| *l == name);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(module) = module_of(&src, file) else { continue };
        let Some(own) = layer(&module) else {
            wrong.push(format!("{}: module {module} is in no layer", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable");
        for used in uses_of(&text) {
            checked += 1;
            match layer(&used) {
                Some(theirs) if theirs <= own => {}
                Some(_) => wrong.push(format!("{}: {module} uses {used}, a layer above it", file.display())),
                None => wrong.push(format!(
                    "{}: {module} uses {used}, which is in no layer",
                    file.display()
                )),
            }
        }
    }
    assert!(checked > 50, "the check saw only {checked} uses: is it reading src/?");
    assert!(wrong.is_empty(), "imports against the layout:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_upward_import() {
    let text = "use crate::model::V1WorkflowRun;\n// crate::exporter in a comment\nfn f() { crate::service::x(); }\n#[cfg(test)]\nmod tests { use crate::config::Config; }\n";
    let used = uses_of(text);
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["model", "service"]);
}

#[test]
fn every_module_of_the_library_is_in_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).expect("lib.rs");
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    let layered: BTreeSet<&str> = LAYERS.into_iter().collect();
    assert_eq!(declared, layered, "src/lib.rs's modules and the layers here must agree");
}
