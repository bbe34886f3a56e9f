//! The compact tables a run diffs with: at most 40 bytes per model row.
//!
//! Keys are 128-bit hashes of the key text (a collision among 10^10 keys has a chance
//! around 10^-19), payload hashes 128 bits of which the top three hold the row's flags in
//! this run ("seen" and two for the run's own use), leaving 125 bits compared.
//! [`SnapTable`] is an open-addressing table sized once from the snapshot's row count
//! (32-byte slots at a load of at most 7/8, about 37 bytes per row); [`KeySet`] holds the
//! keys of rows not in the snapshot, to find duplicates among them.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

const SEEN: u128 = 1 << 127;
/// The top bits of a slot's value: `SEEN` and two flags a run may set ([`SnapTable::set_flags`]).
const FLAG_BITS: u32 = 3;
const FLAGS: u128 = !(u128::MAX >> FLAG_BITS);

/// The 128-bit hash of a row's key text.
pub fn key_hash(key: &str) -> u128 {
    match xxhash_rust::xxh3::xxh3_128(key.as_bytes()) {
        0 => 1, // 0 marks an empty slot
        h => h,
    }
}

/// The 128-bit hash of a payload, as stored in the snapshot.
pub fn payload_hash(payload: &[u8]) -> [u8; 16] {
    xxhash_rust::xxh3::xxh3_128(payload).to_le_bytes()
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u128,
    /// The payload hash with the `SEEN` bit.
    value: u128,
}

/// What the snapshot says of a key, the first time it is looked up in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the snapshot.
    Absent,
    /// In the snapshot with this payload hash (top bit cleared); now marked seen.
    Found(u128),
    /// Seen before in this run: the key is duplicated.
    Again,
}

/// The snapshot of a model as key hash → payload hash, with a seen flag per row.
pub struct SnapTable {
    slots: Vec<Slot>,
    len: usize,
}

impl SnapTable {
    /// A table for `rows` entries.
    pub fn with_rows(rows: usize) -> SnapTable {
        let cap = (rows + rows / 7 + 1).max(8);
        SnapTable {
            slots: vec![Slot::default(); cap],
            len: 0,
        }
    }

    fn start(&self, key: u128) -> usize {
        ((key as u64 as u128 * self.slots.len() as u128) >> 64) as usize
    }

