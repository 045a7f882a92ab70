//! Sealed streams, for backups: AES-256-GCM over 1 MiB chunks. Each chunk's associated data binds
//! the caller's context, the stream's random id, the chunk's index and whether it is the last, so a
//! stream that was truncated, reordered, spliced from two streams or made for another purpose does
//! not open.
//!
//! ```text
//! stream = id:16 ‖ chunk*     (at least one chunk; the last one says so)
//! chunk  = len:u32be ‖ nonce ‖ ciphertext ‖ tag      (len counts what follows it)
//! aad    = context ‖ id ‖ index:u64be ‖ last:u8
//! ```

use std::io::{self, Read, Write};

use zeroize::Zeroizing;

use crate::aead::{AeadKey, NONCE_LEN, TAG_LEN};
use crate::DataKey;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Bytes of a stream's random id.
const ID_LEN: usize = 16;

fn aad(context: &[u8], id: &[u8; ID_LEN], index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(context.len() + ID_LEN + 9);
    aad.extend_from_slice(context);
    aad.extend_from_slice(id);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

fn damaged(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the sealed stream {why}"))
}

/// Reads up to `buf.len()` bytes, fewer only at the end of `input`.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl DataKey {
    /// Seals everything `input` yields into `output`; returns the plaintext length.
    pub fn seal_stream(
        &self,
        context: &[u8],
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> io::Result<u64> {
        let key = AeadKey::new(self.key());
        let mut id = [0u8; ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        output.write_all(&id)?;
        let mut current = Zeroizing::new(vec![0u8; CHUNK]);
        let mut next = Zeroizing::new(vec![0u8; CHUNK]);
        let mut len = read_full(input, &mut current)?;
        let (mut index, mut total) = (0u64, 0u64);
        loop {
            // One chunk of look-ahead: a chunk knows it is the last only when nothing follows it.
            let next_len = if len == CHUNK { read_full(input, &mut next)? } else { 0 };
            let last = next_len == 0;
            let mut sealed = Vec::with_capacity(4 + NONCE_LEN + len + TAG_LEN);
            sealed.extend_from_slice(&[0; 4]);
            key.seal_into(&aad(context, &id, index, last), &current[..len], &mut sealed);
            let body = u32::try_from(sealed.len() - 4).map_err(|_| damaged("has an oversized chunk"))?;
            sealed[..4].copy_from_slice(&body.to_be_bytes());
            output.write_all(&sealed)?;
            total += len as u64;
            if last {
                return Ok(total);
            }
            std::mem::swap(&mut current, &mut next);
            len = next_len;
            index += 1;
        }
    }

    /// Opens a stream made by [`DataKey::seal_stream`] with the same key and context into `output`;
    /// returns the plaintext length. Fails (`InvalidData`) on any damage, truncation or other key —
    /// after writing the chunks that did open, so callers write to a temporary place first.
    pub fn open_stream(
        &self,
        context: &[u8],
        input: &mut impl Read,
        output: &mut impl Write,
    ) -> io::Result<u64> {
        let key = AeadKey::new(self.key());
        let mut id = [0u8; ID_LEN];
        if read_full(input, &mut id)? < ID_LEN {
            return Err(damaged("is truncated"));
        }
        let (mut index, mut total) = (0u64, 0u64);
        loop {
            let mut len = [0u8; 4];
            if read_full(input, &mut len)? < 4 {
                return Err(damaged("is truncated"));
            }
            let len = usize::try_from(u32::from_be_bytes(len)).map_err(|_| damaged("is malformed"))?;
            if !(NONCE_LEN + TAG_LEN..=CHUNK + NONCE_LEN + TAG_LEN).contains(&len) {
                return Err(damaged("is malformed"));
            }
            let mut sealed = vec![0u8; len];
            if read_full(input, &mut sealed)? < len {
                return Err(damaged("is truncated"));
            }
            // The last flag is not stored: try "more follows" first, then "last".
            let (plain, last) = match key.open(&aad(context, &id, index, false), &sealed) {
                Ok(p) => (p, false),
                Err(_) => (
                    key.open(&aad(context, &id, index, true), &sealed)
                        .map_err(|_| damaged("does not open with this key (damaged, or another server's)"))?,
                    true,
                ),
            };
            output.write_all(&plain)?;
            total += plain.len() as u64;
            if last {
                let mut probe = [0u8; 1];
                if read_full(input, &mut probe)? != 0 {
                    return Err(damaged("has data after its last chunk"));
                }
                return Ok(total);
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(n: u8) -> DataKey {
        DataKey::derive(b"test", &[n; 32], b"stream")
    }

    fn seal(k: &DataKey, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        k.seal_stream(b"ctx", &mut &data[..], &mut out).unwrap();
        out
    }

    fn open(k: &DataKey, ctx: &[u8], sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        k.open_stream(ctx, &mut &sealed[..], &mut out).map(|_| out)
    }

    #[test]
    fn round_trips_at_every_chunk_boundary() {
        let k = key(1);
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let sealed = seal(&k, &data);
            assert_eq!(open(&k, b"ctx", &sealed).unwrap(), data, "{n} bytes");
            if n >= 64 {
                assert!(!sealed.windows(32).any(|w| w == &data[..32]), "no plaintext in the stream");
            }
        }
    }

    // hipaa (c)(2): a truncated, reordered or re-keyed sealed stream (backups) is refused
    #[test]
    fn truncation_reordering_other_keys_and_contexts_are_refused() {
        let k = key(1);
        let data: Vec<u8> = (0..2 * CHUNK + 10).map(|i| (i % 7) as u8).collect();
        let sealed = seal(&k, &data);
        let first = ID_LEN + 4 + NONCE_LEN + CHUNK + TAG_LEN;
        let chunk = first - ID_LEN;
        // Cut after a whole chunk: no chunk says it is the last.
        assert!(open(&k, b"ctx", &sealed[..first]).is_err());
        // The first chunk of one stream and the rest of another (same key, same context).
        let other = seal(&k, &data);
        let mut spliced = sealed[..first].to_vec();
        spliced.extend_from_slice(&other[first..]);
        assert!(open(&k, b"ctx", &spliced).is_err());
        assert_eq!(open(&k, b"ctx", &other).unwrap(), data);
        assert!(open(&k, b"ctx", &sealed[..sealed.len() - 1]).is_err());
        // Two chunks swapped.
        let mut swapped = sealed[..ID_LEN].to_vec();
        swapped.extend_from_slice(&sealed[first..first + chunk]);
        swapped.extend_from_slice(&sealed[ID_LEN..first]);
        swapped.extend_from_slice(&sealed[first + chunk..]);
        assert!(open(&k, b"ctx", &swapped).is_err());
        // Appended data, another key, another context, one flipped bit.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&seal(&k, b"more"));
        assert!(open(&k, b"ctx", &longer).is_err());
        assert!(open(&key(2), b"ctx", &sealed).is_err());
        assert!(open(&k, b"other", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[first + 40] ^= 1;
        assert!(open(&k, b"ctx", &flipped).is_err());
        assert_eq!(open(&k, b"ctx", &sealed).unwrap(), data);
    }
}
