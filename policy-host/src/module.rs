//! Compiling a module and checking its exports against ABI section 1.1.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{ExternType, InstancePre, Linker, Module, ModuleExport, ValType};

use crate::error::PolicyError;
use crate::sandbox::{Resume, StoreState};

/// What a module can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyKind {
    /// Exports `tmc_place`.
    Placement,
    /// Exports `tmc_transform`.
    Transformation,
    /// Exports both.
    Both,
}

impl PolicyKind {
    /// True when the module exports `tmc_place`.
    pub fn places(self) -> bool {
        matches!(self, Self::Placement | Self::Both)
    }
    /// True when the module exports `tmc_transform`.
    pub fn transforms(self) -> bool {
        matches!(self, Self::Transformation | Self::Both)
    }
    /// Its name in JSON: `placement`, `transformation` or `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Placement => "placement",
            Self::Transformation => "transformation",
            Self::Both => "both",
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Placement => "placement",
            Self::Transformation => "transformation",
            Self::Both => "placement+transformation",
        })
    }
}

/// Which compiler produced a module's machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    /// Winch, the baseline compiler: compiles in a fraction of Cranelift's
    /// time, runs slower (docs/benchmarks.md). Serves a module never seen before until its
    /// optimized code is ready.
    Baseline,
    /// Cranelift, the optimizing compiler.
    Optimized,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Baseline => "baseline (Winch)",
            Self::Optimized => "optimized (Cranelift)",
        })
    }
}

/// A compiled, export-checked module ready to instantiate.
pub(crate) struct CompiledPolicy {
    pub digest: String,
    pub kind: PolicyKind,
    pub tier: Tier,
    pub pre: InstancePre<StoreState>,
    pub exports: Exports,
    /// `Some` for a pre-initialized snapshot (see [`crate::snapshot`]): where
    /// its evaluations resume. `None` for a module served as written.
    pub snapshot: Option<Resume>,
}

impl CompiledPolicy {
    /// The names of the function exports of the module as written, sorted
    /// (a snapshot no longer exports the `_initialize` its module did).
    pub fn function_exports(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pre
            .module()
            .exports()
            .filter(|export| matches!(export.ty(), ExternType::Func(_)))
            .map(|export| export.name().to_string())
            .collect();
        if self.snapshot.is_some() {
            names.push("_initialize".into());
        }
        names.sort();
        names
    }
}

/// The exports an evaluation calls, resolved once per module so a call never
/// looks an export up by name.
pub(crate) struct Exports {
    pub memory: ModuleExport,
    pub initialize: Option<ModuleExport>,
    pub abi_version: ModuleExport,
    pub alloc: ModuleExport,
    pub validate_settings: ModuleExport,
    pub place: Option<ModuleExport>,
    pub transform: Option<ModuleExport>,
    pub test_vectors: Option<ModuleExport>,
}

/// SHA-256 of the module bytes, lower-case hex.
pub(crate) fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks imports and exports, then pre-links the module (a snapshot of
/// the module `digest` when `snapshot` says where it resumes).
pub(crate) fn prepare(
    name: &str,
    module: Module,
    digest: String,
    tier: Tier,
    linker: &Linker<StoreState>,
    snapshot: Option<Resume>,
) -> Result<Arc<CompiledPolicy>, PolicyError> {
    for import in module.imports() {
        if import.module() != "wasi_snapshot_preview1"
            || !matches!(import.ty(), ExternType::Func(_))
        {
            return Err(PolicyError::ImportNotAllowed {
                policy: name.into(),
                module: import.module().into(),
                name: import.name().into(),
            });
        }
    }
    let i32_ = || ValType::I32;
    let i64_ = || ValType::I64;
    expect_memory(name, &module)?;
    expect_func(name, &module, "tmc_abi_version", &[], &[i32_()], true)?;
    expect_func(name, &module, "tmc_alloc", &[i32_()], &[i32_()], true)?;
    let entry = [i32_(), i32_()];
    expect_func(
        name,
        &module,
        "tmc_validate_settings",
        &entry,
        &[i64_()],
        true,
    )?;
    let places = expect_func(name, &module, "tmc_place", &entry, &[i64_()], false)?;
    let transforms = expect_func(name, &module, "tmc_transform", &entry, &[i64_()], false)?;
    let has_vectors = expect_func(name, &module, "tmc_test_vectors", &[], &[i64_()], false)?;
    let has_initialize = expect_func(name, &module, "_initialize", &[], &[], false)?;
    let index =
        |export: &str, present: bool| present.then(|| module.get_export_index(export)).flatten();
    let required = |export: &str| {
        module
            .get_export_index(export)
            .ok_or_else(|| PolicyError::MissingExport {
                policy: name.into(),
                export: export.into(),
                problem: "is missing".into(),
            })
    };
    let exports = Exports {
        memory: required("memory")?,
        initialize: index("_initialize", has_initialize),
        abi_version: required("tmc_abi_version")?,
        alloc: required("tmc_alloc")?,
        validate_settings: required("tmc_validate_settings")?,
        place: index("tmc_place", places),
        transform: index("tmc_transform", transforms),
        test_vectors: index("tmc_test_vectors", has_vectors),
    };
    let kind = match (places, transforms) {
        (true, true) => PolicyKind::Both,
        (true, false) => PolicyKind::Placement,
        (false, true) => PolicyKind::Transformation,
        (false, false) => {
            return Err(PolicyError::MissingExport {
                policy: name.into(),
                export: "tmc_place or tmc_transform".into(),
                problem: "is missing: a policy must export at least one of them".into(),
            });
        }
    };
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| PolicyError::Instantiate {
            policy: name.into(),
            message: format!("{e:#}"),
        })?;
    Ok(Arc::new(CompiledPolicy {
        digest,
        kind,
        tier,
        pre,
        exports,
        snapshot,
    }))
}

fn expect_memory(name: &str, module: &Module) -> Result<(), PolicyError> {
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        other => Err(PolicyError::MissingExport {
            policy: name.into(),
            export: "memory".into(),
            problem: if other.is_some() {
                "is not a memory".into()
            } else {
                "is missing".into()
            },
        }),
    }
}

/// `Ok(true)` when the function is exported with the right signature,
/// `Ok(false)` when it is absent and optional.
fn expect_func(
    name: &str,
    module: &Module,
    export: &str,
    params: &[ValType],
    results: &[ValType],
    required: bool,
) -> Result<bool, PolicyError> {
    let fail = |problem: String| PolicyError::MissingExport {
        policy: name.into(),
        export: export.into(),
        problem,
    };
    match module.get_export(export) {
        None if required => Err(fail("is missing".into())),
        None => Ok(false),
        Some(ExternType::Func(ty)) => {
            let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
                a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
            };
            if same(&mut ty.params(), params) && same(&mut ty.results(), results) {
                Ok(true)
            } else {
                Err(fail(format!(
                    "has signature {ty}, expected params {params:?} results {results:?}"
                )))
            }
        }
        Some(_) => Err(fail("is not a function".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_in_json_as_as_str_says() {
        for kind in [
            PolicyKind::Placement,
            PolicyKind::Transformation,
            PolicyKind::Both,
        ] {
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<PolicyKind>(json).ok(), Some(kind));
        }
    }
}
