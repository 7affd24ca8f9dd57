//! A real browser for the dashboard's tests: headless Chromium from Debian (`chromium`,
//! `chromium-driver`), driven over WebDriver with `fantoccini`, with axe-core for accessibility
//! checks and screenshots at a laptop and a phone viewport.
//!
//! [`Browser::start`] answers `None` (after printing why) when `chromedriver` or axe-core is
//! missing, so `cargo test` passes on a machine without them; under `CI=true` it panics
//! instead (`.ci/run` installs both: the Debian packages and `npm install axe-core` into
//! `target/ui-tools`). Chromium trusts no test CA, so it runs with
//! `--ignore-certificate-errors`: these tests check pages, not TLS (the API's TLS has its own).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::process::Spawned;

/// A laptop and a phone, as the issue names them.
pub const VIEWPORTS: [(&str, u32, u32); 2] = [("laptop", 1280, 800), ("phone", 390, 844)];

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The workspace's `target/` (screenshots and the axe-core install live there).
fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

fn axe_path() -> PathBuf {
    target_dir().join("ui-tools/node_modules/axe-core/axe.min.js")
}

fn unavailable(why: &str) -> Option<Browser> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("browser tests cannot run under CI: {why}");
    }
    eprintln!("skipped: {why} (apt-get install chromium chromium-driver; npm install axe-core in target/ui-tools)");
    None
}

/// One headless Chromium session and its chromedriver (both end when this drops).
pub struct Browser {
    pub client: Client,
    axe: String,
    _driver: Spawned,
}

impl Browser {
    pub async fn start() -> Option<Browser> {
        crate::init_crypto();
        if !std::path::Path::new(CHROMEDRIVER).exists() || !std::path::Path::new(CHROMIUM).exists()
        {
            return unavailable("chromium or chromium-driver is not installed");
        }
        let Ok(axe) = std::fs::read_to_string(axe_path()) else {
            return unavailable("axe-core is not installed in target/ui-tools");
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Spawned::start(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let caps = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--ignore-certificate-errors", "--window-size=1280,800", "--lang=en-US"]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::eventually("chromedriver answers", Duration::from_secs(20), || async {
            ClientBuilder::rustls()
                .ok()?
                .capabilities(caps.clone())
                .connect(&url)
                .await
                .ok()
        })
        .await;
        Some(Browser {
            client,
            axe,
            _driver: driver,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The path of the page shown now.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks what submits a form or follows a link, and waits until the next page has loaded
    /// (a marker set on the old page is gone and the new one is complete): WebDriver's click
    /// does not wait for the navigation it starts.
    pub async fn click_through(&self, css: &str) {
        self.client
            .execute("window.__before_click = true;", vec![])
            .await
            .unwrap();
        self.click(css).await;
        crate::eventually(
            &format!("the page after clicking {css}"),
            Duration::from_secs(20),
            || async {
                self.client
                .execute(
                    "return window.__before_click !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            },
        )
        .await;
    }

    /// The body of a same-origin `GET path` fetched by the page (with its session cookie).
    pub async fn fetch_text(&self, path: &str) -> String {
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(done)\
                    .catch(e => done('fetch failed: ' + e));",
                vec![json!(path)],
            )
            .await
            .unwrap();
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The status of a same-origin form `POST path` sent by the page's own script with the
    /// session cookie, carrying `form` (urlencoded) and nothing else.
    pub async fn post_status(&self, path: &str, form: &str) -> u16 {
        let v = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 fetch(arguments[0], {method: 'POST', credentials: 'same-origin', redirect: 'manual',\
                    headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1]})\
                    .then(r => done(r.status)).catch(e => done(0));",
                vec![json!(path), json!(form)],
            )
            .await
            .unwrap();
        v.as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0)
    }

    /// How many elements `css` selects on the page shown now.
    pub async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// The text of the first element `css` selects, trimmed.
    pub async fn inner_text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.text().await.unwrap_or_default().trim().to_owned(),
            Err(_) => String::new(),
        }
    }

    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// axe-core's serious and critical violations on the page shown now, as
    /// `rule: help (nodes)` lines; empty when there are none.
    pub async fn accessibility_violations(&self) -> Vec<String> {
        // Injected through WebDriver, which the page's CSP does not govern.
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {resultTypes: ['violations']})\
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length}))))\
                    .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: 0}]));",
                vec![],
            )
            .await
            .unwrap();
        result
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| format!("{}: {} ({} nodes)", v["id"], v["help"], v["nodes"]))
            .collect()
    }

    /// Saves the page at every viewport as `target/ui-screenshots/{name}-{viewport}.png`,
    /// checking accessibility at each; returns the violations found.
    pub async fn capture(&self, name: &str) -> Vec<String> {
        let dir = target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let mut violations = Vec::new();
        for (viewport, width, height) in VIEWPORTS {
            self.client.set_window_size(width, height).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{viewport}.png")), png).unwrap();
            violations.extend(
                self.accessibility_violations()
                    .await
                    .into_iter()
                    .map(|v| format!("{name} at {viewport}: {v}")),
            );
        }
        self.client.set_window_size(1280, 800).await.unwrap();
        violations
    }
}
