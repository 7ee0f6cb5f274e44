//! Fuzzing the control file's parser (proptest): any text, and YAML built from anchors and
//! aliases (the way a small file expands into a large one), is parsed or refused with an error,
//! never a panic, and an expansion past the documented bound is refused before it is built.
//! A longer run: `PROPTEST_CASES=20000 cargo test -p mesh-control --test file_fuzz --release`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use mesh_core::testing::trust_domain;
use proptest::prelude::*;

/// Lines of YAML the control file uses, with anchors and aliases among them.
const LINES: &[&str] = &[
    "services:",
    "  - name: a",
    "  - &x {name: b, endpoints: [{address: 10.0.0.1:80, identity: spiffe://mesh.local/ns/default/sa/b}]}",
    "  - *x",
    "    endpoints: &e [*x, *x, *x, *x]",
    "    routes: [{name: r, rules: [{backendRefs: [{name: a}]}]}]",
    "bootstrapTokens:",
    "  - {token: t, namespace: default, serviceAccount: b}",
    "policies: []",
    "instanceZones: {default/x: zone-a}",
    "x: &y [*e, *e, *e, *e, *e, *e, *e, *e]",
    "z: [*y, *y, *y, *y, *y, *y, *y, *y]",
    "defaultPolicy: deny",
    "  - name: \u{0}",
    "---",
    "[",
];

proptest! {
    #[test]
    fn any_text_is_parsed_or_refused(text in "(?s).{0,600}") {
        let _ = mesh_control::file::parse(&text, &trust_domain());
    }

    #[test]
    fn lines_of_the_file_in_any_order_are_parsed_or_refused(
        lines in prop::collection::vec(prop::sample::select(LINES), 0..24),
    ) {
        let text = lines.join("\n");
        let _ = mesh_control::file::parse(&text, &trust_domain());
    }
}
