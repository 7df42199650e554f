//! Holdout membership (docs/semantics.md step 2): a user is in the marketing
//! holdout iff FNV-1a 64 of the user id's UTF-8 bytes, modulo 10000, is below
//! the spec's holdout in basis points. Stateless and the same on every worker.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(FNV_OFFSET, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

pub fn in_holdout(user: &str, holdout_bp: u64) -> bool {
    fnv1a64(user.as_bytes()) % 10_000 < holdout_bp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn holdout_uses_basis_points() {
        let h = fnv1a64(b"u-42") % 10_000;
        assert!(in_holdout("u-42", h + 1));
        assert!(!in_holdout("u-42", h));
        assert!(!in_holdout("u-42", 0));
        assert!(in_holdout("u-42", 10_000));
    }
}
