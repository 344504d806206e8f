//! Every shipped WGSL program (includes expanded) parses and validates with naga; no GPU needed.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use vaegpu::gpu::pipeline::{shader_source, SHADERS, SNIPPETS};

fn programs() -> impl Iterator<Item = (&'static str, &'static str)> {
    SHADERS.iter().copied().filter(|(name, _)| !SNIPPETS.contains(name))
}

#[test]
fn every_program_parses_and_validates() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, _) in programs() {
        let src = shader_source(name);
        let module = match naga::front::wgsl::parse_str(&src) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}.wgsl: parse error\n{}", e.emit_to_string(&src)));
                continue;
            }
        };
        // matmul_sg uses subgroup operations, matmul_sg64 and matmul_sgtex also 64-bit integers, as
        // does optim64 (each runs only where the device has them).
        let caps = Capabilities::default() | Capabilities::SUBGROUP | Capabilities::SHADER_INT64;
        let mut validator = Validator::new(ValidationFlags::all(), caps);
        if let Err(e) = validator.validate(&module) {
            failures.push(format!("{name}.wgsl: validation error\n{}", e.emit_to_string(&src)));
            continue;
        }
        assert!(!module.entry_points.is_empty(), "{name}.wgsl has no entry point (should it be in SNIPPETS?)");
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(checked, SHADERS.len() - SNIPPETS.len());
}

#[test]
fn includes_are_expanded() {
    for (name, _) in programs() {
        let src = shader_source(name);
        assert!(!src.contains("//!include"), "{name}.wgsl still holds an include line after expansion");
    }
}

#[test]
fn every_program_starts_with_a_comment_header() {
    for (name, raw) in programs() {
        let first = raw.lines().next().unwrap_or("");
        assert!(first.starts_with("//"), "{name}.wgsl must begin with a comment header, first line is {first:?}");
        // The expanded source keeps the header in front of any included file.
        let expanded = shader_source(name);
        assert!(expanded.starts_with(first), "{name}.wgsl: expansion moved the header");
    }
}

#[test]
fn snippets_are_shipped() {
    for s in SNIPPETS {
        assert!(SHADERS.iter().any(|(n, _)| n == s), "snippet {s} is not in SHADERS");
    }
}
