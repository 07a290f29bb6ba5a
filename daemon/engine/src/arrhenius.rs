//! The Arrhenius relation both MKT and the decay models rest on (a leaf:
//! profiles and MKT use it, it uses nothing).

/// 0 °C in kelvin.
pub const ZERO_C_IN_K: f64 = 273.15;

/// Arrhenius rate factor at `t_c` relative to `ref_c` (both °C):
/// `exp(activation_k · (1/T_ref - 1/T))`. With `activation_k = 10 000` and
/// `ref_c = 5`, 25 °C gives 11.1525.
pub fn rate_factor(t_c: f64, ref_c: f64, activation_k: f64) -> f64 {
    (activation_k * (1.0 / (ref_c + ZERO_C_IN_K) - 1.0 / (t_c + ZERO_C_IN_K))).exp()
}
