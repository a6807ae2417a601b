//! The `export_*!` macros: the wasm exports of ABI v1, generated only when
//! compiling for `target_family = "wasm"` so the same crate is a normal
//! `rlib` natively.

/// Exports the ABI functions common to every policy (`tmc_abi_version`,
/// `tmc_alloc`). Used by the other macros; not meant to be called directly.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_common {
    () => {
        #[cfg(target_family = "wasm")]
        mod __tmc_common_exports {
            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_abi_version() -> i32 {
                $crate::abi::ABI_VERSION as i32
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_alloc(len: i32) -> i32 {
                $crate::rt::alloc(len)
            }
        }
    };
}

/// Exports a [`PlacementPolicy`](crate::PlacementPolicy) as `tmc_place` and
/// `tmc_validate_settings` (plus the common exports).
///
/// ```ignore
/// struct MyPolicy;
/// impl tmc_policy_sdk::PlacementPolicy for MyPolicy { /* ... */ }
/// tmc_policy_sdk::export_placement_policy!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_placement_policy {
    ($policy:ty) => {
        $crate::__export_common!();
        #[cfg(target_family = "wasm")]
        mod __tmc_placement_exports {
            #[allow(unused_imports)]
            use super::*;

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_place(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(ptr, len, $crate::guest::place_json::<$policy>)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_validate_settings(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(
                    ptr,
                    len,
                    $crate::guest::validate_placement_settings_json::<$policy>,
                )
            }
        }
    };
}

/// Exports a [`TransformPolicy`](crate::TransformPolicy) as `tmc_transform`
/// and `tmc_validate_settings` (plus the common exports).
#[macro_export]
macro_rules! export_transform_policy {
    ($policy:ty) => {
        $crate::__export_common!();
        #[cfg(target_family = "wasm")]
        mod __tmc_transform_exports {
            #[allow(unused_imports)]
            use super::*;

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_transform(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(ptr, len, $crate::guest::transform_json::<$policy>)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_validate_settings(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(
                    ptr,
                    len,
                    $crate::guest::validate_transform_settings_json::<$policy>,
                )
            }
        }
    };
}

/// Exports a type implementing both policy traits (`tmc_place`,
/// `tmc_transform`, and a `tmc_validate_settings` requiring both to accept).
#[macro_export]
macro_rules! export_placement_and_transform_policy {
    ($policy:ty) => {
        $crate::__export_common!();
        #[cfg(target_family = "wasm")]
        mod __tmc_both_exports {
            #[allow(unused_imports)]
            use super::*;

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_place(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(ptr, len, $crate::guest::place_json::<$policy>)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_transform(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(ptr, len, $crate::guest::transform_json::<$policy>)
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_validate_settings(ptr: i32, len: i32) -> i64 {
                $crate::rt::call(
                    ptr,
                    len,
                    $crate::guest::validate_both_settings_json::<$policy>,
                )
            }
        }
    };
}

/// Exports `tmc_test_vectors` returning the given JSON array of
/// [`TestVector`](crate::TestVector)s, e.g.
/// `export_test_vectors!(include_str!("../vectors.json"));`.
#[macro_export]
macro_rules! export_test_vectors {
    ($json:expr) => {
        #[cfg(target_family = "wasm")]
        mod __tmc_vector_exports {
            #[unsafe(no_mangle)]
            pub extern "C" fn tmc_test_vectors() -> i64 {
                $crate::rt::output($crate::guest::test_vectors_json($json))
            }
        }
    };
}
