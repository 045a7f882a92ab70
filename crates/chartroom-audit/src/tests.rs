//! Golden encodings, chain verification and tamper detection.

use super::*;
use proptest::prelude::*;

fn event(i: u64) -> Event {
    Event {
        at: Timestamp(1_800_000_000_000 + i64::try_from(i).unwrap_or(0) * 1000),
        user_id: Some(Uuid::from_u128(0x11)),
        username: Some("kim.rn".into()),
        host: "icu-station-1".into(),
        origin_device: None,
        app_version: "0.1.0".into(),
        action: "view".into(),
        resource_type: "patient".into(),
        resource_id: Some(format!("r{i}")),
        patient_ids: vec![Uuid::from_u128(0x22), Uuid::from_u128(0x33)],
        outcome: "ok".into(),
        before: None,
        after: Some(vec![1, 2, 3]),
    }
}

fn chain(n: u64) -> Vec<AuditEntry> {
    let mut head = ChainHead::GENESIS;
    (1..=n).map(|i| head.append(Uuid::from_u128(0xd0), Uuid::from_u128(u128::from(i)), event(i))).collect()
}

/// The canonical encoding and hash of a fixed entry are frozen in `golden/entry-v1.txt`. An
/// accidental change to the hash input fails here; a deliberate one is a new `ENTRY_FORMAT`.
#[test]
fn encoding_is_frozen() {
    let e = &chain(2)[1];
    let actual = format!(
        "canonical {}\nhash {}\n",
        e.canonical_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        e.hash.to_hex()
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/entry-v1.txt");
    if std::env::var_os("CHARTROOM_BLESS").is_some() {
        std::fs::write(path, &actual).unwrap();
    }
    assert_eq!(std::fs::read_to_string(path).unwrap(), actual);
    // The binary form (what the server stores) decodes back exactly, chain fields at fixed offsets.
    assert_eq!(AuditEntry::decode(&e.canonical_bytes(), e.hash).unwrap(), *e);
    assert_eq!(chain_fields(&e.canonical_bytes()), Some((e.device_id, e.seq, e.prev_hash)));
    assert_eq!(hash_canonical(&e.canonical_bytes()), e.hash);
    // And the JSON form round-trips (the wire and the export use it).
    let json = serde_json::to_string(e).unwrap();
    let back: AuditEntry = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, e);
    assert_eq!(back.compute_hash(), e.hash);
}

#[test]
fn a_clean_chain_verifies_and_breaks_are_named() {
    let device = Uuid::from_u128(0xd0);
    let entries = chain(10);
    let head = verify_chain(device, ChainHead::GENESIS, &entries).unwrap();
    assert_eq!(head.seq, 10);
    // A suffix verifies from the head before it (a purge point).
    let mid = ChainHead { seq: entries[3].seq, hash: entries[3].hash };
    assert_eq!(verify_chain(device, mid, &entries[4..]).unwrap(), head);

    let mut deleted = entries.clone();
    deleted.remove(4);
    assert_eq!(
        verify_chain(device, ChainHead::GENESIS, &deleted),
        Err(ChainBreak::Gap { position: 4, expected: 5, found: 6 })
    );
    let mut swapped = entries.clone();
    swapped.swap(2, 3);
    assert!(matches!(
        verify_chain(device, ChainHead::GENESIS, &swapped),
        Err(ChainBreak::Gap { position: 2, .. })
    ));
    let mut edited = entries.clone();
    edited[6].event.action = "update".into();
    assert_eq!(
        verify_chain(device, ChainHead::GENESIS, &edited),
        Err(ChainBreak::Edited { position: 6, seq: 7 })
    );
    // Rewriting an entry *and* its hash still breaks the link to the next one.
    edited[6].hash = edited[6].compute_hash();
    assert_eq!(
        verify_chain(device, ChainHead::GENESIS, &edited),
        Err(ChainBreak::Unlinked { position: 7, seq: 8 })
    );
    assert!(matches!(
        verify_chain(Uuid::from_u128(0xd1), ChainHead::GENESIS, &entries),
        Err(ChainBreak::WrongDevice { position: 0, .. })
    ));
}

// hipaa (b) (c)(2): checkpoints are Ed25519-signed and chained
#[test]
fn checkpoints_are_signed_and_chained() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    let first = Checkpoint::sign(&key, None, 10, Digest32([1; 32]), Timestamp(5));
    let second = Checkpoint::sign(&key, Some(&first), 20, Digest32([2; 32]), Timestamp(6));
    assert!(first.verify(&key.verifying_key()) && second.verify(&key.verifying_key()));
    assert!(!first.verify(&other.verifying_key()));
    assert_eq!((second.number, second.prev), (2, first.digest()));
    let mut forged = second.clone();
    forged.count = 19;
    assert!(!forged.verify(&key.verifying_key()), "a changed count breaks the signature");
    let json = serde_json::to_string(&second).unwrap();
    assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), second);
}

proptest! {
    /// Arbitrary bytes never panic the decoder, and whatever decodes re-encodes to the same bytes.
    #[test]
    fn decoding_is_total_and_exact(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(e) = AuditEntry::decode(&bytes, Digest32::GENESIS) {
            prop_assert_eq!(e.canonical_bytes(), bytes);
        }
    }

    /// Any single-byte change to any entry's canonical content is detected.
    // hipaa (c)(2) (b): any byte edit of an audit entry breaks its hash
    #[test]
    fn any_byte_edit_is_detected(which in 0usize..8, byte in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let device = Uuid::from_u128(0xd0);
        let mut entries = chain(8);
        let e = &mut entries[which];
        // Edit through the fields, as an insider rewriting the database would.
        let mut bytes = e.canonical_bytes();
        let i = byte.index(bytes.len());
        bytes[i] ^= flip;
        let changed = match AuditEntry::decode(&bytes, Digest32::GENESIS).ok() {
            Some(edited) => edited,
            None => return Ok(()), // the edit made the entry unparseable: trivially detected
        };
        entries[which] = AuditEntry { hash: entries[which].hash, ..changed };
        prop_assert!(verify_chain(device, ChainHead::GENESIS, &entries).is_err());
    }
}

#[test]
fn sealed_states_travel_as_base64_and_old_number_lists_still_read() {
    let e = event(1);
    let json = serde_json::to_value(&e).unwrap_or_default();
    assert_eq!(json["after"], "AQID");
    assert_eq!(json["before"], serde_json::Value::Null);
    assert_eq!(serde_json::from_value::<Event>(json.clone()).ok(), Some(e.clone()));
    // Entries stored before the base64 encoding hold a list of numbers: they still decode, and to
    // the same canonical bytes (the hash covers those, not the JSON).
    let mut legacy = json;
    legacy["after"] = serde_json::json!([1, 2, 3]);
    assert_eq!(serde_json::from_value::<Event>(legacy).ok(), Some(e));
    let mut bad = serde_json::to_value(event(2)).unwrap_or_default();
    bad["after"] = serde_json::json!("not base64!");
    assert!(serde_json::from_value::<Event>(bad).is_err());
}
