//! A headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API, for the
//! dashboard test. Hand-written over reqwest (already a dev-dependency): the test needs six
//! commands, and the crate that wraps them (fantoccini) brings some twenty more crates, an
//! ICU text segmenter among them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::{free_port, wait_for};

/// Chromium's flags: headless, and nothing that reaches the network by itself (without them
/// it tries to, and stalls).
const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,1500",
];

/// A browser session (ChromeDriver and the Chromium it starts, in a process group of their
/// own, ended on drop).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}

impl Browser {
    /// Start ChromeDriver and a fresh headless Chromium (its own profile directory).
    pub async fn start() -> Self {
        let missing = || {
            panic!(
                "chromium and chromedriver are needed: `make deps` installs them (Debian packages chromium, chromium-driver)"
            )
        };
        let chromium = which("chromium").unwrap_or_else(missing);
        let chromedriver = which("chromedriver").unwrap_or_else(missing);
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so drop ends ChromeDriver and every Chromium process it started.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to answer", Duration::from_secs(30), || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let v: Value = http.get(format!("{base}/status")).send().await.ok()?.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Self { driver, base, session: String::new(), http, _profile: profile };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    /// One WebDriver command; its `value`. Panics with the driver's answer on an error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().await.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "WebDriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Open `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url }))).await;
    }

    /// Run `script` (a function body) in the page; what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.call("POST", &self.at("/execute/sync"), Some(json!({"script": script, "args": []}))).await
    }

    /// Save a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64")).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The browser console's errors since the last call (JavaScript exceptions, console.error,
    /// failed requests): ChromeDriver's log of the page.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.call("POST", &self.at("/se/log"), Some(json!({"type": "browser"}))).await;
        entries
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// End the session (Chromium exits), then ChromeDriver.
    pub async fn quit(mut self) {
        self.call("DELETE", &self.at(""), None).await;
        self.kill();
    }

    fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if matches!(self.driver.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}
