use super::*;
use proptest::prelude::*;

fn item(body: ItemBody) -> Item {
    Item {
        origin: "ctl1".into(),
        version: 0x0102_0304_0506_0708,
        body,
    }
}

/// One item of every kind, the optional fields both set and unset.
fn every_kind() -> Vec<Item> {
    let (vip, backend) = ("192.0.2.10".to_string(), "10.0.0.1:80".to_string());
    vec![
        item(ItemBody::Claim {
            vip: vip.clone(),
            owner: "ctl2".into(),
            epoch: 7,
        }),
        item(ItemBody::Released {
            vip: vip.clone(),
            owner: "ctl2".into(),
            epoch: u64::MAX,
        }),
        item(ItemBody::Health {
            vip: vip.clone(),
            backend: backend.clone(),
            up: true,
        }),
        item(ItemBody::Service {
            vip: vip.clone(),
            backend: backend.clone(),
            listening: false,
        }),
        item(ItemBody::Admin {
            vip: vip.clone(),
            backend: backend.clone(),
            admin: "drained".into(),
            weight: Some(3),
            drain_started_ms: Some(1_700_000_000_000),
            drain_timeout_ms: Some(30_000),
            at: 12,
            by: "ctl3".into(),
        }),
        item(ItemBody::Admin {
            vip: vip.clone(),
            backend: backend.clone(),
            admin: "enabled".into(),
            weight: None,
            drain_started_ms: None,
            drain_timeout_ms: None,
            at: 0,
            by: String::new(),
        }),
        item(ItemBody::NodeState {
            node: "ctl1".into(),
            reason: Some("standby".into()),
        }),
        item(ItemBody::NodeState {
            node: "ctl1".into(),
            reason: None,
        }),
        item(ItemBody::Writer {
            vip,
            backend,
            at: 5,
            by: "ctl1".into(),
        }),
    ]
}

#[test]
fn wire_round_trip_of_every_kind() {
    let kinds: std::collections::BTreeSet<u8> =
        every_kind().iter().map(|i| i.body.kind()).collect();
    assert_eq!(kinds.len(), 7, "every kind is covered");
    for i in every_kind() {
        let bytes = encode(&i).unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(bytes[1], i.body.kind());
        assert_eq!(decode(&bytes), Ok(Decoded::Item(i.clone())), "{bytes:02x?}");
        assert_eq!(header(&bytes), Ok((i.body.kind(), i.origin, i.version)));
    }
}

/// The bytes of one item, pinned: a change here is a wire break (see the module doc).
#[test]
fn wire_layout_is_pinned() {
    let bytes = encode(&Item {
        origin: "a".into(),
        version: 2,
        body: ItemBody::Health {
            vip: "v".into(),
            backend: "b".into(),
            up: true,
        },
    })
    .unwrap();
    assert_eq!(
        bytes,
        [1, 3, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 2, 1, b'v', 1, b'b', 1]
    );
}

#[test]
fn wire_kind_numbers_are_pinned() {
    let mut got: Vec<u8> = every_kind().iter().map(|i| i.body.kind()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        [
            kind::CLAIM,
            kind::RELEASED,
            kind::HEALTH,
            kind::SERVICE,
            kind::ADMIN,
            kind::NODE_STATE,
            kind::WRITER
        ],
        [1, 2, 3, 4, 5, 6, 7]
    );
}

/// Compatibility rule 1: a kind this build does not know is skipped, not an error.
#[test]
fn wire_unknown_kind_is_skipped() {
    let bytes = encode_test_kind("ctl9", 4, b"anything a newer node says");
    assert_eq!(decode(&bytes), Ok(Decoded::Unknown { kind: TEST_KIND }));
    assert_eq!(header(&bytes), Ok((TEST_KIND, "ctl9".into(), 4)));
    // Kind 0 is never assigned: unknown as well.
    let mut zero = bytes.clone();
    zero[1] = 0;
    assert_eq!(decode(&zero), Ok(Decoded::Unknown { kind: 0 }));
    // An unknown kind still needs a whole header.
    assert!(decode(&bytes[..4]).is_err());
}

/// Compatibility rule 2: fields a newer node appends to a known kind are ignored.
#[test]
fn wire_trailing_fields_are_ignored() {
    for i in every_kind() {
        let mut bytes = encode(&i).unwrap();
        bytes.extend_from_slice(&[1, 2, 3, 0xff]);
        assert_eq!(decode(&bytes), Ok(Decoded::Item(i)));
    }
}

/// A newer wire version is skipped without reading past its version byte; version 0 (never
/// assigned) and the empty item are malformed.
#[test]
fn wire_newer_version_is_skipped() {
    let mut bytes = encode(&every_kind()[0]).unwrap();
    for v in [VERSION + 1, 9, 255] {
        bytes[0] = v;
        assert_eq!(decode(&bytes), Ok(Decoded::Newer { version: v }));
        assert_eq!(decode(&[v]), Ok(Decoded::Newer { version: v }));
    }
    // A pre-release build's JSON item.
    assert_eq!(
        decode(br#"{"origin":"a","version":1,"body":{}}"#),
        Ok(Decoded::Newer { version: b'{' })
    );
    assert_eq!(decode(&[]), Err(WireError::Empty));
    bytes[0] = 0;
    assert_eq!(decode(&bytes), Err(WireError::BadVersion(0)));
}

/// Every proper prefix of every kind is an error (never a panic, never a shorter item).
#[test]
fn wire_truncation_at_every_offset_is_an_error() {
    for i in every_kind() {
        let bytes = encode(&i).unwrap();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{i:?} cut at {n}");
        }
    }
}

