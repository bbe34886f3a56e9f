//! Salesforce record ids: 15 case-sensitive characters (3-character key prefix, 2-character
//! instance, a reserved `0`, 9 base-62 digits) plus the 3-character case-insensitive suffix
//! that encodes which of the first 15 characters are upper case.
//!
//! The sandbox numbers records with one counter in base 62 (`0-9A-Za-z`, ascending ASCII),
//! so byte order of ids is creation order.

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SUFFIX: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The instance part of every id the sandbox makes.
const INSTANCE: &str = "5g";

/// The 18-character id of number `n` with `prefix` (3 characters).
pub(crate) fn make(prefix: &str, n: u64) -> String {
    let mut digits = [b'0'; 9];
    let mut rest = n;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    let fifteen = format!("{prefix}{INSTANCE}0{}", String::from_utf8_lossy(&digits));
    with_suffix(&fifteen)
}

/// The 18-character form of a 15-character id.
fn with_suffix(fifteen: &str) -> String {
    let bytes = fifteen.as_bytes();
    let mut out = String::with_capacity(18);
    out.push_str(fifteen);
    for chunk in bytes.chunks(5) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        out.push(SUFFIX[bits] as char);
    }
    out
}

/// The canonical 18-character form of `text` if it is a well-formed id (15 alphanumeric
/// characters, or 18 whose suffix matches case-insensitively), else `None`.
pub(crate) fn parse(text: &str) -> Option<String> {
    if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match text.len() {
        15 => Some(with_suffix(text)),
        18 => {
            let full = with_suffix(&text[..15]);
            full[15..].eq_ignore_ascii_case(&text[15..]).then_some(full)
        }
        _ => None,
    }
}

/// The sandbox org's id (18 characters).
pub(crate) fn org_id() -> String {
    with_suffix("00D5g0000EbbSbX")
}

/// The run-as user every token is issued for and every record and job is created by.
pub(crate) fn user_id() -> String {
    with_suffix("0055g0000EbbUsR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_encodes_upper_case_positions() {
        // A published example: 15-character id and its 18-character form.
        assert_eq!(with_suffix("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(parse("001A0000006Vm9rIAC").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(parse("001A0000006Vm9riac").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(parse("001A0000006Vm9rAAA"), None);
        assert_eq!(parse("001A0000006Vm9"), None);
        assert_eq!(parse("001A0000006Vm9r-AC"), None);
    }

    #[test]
    fn ids_sort_in_creation_order() {
        let ids: Vec<String> = [0u64, 1, 61, 62, 3843, 1_000_000]
            .iter()
            .map(|n| make("003", *n))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids
            .iter()
            .all(|i| i.len() == 18 && i.starts_with("0035g0") && parse(i).as_ref() == Some(i)));
    }
}
