//! Logging shim: crate-local macros that go to `defmt`, to `log`, or nowhere,
//! chosen by feature (the pattern of embassy-time's `fmt.rs`).
//!
//! Host tests build with neither feature and stay quiet; the simulator enables
//! `log`; a device build enables `defmt`. Format strings use only `{}` so they
//! are valid for both back ends.
#![allow(unused_macros)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("features `defmt` and `log` are mutually exclusive: pick one logging back end");

macro_rules! shim {
    ($d:tt $name:ident) => {
        macro_rules! $name {
                                            ($d s:literal $d (, $d x:expr)* $d (,)?) => {{
                                                #[cfg(feature = "log")]
                                                ::log::$name!($d s $d (, $d x)*);
                                                #[cfg(feature = "defmt")]
                                                ::defmt::$name!($d s $d (, $d x)*);
                                                #[cfg(not(any(feature = "log", feature = "defmt")))]
                                                let _ = ($d (&$d x),*);
                                            }};
                                        }
    };
}

shim!($ trace);
shim!($ debug);
shim!($ info);
shim!($ warn);
shim!($ error);
