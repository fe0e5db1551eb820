//! The hasher of the snapshot's IP-keyed maps.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

/// The hasher of the IP-keyed maps. Evaluation does up to three lookups per flow and std's
/// SipHash would cost more than the rest of each; the keys are the inventory's own addresses
/// (a flow only looks up, never inserts), so hash flooding is not a concern. An FxHash-style
/// mix with a final avalanche, so that every input bit reaches the bits hashbrown uses.
#[derive(Debug, Default, Clone, Copy)]
pub(in crate::policy) struct IpHasher(u64);

impl IpHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for IpHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        z ^ (z >> 33)
    }
}

pub(in crate::policy) type IpMap<V> = HashMap<IpAddr, V, BuildHasherDefault<IpHasher>>;
pub(in crate::policy) type IpSet = HashSet<IpAddr, BuildHasherDefault<IpHasher>>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    fn hash(ip: IpAddr) -> u64 {
        BuildHasherDefault::<IpHasher>::default().hash_one(ip)
    }

    /// How many distinct values `bits(hash)` takes over the 256 addresses that differ from
    /// `base` in byte `at` only.
    fn spread(base: IpAddr, at: usize, bits: impl Fn(u64) -> u64) -> usize {
        let mut seen = HashSet::new();
        for b in 0..=255u8 {
            let ip = match base {
                IpAddr::V4(v4) => {
                    let mut o = v4.octets();
                    o[at] = b;
                    IpAddr::from(o)
                }
                IpAddr::V6(v6) => {
                    let mut o = v6.octets();
                    o[at] = b;
                    IpAddr::from(o)
                }
            };
            seen.insert(bits(hash(ip)));
        }
        seen.len()
    }

    #[test]
    fn addresses_differing_in_any_byte_spread_over_buckets_and_tags() {
        // hashbrown picks the bucket with the low bits and the tag with the top 7. Without the
        // final avalanche, a byte high in a mixed word would never reach the low bits and pod
        // IPs differing only there would share one bucket. Random hashing gives about 162 of
        // 256 buckets and 111 of 128 tags.
        let v4 = IpAddr::from([10, 64, 3, 7]);
        let v6 = IpAddr::from([0xfd00, 0x10, 0x64, 0, 0, 0, 0x3, 0x7]);
        for (base, len) in [(v4, 4), (v6, 16)] {
            for at in 0..len {
                let buckets = spread(base, at, |h| h & 0xff);
                let tags = spread(base, at, |h| h >> 57);
                assert!(
                    buckets >= 128,
                    "{base}, byte {at}: {buckets} of 256 buckets"
                );
                assert!(tags >= 64, "{base}, byte {at}: {tags} of 128 tags");
            }
        }
    }

    #[test]
    fn a_family_is_part_of_the_key() {
        // The IPv4 address and its IPv4-mapped IPv6 form are different keys.
        let v4 = IpAddr::from([192, 0, 2, 1]);
        let mapped = IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201]);
        assert_ne!(hash(v4), hash(mapped));
        let mut map = IpMap::default();
        map.insert(v4, 1);
        map.insert(mapped, 2);
        assert_eq!((map[&v4], map[&mapped]), (1, 2));
    }

    #[test]
    fn writes_of_any_width_are_mixed_in() {
        let of = |f: &dyn Fn(&mut IpHasher)| {
            let mut h = IpHasher::default();
            f(&mut h);
            h.finish()
        };
        let zero = of(&|_| {});
        assert_ne!(of(&|h| h.write_u8(1)), zero);
        assert_ne!(of(&|h| h.write_u16(1)), zero);
        assert_ne!(of(&|h| h.write_u32(1)), zero);
        assert_ne!(of(&|h| h.write_u64(1)), zero);
        assert_ne!(of(&|h| h.write_usize(1)), zero);
        assert_ne!(of(&|h| h.write_u128(1 << 64)), zero, "the high half counts");
        assert_ne!(
            of(&|h| h.write(&[1; 9])),
            of(&|h| h.write(&[1; 8])),
            "a short last chunk counts"
        );
        let mut set = IpSet::default();
        assert!(set.insert(IpAddr::from([10, 0, 0, 1])));
        assert!(!set.insert(IpAddr::from([10, 0, 0, 1])));
    }
}
