//! Event-type globs: `*` matches any run of characters, dots and none
//! included (`cart.*` matches `cart.abandoned` and `cart.`; `*` matches all).
//! Every other character matches itself.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob(pattern.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Classic greedy wildcard matching with one backtrack point: linear in
    /// practice, `O(n·m)` at worst.
    pub fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), text.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == b'*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn stars_match_any_run_including_dots() {
        let g = |p: &str, t: &str| Glob::new(p).matches(t);
        assert!(g("cart.abandoned", "cart.abandoned"));
        assert!(!g("cart.abandoned", "cart.abandoned2"));
        assert!(g("cart.*", "cart.abandoned"));
        assert!(g("cart.*", "cart."));
        assert!(!g("cart.*", "cart"));
        assert!(g("*", ""));
        assert!(g("*.failed", "payment.card.failed"));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(!g("a*b*c", "aXXbYY"));
        assert!(g("*new_device", "login.new_device"));
        assert!(g("**", "x.y"));
    }
}
