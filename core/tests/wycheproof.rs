//! Wycheproof AES-GCM vectors run through the `aes-gcm` crate, exactly as envelope encryption
//! uses it (AES-256, 96-bit nonce, 128-bit tag), so a broken or swapped implementation fails
//! here before it can seal a secret.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use aes_gcm::Aes256Gcm;
use wycheproof::aead::{Test, TestName, TestSet};
use wycheproof::TestResult;

#[test]
fn aes_256_gcm_passes_every_wycheproof_vector_it_can_take() {
    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut valid, mut invalid, mut skipped) = (0usize, 0usize, 0usize);
    for group in &set.test_groups {
        // Other key and nonce sizes are not used by envelope encryption: skipped on purpose.
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            skipped += group.tests.len();
            continue;
        }
        for test in &group.tests {
            match test.result {
                TestResult::Invalid => {
                    check_rejected(test);
                    invalid += 1;
                }
                TestResult::Valid | TestResult::Acceptable => {
                    check_matches(test);
                    valid += 1;
                }
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "valid {valid}, invalid {invalid}");
    assert!(skipped > 0, "other sizes should exist in the set");
    println!("wycheproof AES-256-GCM: {valid} valid, {invalid} invalid, {skipped} skipped");
}

fn cipher(test: &Test) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(&test.key).unwrap()
}

fn nonce(test: &Test) -> &Nonce<Aes256Gcm> {
    <&Nonce<Aes256Gcm>>::try_from(test.nonce.as_slice()).unwrap()
}

fn ct_and_tag(test: &Test) -> Vec<u8> {
    [test.ct.as_slice(), test.tag.as_slice()].concat()
}

fn check_matches(test: &Test) {
    let payload = Payload {
        msg: &test.pt,
        aad: &test.aad,
    };
    let sealed = cipher(test).encrypt(nonce(test), payload).unwrap();
    assert_eq!(sealed, ct_and_tag(test), "tcId {} encrypt", test.tc_id);
    let both = ct_and_tag(test);
    let payload = Payload {
        msg: &both,
        aad: &test.aad,
    };
    let opened = cipher(test).decrypt(nonce(test), payload).unwrap();
    assert_eq!(opened, test.pt.as_slice(), "tcId {} decrypt", test.tc_id);
}

fn check_rejected(test: &Test) {
    let both = ct_and_tag(test);
    let payload = Payload {
        msg: &both,
        aad: &test.aad,
    };
    let opened = cipher(test).decrypt(nonce(test), payload);
    assert!(
        opened.is_err(),
        "tcId {} ({}) must fail",
        test.tc_id,
        test.comment
    );
}
