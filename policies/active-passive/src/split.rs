//! Even replica split over the active targets.

/// Splits `n` replicas over `k` targets: `n / k` each, the first `n % k` get
/// one more. `k == 0` yields an empty split.
pub fn even_split(n: u32, k: usize) -> Vec<u32> {
    let Ok(k32) = u32::try_from(k) else {
        return Vec::new();
    };
    if k32 == 0 {
        return Vec::new();
    }
    let (base, extra) = (n / k32, n % k32);
    (0..k32).map(|i| base + u32::from(i < extra)).collect()
}
