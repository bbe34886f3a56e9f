//! The spill file: the records a run will send, written while the model is read and
//! diffed, and read back once the diff is complete (duplicates known, guard passed).
//! Memory holds none of the payloads; the file is deleted when the run ends.

use crate::destination::Op;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

/// One record to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Spilled {
    /// `None`: nothing to send; the row is forgotten (it left a model that ignores
    /// removals).
    pub op: Option<Op>,
    pub key_hash: u128,
    pub payload_hash: [u8; 16],
    pub key: String,
    pub payload: String,
}

pub struct SpillWriter {
    out: BufWriter<File>,
    count: u64,
    /// Deletes the file when the run is done with it (or fails).
    guard: Remove,
}

fn op_code(op: Option<Op>) -> u8 {
    match op {
        Some(Op::Upsert) => 0,
        Some(Op::Update) => 1,
        Some(Op::Insert) => 2,
        Some(Op::Delete) => 3,
        Some(Op::Clear) => 4,
        None => 5,
    }
}

fn code_op(c: u8) -> Option<Option<Op>> {
    Some(match c {
        0 => Some(Op::Upsert),
        1 => Some(Op::Update),
        2 => Some(Op::Insert),
        3 => Some(Op::Delete),
        4 => Some(Op::Clear),
        5 => None,
        _ => return None,
    })
}

impl SpillWriter {
    /// A new spill file in the system's temporary directory.
    pub fn create(model: &str) -> std::io::Result<SpillWriter> {
        let path = std::env::temp_dir().join(format!(
            "ebb-{model}-{}-{:016x}.spill",
            std::process::id(),
            rand::random::<u64>()
        ));
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        Ok(SpillWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            guard: Remove(path),
        })
    }

    pub fn push(
        &mut self,
        op: Option<Op>,
        key_hash: u128,
        payload_hash: [u8; 16],
        key: &str,
        payload: &str,
    ) -> std::io::Result<()> {
        self.out.write_all(&[op_code(op)])?;
        self.out.write_all(&key_hash.to_le_bytes())?;
        self.out.write_all(&payload_hash)?;
        self.out.write_all(&(key.len() as u32).to_le_bytes())?;
        self.out.write_all(key.as_bytes())?;
        self.out.write_all(&(payload.len() as u32).to_le_bytes())?;
        self.out.write_all(payload.as_bytes())?;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends writing; the reader starts at the first record.
    pub fn finish(self) -> std::io::Result<SpillReader> {
        let SpillWriter { out, guard, .. } = self;
        out.into_inner().map_err(|e| e.into_error())?;
        let file = File::open(&guard.0)?;
        Ok(SpillReader {
            input: BufReader::with_capacity(1 << 20, file),
            _guard: guard,
        })
    }
}

struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct SpillReader {
    input: BufReader<File>,
    _guard: Remove,
}

impl SpillReader {
    /// The next record, or `None` at the end.
    pub fn next_record(&mut self) -> std::io::Result<Option<Spilled>> {
        let mut op = [0u8; 1];
        match self.input.read_exact(&mut op) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "the spill file is damaged");
        let op = code_op(op[0]).ok_or_else(bad)?;
        let mut k = [0u8; 16];
        self.input.read_exact(&mut k)?;
        let mut payload_hash = [0u8; 16];
        self.input.read_exact(&mut payload_hash)?;
        let key = self.read_text()?;
        let payload = self.read_text()?;
        Ok(Some(Spilled {
            op,
            key_hash: u128::from_le_bytes(k),
            payload_hash,
            key,
            payload,
        }))
    }

    fn read_text(&mut self) -> std::io::Result<String> {
        let mut n = [0u8; 4];
        self.input.read_exact(&mut n)?;
        let mut buf = vec![0u8; u32::from_le_bytes(n) as usize];
        self.input.read_exact(&mut buf)?;
        String::from_utf8(buf)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "the spill file is damaged"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_and_the_file_goes() {
        let mut w = SpillWriter::create("t").unwrap();
        let path = w.guard.0.clone();
        w.push(Some(Op::Upsert), 1, [1; 16], "k1", r#"{"a":1}"#).unwrap();
        w.push(None, 2, [2; 16], "k2", r#"{"Id":"k2"}"#).unwrap();
        assert_eq!(w.count(), 2);
        let mut r = w.finish().unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.op, a.key_hash, a.key.as_str(), a.payload.as_str()),
            (Some(Op::Upsert), 1, "k1", r#"{"a":1}"#)
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.op, b.payload_hash), (None, [2; 16]));
        assert!(r.next_record().unwrap().is_none());
        drop(r);
        assert!(!path.exists());
    }
}
