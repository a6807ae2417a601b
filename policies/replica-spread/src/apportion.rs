//! Sticky largest-remainder apportionment.

/// One target's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub name: String,
    pub weight: u64,
    /// Replicas the target holds now.
    pub current: u32,
}

/// Splits `n` replicas in proportion to the weights (all weights 0 count as
/// equal weights). Every target gets the floor or the ceiling of its exact
/// quota `n * w / W`. The `n - sum(floors)` extra replicas go, in order, to
/// targets that already hold at least their ceiling (no replica has to be
/// created for them), then to the largest remainders, then by name. Among
/// all quota-respecting splits this creates the fewest new replicas, i.e.
/// moves the fewest when targets come and go.
pub fn apportion(n: u32, shares: &[Share]) -> Vec<u32> {
    if shares.is_empty() {
        return Vec::new();
    }
    let total: u64 = shares.iter().map(|s| s.weight).sum();
    let weight = |s: &Share| if total == 0 { 1 } else { s.weight };
    let total = if total == 0 {
        shares.len() as u64
    } else {
        total
    };
    let n64 = u64::from(n);
    // floor and remainder of n*w/W, in integers (remainder over W).
    let mut counts: Vec<u32> = Vec::with_capacity(shares.len());
    let mut order: Vec<(bool, u64, &str, usize)> = Vec::with_capacity(shares.len());
    for (i, s) in shares.iter().enumerate() {
        let exact = n64 * weight(s);
        let floor = (exact / total) as u32;
        let remainder = exact % total;
        counts.push(floor);
        if remainder > 0 {
            let holds_ceiling = s.current > floor;
            order.push((holds_ceiling, remainder, s.name.as_str(), i));
        }
    }
    order.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    let assigned: u64 = counts.iter().map(|c| u64::from(*c)).sum();
    let extra = (n64 - assigned) as usize;
    for &(_, _, _, i) in order.iter().take(extra) {
        counts[i] += 1;
    }
    counts
}