    /// Adds a snapshot row. Returns `false` if the table is full (more rows than sized for)
    /// or the key is there already.
    pub fn insert(&mut self, key: u128, hash: [u8; 16]) -> bool {
        if self.len + 1 >= self.slots.len() {
            return false;
        }
        let value = u128::from_le_bytes(hash) & !FLAGS;
        let n = self.slots.len();
        let mut i = self.start(key);
        loop {
            let s = &mut self.slots[i];
            if s.key == 0 {
                *s = Slot { key, value };
                self.len += 1;
                return true;
            }
            if s.key == key {
                return false;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Whether another row fits.
    pub fn is_full(&self) -> bool {
        self.len + 1 >= self.slots.len()
    }

    /// Doubles the room (the snapshot grew after it was counted).
    pub fn grow(&mut self) {
        let mut bigger = SnapTable::with_rows(self.slots.len() * 2);
        for s in self.slots.iter().filter(|s| s.key != 0) {
            bigger.insert(s.key, s.value.to_le_bytes());
        }
        *self = bigger;
    }

    /// Looks `key` up and marks it seen.
    pub fn visit(&mut self, key: u128) -> Lookup {
        let n = self.slots.len();
        let mut i = self.start(key);
        loop {
            let s = &mut self.slots[i];
            if s.key == 0 {
                return Lookup::Absent;
            }
            if s.key == key {
                if s.value & SEEN != 0 {
                    return Lookup::Again;
                }
                s.value |= SEEN;
                return Lookup::Found(s.value & !FLAGS);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// The slot of `key`, if it is in the snapshot.
    pub fn find(&self, key: u128) -> Option<usize> {
        let n = self.slots.len();
        let mut i = self.start(key);
        loop {
            let s = &self.slots[i];
            if s.key == 0 {
                return None;
            }
            if s.key == key {
                return Some(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Marks slot `i` seen; `false` if it was seen already (a duplicated key).
    pub fn visit_at(&mut self, i: usize) -> bool {
        let s = &mut self.slots[i];
        let first = s.value & SEEN == 0;
        s.value |= SEEN;
        first
    }

    /// The payload hash of slot `i`, flags cleared.
    pub fn hash_at(&self, i: usize) -> u128 {
        self.slots[i].value & !FLAGS
    }

    /// The run's flags of slot `i` (two bits).
    pub fn flags_at(&self, i: usize) -> u8 {
        ((self.slots[i].value >> (128 - FLAG_BITS)) & 0b011) as u8
    }

    /// Sets run flags (`0b01`, `0b10`) on slot `i`.
    pub fn set_flags(&mut self, i: usize, flags: u8) {
        self.slots[i].value |= u128::from(flags & 0b011) << (128 - FLAG_BITS);
    }

    /// Whether `key` is in the snapshot and was seen in this run.
    pub fn seen(&self, key: u128) -> Option<bool> {
        let n = self.slots.len();
        let mut i = self.start(key);
        loop {
            let s = &self.slots[i];
            if s.key == 0 {
                return None;
            }
            if s.key == key {
                return Some(s.value & SEEN != 0);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows never seen in this run.
    pub fn unseen(&self) -> usize {
        self.slots.iter().filter(|s| s.key != 0 && s.value & SEEN == 0).count()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

/// The payload hash of a table entry compared with a fresh one (flag bits ignored).
pub fn same_hash(stored: u128, fresh: [u8; 16]) -> bool {
    stored == u128::from_le_bytes(fresh) & !FLAGS
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

/// Key hashes of rows not in the snapshot.
pub type KeySet = HashSet<u128, BuildHasherDefault<Identity>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_visit_and_duplicates() {
        let mut t = SnapTable::with_rows(1000);
        for i in 0..1000u32 {
            assert!(t.insert(key_hash(&i.to_string()), payload_hash(&i.to_le_bytes())));
        }
        assert_eq!(t.len(), 1000);
        assert!(!t.insert(key_hash("5"), [0; 16]), "a key is there once");
        match t.visit(key_hash("5")) {
            Lookup::Found(h) => assert!(same_hash(h, payload_hash(&5u32.to_le_bytes()))),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.visit(key_hash("5")), Lookup::Again);
        assert_eq!(t.visit(key_hash("new")), Lookup::Absent);
        assert_eq!(t.unseen(), 999);
        assert_eq!(t.seen(key_hash("5")), Some(true));
        assert_eq!(t.seen(key_hash("6")), Some(false));
        assert_eq!(t.seen(key_hash("nope")), None);
    }

    #[test]
    fn flags_do_not_disturb_the_hash() {
        let mut t = SnapTable::with_rows(4);
        let h = payload_hash(b"x");
        assert!(t.insert(9, h));
        let i = t.find(9).unwrap();
        assert!(t.visit_at(i));
        assert!(!t.visit_at(i), "the second visit is a duplicate");
        t.set_flags(i, 0b10);
        assert_eq!(t.flags_at(i), 0b10);
        t.set_flags(i, 0b01);
        assert_eq!(t.flags_at(i), 0b11);
        assert!(same_hash(t.hash_at(i), h));
        assert_eq!(t.seen(9), Some(true));
    }

    #[test]
    fn a_hash_with_the_top_bit_set_still_compares_equal() {
        let mut t = SnapTable::with_rows(1);
        let h = [0xff; 16];
        assert!(t.insert(7, h));
        match t.visit(7) {
            Lookup::Found(v) => assert!(same_hash(v, h)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn at_most_40_bytes_per_row() {
        for rows in [1_000usize, 1_000_000, 10_000_000] {
            let t = SnapTable::with_rows(rows);
            let per_row = t.bytes() as f64 / rows as f64;
            assert!(per_row <= 40.0, "{rows} rows: {per_row} bytes per row");
        }
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
