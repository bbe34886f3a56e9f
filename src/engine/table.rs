//! The compact tables a run diffs with: under 28 bytes per model row.
//!
//! Keys are 128-bit hashes of the key text (a collision among 10^10 keys has a chance
//! around 10^-19). A slot holds 64 bits of the payload hash, of which the top three hold
//! the row's flags in this run ("seen" and two for the run's own use), leaving 61 bits
//! compared: a changed row goes unnoticed with a chance of 2^-61 (4·10^-19). The state
//! store keeps the whole 128-bit hash. [`SnapTable`] is an open-addressing table sized once
//! from the snapshot's row count (24-byte slots at a load of at most 7/8, about 27.4 bytes
//! per row); [`KeySet`] holds the keys of rows not in the snapshot, to find duplicates
//! among them.

pub use crate::map::encode::{key_hash, payload_hash};
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Write};
use std::path::Path;

/// The first bytes of a table saved by [`SnapTable::save`].
const CACHE_MAGIC: &[u8; 8] = b"EBBSNAP2";
/// Bytes of a slot in a saved table.
const SLOT_BYTES: usize = 24;

const SEEN: u64 = 1 << 63;
/// The top bits of a slot's value: `SEEN` and two flags a run may set ([`SnapTable::set_flags`]).
const FLAG_BITS: u32 = 3;
const FLAGS: u64 = !(u64::MAX >> FLAG_BITS);

/// What a slot keeps of a payload hash: its low 64 bits, flags cleared.
fn short(hash: [u8; 16]) -> u64 {
    u64::from_le_bytes([hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7]]) & !FLAGS
}

/// A key hash and a payload hash, in 24 bytes: the key as two words keeps the slot's
/// alignment at 8 (a `u128` field would pad it to 32).
#[derive(Clone, Copy, Default)]
struct Slot {
    key: [u64; 2],
    /// The payload hash's low 64 bits with the `SEEN` bit and the run's flags on top.
    value: u64,
}

fn words(key: u128) -> [u64; 2] {
    [key as u64, (key >> 64) as u64]
}

const EMPTY: [u64; 2] = [0, 0];

/// What the snapshot says of a key, the first time it is looked up in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the snapshot.
    Absent,
    /// In the snapshot with this payload hash (top bit cleared); now marked seen.
    Found(u64),
    /// Seen before in this run: the key is duplicated.
    Again,
}

/// The snapshot of a model as key hash → payload hash, with a seen flag per row.
pub struct SnapTable {
    slots: Vec<Slot>,
    len: usize,
    /// Entries marked seen in this run.
    seen: usize,
}

impl SnapTable {
    /// A table for `rows` entries.
    pub fn with_rows(rows: usize) -> SnapTable {
        let cap = (rows + rows / 7 + 1).max(8);
        SnapTable {
            slots: vec![Slot::default(); cap],
            len: 0,
            seen: 0,
        }
    }