#[test]
fn wire_malformed_fields_are_errors() {
    let health = encode(&every_kind()[2]).unwrap();
    let mut bad = health.clone();
    *bad.last_mut().unwrap() = 2;
    assert_eq!(
        decode(&bad),
        Err(WireError::BadTag {
            field: "up",
            tag: 2
        })
    );
    let mut bad = health.clone();
    bad[3] = 0xff; // inside the origin "ctl1"
    assert_eq!(decode(&bad), Err(WireError::NotUtf8("origin")));
    let mut bad = encode(&every_kind()[7]).unwrap(); // NodeState, reason None
    *bad.last_mut().unwrap() = 7;
    assert!(matches!(decode(&bad), Err(WireError::BadTag { .. })));
}

#[test]
fn wire_long_strings() {
    let mut i = every_kind()[0].clone();
    i.origin = "x".repeat(MAX_STR);
    assert_eq!(decode(&encode(&i).unwrap()), Ok(Decoded::Item(i.clone())));
    i.origin.push('x');
    assert_eq!(
        encode(&i),
        Err(WireError::TooLong {
            field: "origin",
            len: 256
        })
    );
    // A reason is free text: cut at a character boundary instead.
    let reason = "é".repeat(200); // 400 bytes
    let i = item(ItemBody::NodeState {
        node: "n".into(),
        reason: Some(reason.clone()),
    });
    let Ok(Decoded::Item(Item {
        body: ItemBody::NodeState {
            reason: Some(got), ..
        },
        ..
    })) = decode(&encode(&i).unwrap())
    else {
        panic!("not a node state");
    };
    assert_eq!(got.len(), 254);
    assert!(reason.starts_with(&got));
}

fn string() -> impl Strategy<Value = String> {
    proptest::string::string_regex(".{0,40}")
        .unwrap()
        .prop_filter("fits", |s| s.len() <= MAX_STR)
}

fn body() -> impl Strategy<Value = ItemBody> {
    prop_oneof![
        (string(), string(), any::<u64>()).prop_map(|(vip, owner, epoch)| ItemBody::Claim {
            vip,
            owner,
            epoch
        }),
        (string(), string(), any::<u64>()).prop_map(|(vip, owner, epoch)| ItemBody::Released {
            vip,
            owner,
            epoch
        }),
        (string(), string(), any::<bool>()).prop_map(|(vip, backend, up)| ItemBody::Health {
            vip,
            backend,
            up
        }),
        (string(), string(), any::<bool>()).prop_map(|(vip, backend, listening)| {
            ItemBody::Service {
                vip,
                backend,
                listening,
            }
        }),
        (
            (string(), string(), string()),
            any::<(Option<u32>, Option<u64>, Option<u64>, u64)>(),
            string()
        )
            .prop_map(|((vip, backend, admin), (weight, ds, dt, at), by)| {
                ItemBody::Admin {
                    vip,
                    backend,
                    admin,
                    weight,
                    drain_started_ms: ds,
                    drain_timeout_ms: dt,
                    at,
                    by,
                }
            }),
        (string(), proptest::option::of(string()))
            .prop_map(|(node, reason)| ItemBody::NodeState { node, reason }),
        (string(), string(), any::<u64>(), string()).prop_map(|(vip, backend, at, by)| {
            ItemBody::Writer {
                vip,
                backend,
                at,
                by,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Arbitrary bytes never panic; what decodes re-encodes to a prefix of the input (the
    /// encoding is canonical, trailing bytes aside).
    #[test]
    fn wire_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Decoded::Item(i)) = decode(&bytes) {
            let again = encode(&i).unwrap();
            prop_assert!(bytes.starts_with(&again));
        }
    }

    /// Arbitrary bytes behind a valid version byte reach the field readers.
    #[test]
    fn wire_random_bodies_never_panic(
        kind in 0u8..10,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = vec![VERSION, kind];
        bytes.extend_from_slice(&rest);
        if let Ok(Decoded::Item(i)) = decode(&bytes) {
            prop_assert!(bytes.starts_with(&encode(&i).unwrap()));
        }
    }

    /// Every valid item round-trips, with or without trailing bytes.
    #[test]
    fn wire_random_items_round_trip(
        origin in string(),
        version in any::<u64>(),
        body in body(),
        trailing in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let i = Item { origin, version, body };
        let mut bytes = encode(&i).unwrap();
        prop_assert_eq!(decode(&bytes), Ok(Decoded::Item(i.clone())));
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(decode(&bytes), Ok(Decoded::Item(i)));
    }
}
