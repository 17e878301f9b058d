//! `farmsync check --capture DIR` against the sandbox: a file per read endpoint with its real
//! status, headers and body, and no email, phone, name, street address or secret of the
//! sandbox's data in any of them.

use std::collections::BTreeMap;

use farmsync::sandbox::{Sandbox, SandboxOptions, sample_farm};
use serde_json::Value;

use crate::daemon_support::{farmsync_in, free_port};
use crate::support::{Workdir, text};
use crate::sync_smoke::sandbox_config;

const SHARED_SECRET: &str = "shared-secret-Qx81";
const SIGNATURE_TOKEN: &str = "signature-token-Zr27";

/// Whether `word` occurs in `text` as a whole word, whatever its case.
fn contains_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.to_lowercase());
    let bytes = text.as_bytes();
    let edge = |i: usize| i >= bytes.len() || !bytes[i].is_ascii_alphanumeric();
    text.match_indices(&word)
        .any(|(i, _)| (i == 0 || edge(i - 1)) && edge(i + word.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_saves_each_read_endpoint_with_no_person_or_secret_in_it() {
    let sb = Sandbox::start(SandboxOptions::default()).await.unwrap();
    sb.seed(&sample_farm()).unwrap();
    let w = Workdir::new(&sandbox_config(
        &sb,
        &format!(
            "[webhooks]\nenabled = true\nlisten = \"127.0.0.1:{}\"\npublic_url = \"https://sync.example.com\"\n\
             signature_token = \"{SIGNATURE_TOKEN}\"\nshared_secret = \"{SHARED_SECRET}\"\n",
            free_port()
        ),
    ));
    // Linked customers (reference ids to look up) and registered webhooks (with the secret).
    let out = farmsync_in(&w, &["sync"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = farmsync_in(&w, &["webhooks", "register"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let dir = w.dir.path().join("capture");
    let out = farmsync_in(&w, &["check", "--capture", dir.to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.insert(name, std::fs::read_to_string(&path).unwrap());
    }
    let expected = [
        ("kounta-companies-me.json", 200),
        ("kounta-customers-page-1.json", 200),
        ("kounta-customer.json", 200),
        ("kounta-lookup-by-reference.json", 200),
        ("kounta-lookup-by-email.json", 302),
        ("kounta-webhooks.json", 200),
        ("farmflow-customers-get.json", 200),
        ("farmflow-customer-get.json", 200),
        ("farmflow-recurring-orders-get.json", 200),
        ("farmflow-one-time-orders-get.json", 200),
    ];
    let parsed: BTreeMap<&str, Value> = expected
        .iter()
        .map(|(name, status)| {
            let file = files
                .get(*name)
                .unwrap_or_else(|| panic!("{name} missing: {:?}", files.keys()));
            let v: Value = serde_json::from_str(file).unwrap();
            assert_eq!(v["status"], *status, "{name}: {v}");
            assert!(
                v["headers"].as_array().is_some_and(|h| !h.is_empty()),
                "{name}"
            );
            (*name, v)
        })
        .collect();
    assert!(files.contains_key("index.json"));
    assert_eq!(files.len(), expected.len() + 1, "{:?}", files.keys());

    // What the answers are about is still there: every FarmFlow customer, with its id and its
    // country as FarmFlow spells it; the CRM's paging header; the lookup's Location.
    let list = &parsed["farmflow-customers-get.json"]["body"];
    assert_eq!(list["status"], "success");
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        sb.farmflow().customers().len()
    );
    assert!(files["farmflow-customers-get.json"].contains("Tasmania"));
    let location = parsed["kounta-lookup-by-email.json"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "location")
        .map(|h| h[1].as_str().unwrap().to_owned())
        .expect("the lookup's Location");
    assert!(location.contains("/customers/"), "{location}");
    let hooks = &parsed["kounta-webhooks.json"]["body"];
    assert_eq!(hooks.as_array().map(Vec::len), Some(3), "{hooks}");

    // No person and no secret of the sandbox in any file.
    let all: String = files.values().cloned().collect::<Vec<_>>().join("\n");
    let mut people: Vec<String> = Vec::new();
    let mut contacts: Vec<String> = Vec::new();
    for c in sb.kounta().customers() {
        people.extend([c.first_name, c.last_name]);
        contacts.extend([c.email, c.phone, c.mobile]);
        if let Some(a) = c.primary_address {
            people.extend(a.address.split('\n').map(str::to_owned));
        }
    }
    for c in sb.farmflow().customers() {
        people.extend([
            c.firstname,
            c.lastname,
            c.company,
            c.address,
            c.address2,
            c.notes,
        ]);
        contacts.extend([c.email, c.phone]);
    }
    for word in people.iter().filter(|p| !p.trim().is_empty()) {
        assert!(!contains_word(&all, word), "{word:?} is in the capture");
    }
    let lower = all.to_lowercase();
    for contact in contacts.iter().filter(|c| !c.trim().is_empty()) {
        assert!(
            !lower.contains(&contact.to_lowercase()),
            "{contact:?} is in the capture"
        );
        let digits: String = contact.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 6 {
            assert!(
                !all.contains(&digits),
                "{contact:?} ({digits}) is in the capture"
            );
        }
    }
    for secret in [
        sb.kounta().client_secret(),
        sb.farmflow().api_key(),
        SHARED_SECRET,
        SIGNATURE_TOKEN,
    ] {
        assert!(!all.contains(secret), "a secret is in the capture");
    }
    // The check can fail: the placeholders stand where the people were.
    assert!(all.contains("@example.invalid") && all.contains("Name 1"));
}