    fn start(&self, key: [u64; 2]) -> usize {
        ((u128::from(key[0]) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `key`, or the empty slot that ends its probe run.
    fn probe(&self, key: [u64; 2]) -> usize {
        let n = self.slots.len();
        let mut i = self.start(key);
        loop {
            let s = &self.slots[i];
            if s.key == key || s.key == EMPTY {
                return i;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Adds a snapshot row. Returns `false` if the table is full (more rows than sized for)
    /// or the key is there already.
    pub fn insert(&mut self, key: u128, hash: [u8; 16]) -> bool {
        if self.len + 1 >= self.slots.len() {
            return false;
        }
        self.put(words(key), short(hash))
    }

    /// Adds `key` with `value` unless it is there; the table has room.
    fn put(&mut self, key: [u64; 2], value: u64) -> bool {
        let i = self.probe(key);
        let s = &mut self.slots[i];
        if s.key == key {
            return false;
        }
        *s = Slot { key, value };
        self.len += 1;
        true
    }

    /// Whether another row fits.
    pub fn is_full(&self) -> bool {
        self.len + 1 >= self.slots.len()
    }

    /// A table for `rows` entries holding this one's (without the run's flags).
    fn rebuilt(&self, rows: usize) -> SnapTable {
        let mut bigger = SnapTable::with_rows(rows);
        for s in self.slots.iter().filter(|s| s.key != EMPTY) {
            bigger.put(s.key, s.value & !FLAGS);
        }
        bigger
    }

    /// Doubles the room (the snapshot grew after it was counted).
    pub fn grow(&mut self) {
        *self = self.rebuilt(self.slots.len() * 2);
    }

    /// Looks `key` up and marks it seen.
    pub fn visit(&mut self, key: u128) -> Lookup {
        let i = self.probe(words(key));
        let s = &mut self.slots[i];
        if s.key == EMPTY {
            return Lookup::Absent;
        }
        if s.value & SEEN != 0 {
            return Lookup::Again;
        }
        s.value |= SEEN;
        self.seen += 1;
        Lookup::Found(s.value & !FLAGS)
    }

    /// The slot of `key`, if it is in the snapshot.
    pub fn find(&self, key: u128) -> Option<usize> {
        let i = self.probe(words(key));
        (self.slots[i].key != EMPTY).then_some(i)
    }

    /// Marks slot `i` seen; `false` if it was seen already (a duplicated key).
    pub fn visit_at(&mut self, i: usize) -> bool {
        let s = &mut self.slots[i];
        let first = s.value & SEEN == 0;
        s.value |= SEEN;
        self.seen += usize::from(first);
        first
    }

    /// The payload hash of slot `i` as kept (see [`same_hash`]), flags cleared.
    pub fn hash_at(&self, i: usize) -> u64 {
        self.slots[i].value & !FLAGS
    }

    /// The run's flags of slot `i` (two bits).
    pub fn flags_at(&self, i: usize) -> u8 {
        ((self.slots[i].value >> (64 - FLAG_BITS)) & 0b011) as u8
    }

    /// Sets run flags (`0b01`, `0b10`) on slot `i`.
    pub fn set_flags(&mut self, i: usize, flags: u8) {
        self.slots[i].value |= u64::from(flags & 0b011) << (64 - FLAG_BITS);
    }

    /// Whether `key` is in the snapshot and was seen in this run.
    pub fn seen(&self, key: u128) -> Option<bool> {
        let s = &self.slots[self.probe(words(key))];
        (s.key != EMPTY).then_some(s.value & SEEN != 0)
    }

    /// Sets `key`'s payload hash, adding the key if it is not there (growing if need be).
    pub fn upsert(&mut self, key: u128, hash: [u8; 16]) {
        if self.is_full() {
            self.grow();
        }
        let key = words(key);
        let i = self.probe(key);
        let s = &mut self.slots[i];
        if s.key == EMPTY {
            self.len += 1;
        }
        *s = Slot {
            key,
            value: short(hash),
        };
    }

    /// Removes `key`; `false` if it was not there. Entries after it in its probe run move
    /// back, so that every key stays reachable from its start slot.
    pub fn remove(&mut self, key: u128) -> bool {
        let Some(mut hole) = self.find(key) else {
            return false;
        };
        if self.slots[hole].value & SEEN != 0 {
            self.seen -= 1;
        }
        let n = self.slots.len();
        let mut j = hole;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let s = self.slots[j];
            if s.key == EMPTY {
                break;
            }
            let home = self.start(s.key);
            // The entry at `j` may fill the hole unless its start lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        true
    }

    /// Makes room for `rows` entries in all, rebuilding the table once if it is too small.
    pub fn reserve(&mut self, rows: usize) {
        // A table is sized for a load of 7/8; it is rebuilt only past 15/16.
        if rows < self.slots.len() / 16 * 15 {
            return;
        }
        *self = self.rebuilt(rows);
    }

    /// Writes the table (without the run's flags) to `path`, through a temporary file
    /// renamed into place, stamped with the model and the snapshot's `token`.
    pub fn save(&self, path: &Path, model: &str, token: u64) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        out.write_all(CACHE_MAGIC)?;
        out.write_all(&token.to_le_bytes())?;
        out.write_all(&(self.len as u64).to_le_bytes())?;
        out.write_all(&(self.slots.len() as u64).to_le_bytes())?;
        out.write_all(&(model.len() as u64).to_le_bytes())?;
        out.write_all(model.as_bytes())?;
        let mut sum = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = Vec::with_capacity(SLOT_BYTES * 4096);
        for chunk in self.slots.chunks(4096) {
            buf.clear();
            for s in chunk {
                buf.extend_from_slice(&s.key[0].to_le_bytes());
                buf.extend_from_slice(&s.key[1].to_le_bytes());
                buf.extend_from_slice(&(s.value & !FLAGS).to_le_bytes());
            }
            sum.update(&buf);
            out.write_all(&buf)?;
        }
        out.write_all(&sum.digest().to_le_bytes())?;
        out.into_inner().map_err(|e| e.into_error())?;
        std::fs::rename(&tmp, path)
    }

    /// Reads a table [`SnapTable::save`] wrote for `model` with `token`; `None` when the
    /// file is missing, for another model or token, or damaged in any way.
    pub fn load(path: &Path, model: &str, token: u64) -> Option<SnapTable> {
        let mut input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).ok()?);
        let mut head = [0u8; 40];
        input.read_exact(&mut head).ok()?;
        let word = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or_default());
        if &head[..8] != CACHE_MAGIC || word(8) != token {
            return None;
        }
        let (len, cap, name_len) = (word(16) as usize, word(24) as usize, word(32) as usize);
        if name_len != model.len() || cap < 8 || len >= cap || cap > (1 << 40) {
            return None;
        }
        let mut name = vec![0u8; name_len];
        input.read_exact(&mut name).ok()?;
        if name != model.as_bytes() {
            return None;
        }
        let mut slots = Vec::with_capacity(cap);
        let mut sum = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = vec![0u8; SLOT_BYTES * 4096];
        let mut found = 0;
        let word = |c: &[u8], i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap_or_default());
        while slots.len() < cap {
            let n = (cap - slots.len()).min(4096);
            let bytes = &mut buf[..SLOT_BYTES * n];
            input.read_exact(bytes).ok()?;
            sum.update(bytes);
            for c in bytes.chunks_exact(SLOT_BYTES) {
                let key = [word(c, 0), word(c, 8)];
                found += usize::from(key != EMPTY);
                slots.push(Slot {
                    key,
                    value: word(c, 16) & !FLAGS,
                });
            }
        }
        let mut tail = [0u8; 8];
        input.read_exact(&mut tail).ok()?;
        let mut more = [0u8; 1];
        if u64::from_le_bytes(tail) != sum.digest() || found != len || input.read(&mut more).ok()? != 0 {
            return None;
        }
        Some(SnapTable { slots, len, seen: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows never seen in this run.
    pub fn unseen(&self) -> usize {
        self.len - self.seen
    }

    /// The keys never seen in this run, if there are at most `max`.
    pub fn unseen_keys(&self, max: usize) -> Option<Vec<u128>> {
        if self.unseen() > max {
            return None;
        }
        let keys = self
            .slots
            .iter()
            .filter(|s| s.key != EMPTY && s.value & SEEN == 0)
            .map(|s| u128::from(s.key[0]) | (u128::from(s.key[1]) << 64))
            .collect();
        Some(keys)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

/// The payload hash of a table entry compared with a fresh one: the 61 bits a slot keeps
/// (flag bits ignored).
pub fn same_hash(stored: u64, fresh: [u8; 16]) -> bool {
    stored == short(fresh)
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

    /// Upserts and removals in a random order, checked against a map after every step.
    #[test]
    fn upserts_and_removals_keep_every_key_reachable() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut t = SnapTable::with_rows(64);
        let mut model = std::collections::HashMap::new();
        for step in 0..20_000u32 {
            // Few distinct keys, so probe runs are long and removals shift entries often.
            let key = key_hash(&rng.random_range(0..300u32).to_string());
            if rng.random_bool(0.4) {
                assert_eq!(t.remove(key), model.remove(&key).is_some(), "step {step}");
            } else {
                let h = payload_hash(&step.to_le_bytes());
                t.upsert(key, h);
                model.insert(key, h);
            }
            assert_eq!(t.len(), model.len(), "step {step}");
            if step % 500 == 0 {
                for (k, h) in &model {
                    let i = t.find(*k).unwrap_or_else(|| panic!("step {step}: a key is lost"));
                    assert!(same_hash(t.hash_at(i), *h));
                }
            }
        }
    }

    #[test]
    fn a_reserved_table_matches_one_growing_as_it_goes() {
        let mut a = SnapTable::with_rows(100);
        for i in 0..100u32 {
            a.insert(key_hash(&i.to_string()), payload_hash(&i.to_le_bytes()));
        }
        let mut b = SnapTable::with_rows(100);
        for i in 0..100u32 {
            b.insert(key_hash(&i.to_string()), payload_hash(&i.to_le_bytes()));
        }
        // Removals, updates and 10,000 new keys (the table grows).
        let mut changes = Vec::new();
        for i in 0..50u32 {
            changes.push((key_hash(&i.to_string()), None));
        }
        for i in 50..10_100u32 {
            changes.push((key_hash(&i.to_string()), Some(payload_hash(&(i * 7).to_le_bytes()))));
        }
        for (k, h) in &changes {
            match h {
                Some(h) => a.upsert(*k, *h),
                None => {
                    a.remove(*k);
                }
            }
        }
        b.reserve(b.len() + changes.len());
        for (k, h) in &changes {
            match h {
                Some(h) => b.upsert(*k, *h),
                None => {
                    b.remove(*k);
                }
            }
        }
        assert_eq!((a.len(), b.len()), (10_050, 10_050));
        for i in 0..10_100u32 {
            let k = key_hash(&i.to_string());
            match (a.find(k), b.find(k)) {
                (None, None) => assert!(i < 50),
                (Some(x), Some(y)) => assert_eq!(a.hash_at(x), b.hash_at(y)),
                other => panic!("key {i}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_saved_table_loads_only_for_its_model_and_token_and_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.snap");
        let mut t = SnapTable::with_rows(1000);
        for i in 0..1000u32 {
            t.insert(key_hash(&i.to_string()), payload_hash(&i.to_le_bytes()));
        }
        let i = t.find(key_hash("5")).unwrap();
        t.visit_at(i);
        t.set_flags(i, 0b10);
        t.save(&path, "m", 42).unwrap();
        let back = SnapTable::load(&path, "m", 42).unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(back.bytes(), t.bytes());
        for i in 0..1000u32 {
            let s = back.find(key_hash(&i.to_string())).unwrap();
            assert!(same_hash(back.hash_at(s), payload_hash(&i.to_le_bytes())));
            assert_eq!(back.flags_at(s), 0, "the run's flags are not saved");
        }
        assert_eq!(back.unseen(), 1000);
        assert!(SnapTable::load(&path, "m", 43).is_none(), "another token");
        assert!(SnapTable::load(&path, "n", 42).is_none(), "another model");
        // Any damage is caught: a flipped byte in the slots, a truncated or extended file.
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        flipped[100] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(SnapTable::load(&path, "m", 42).is_none(), "flipped byte");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(SnapTable::load(&path, "m", 42).is_none(), "truncated");
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(SnapTable::load(&path, "m", 42).is_none(), "extended");
        std::fs::write(&path, &bytes).unwrap();
        assert!(SnapTable::load(&path, "m", 42).is_some());
    }

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
        assert_eq!(t.unseen_keys(998), None);
        let unseen = t.unseen_keys(999).unwrap();
        assert_eq!(unseen.len(), 999);
        assert!(unseen.contains(&key_hash("6")) && !unseen.contains(&key_hash("5")));
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
    fn under_28_bytes_per_row() {
        for rows in [1_000usize, 1_000_000, 10_000_000] {
            let t = SnapTable::with_rows(rows);
            let per_row = t.bytes() as f64 / rows as f64;
            assert!(per_row < 28.0, "{rows} rows: {per_row} bytes per row");
        }
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }
}
