//! Decoding of the canonical entry encoding (the inverse of `AuditEntry::canonical_bytes`).

use chartroom_domain::Timestamp;
use uuid::Uuid;

use crate::{AuditEntry, Digest32, Event, ENTRY_FORMAT};

/// Decodes one canonical encoding; `None` unless it is exactly one well-formed entry.
pub(crate) fn entry(b: &[u8], hash: Digest32) -> Option<AuditEntry> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u32(&mut self) -> Option<usize> {
            Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize)
        }
        fn var(&mut self) -> Option<Vec<u8>> {
            let n = self.u32()?;
            Some(self.take(n)?.to_vec())
        }
        fn opt(&mut self) -> Option<Option<Vec<u8>>> {
            match self.take(1)?[0] {
                0 => Some(None),
                1 => Some(Some(self.var()?)),
                _ => None,
            }
        }
        fn uuid(&mut self) -> Option<Uuid> {
            Some(Uuid::from_bytes(self.take(16)?.try_into().ok()?))
        }
        fn text(&mut self) -> Option<String> {
            String::from_utf8(self.var()?).ok()
        }
    }
    let mut r = R(b);
    if r.take(1)? != [ENTRY_FORMAT] {
        return None;
    }
    let id = r.uuid()?;
    let device_id = r.uuid()?;
    let seq = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let prev_hash = Digest32(r.take(32)?.try_into().ok()?);
    let at = Timestamp(i64::from_be_bytes(r.take(8)?.try_into().ok()?));
    let user_id = match r.opt()? {
        None => None,
        Some(v) => Some(Uuid::from_bytes(v.try_into().ok()?)),
    };
    let username = match r.opt()? {
        None => None,
        Some(v) => Some(String::from_utf8(v).ok()?),
    };
    let host = r.text()?;
    let origin_device = match r.opt()? {
        None => None,
        Some(v) => Some(Uuid::from_bytes(v.try_into().ok()?)),
    };
    let (app_version, action, resource_type) = (r.text()?, r.text()?, r.text()?);
    let resource_id = match r.opt()? {
        None => None,
        Some(v) => Some(String::from_utf8(v).ok()?),
    };
    let n = r.u32()?;
    let mut patient_ids = Vec::new();
    if n > r.0.len() / 16 {
        return None;
    }
    for _ in 0..n {
        patient_ids.push(r.uuid()?);
    }
    let outcome = r.text()?;
    let (before, after) = (r.opt()?, r.opt()?);
    if !r.0.is_empty() {
        return None;
    }
    Some(AuditEntry {
        id,
        device_id,
        seq,
        prev_hash,
        event: Event {
            at,
            user_id,
            username,
            host,
            origin_device,
            app_version,
            action,
            resource_type,
            resource_id,
            patient_ids,
            outcome,
            before,
            after,
        },
        hash,
    })
}
