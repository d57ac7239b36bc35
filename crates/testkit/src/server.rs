//! Starts the `onair` binary on free loopback ports for a test, and stops it (SIGTERM, then
//! kill) when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::live::{free_port, free_port_run};

/// A running onair.
pub struct TestServer {
    child: Option<Child>,
    /// HTTP port.
    pub http_port: u16,
    /// Media (UDP and ICE-TCP) port.
    pub media_port: u16,
    /// STUN/TURN (UDP and TCP) port.
    pub turn_port: u16,
}

impl TestServer {
    /// Starts `bin` with extra `ONAIR_…` settings and waits until HTTP answers.
    pub fn start(bin: &str, env: &[(&str, &str)]) -> TestServer {
        let http_port = free_port();
        // Two media shards whatever the machine (`media.port` and the next): rooms, streams
        // and sessions are spread over both, as on any multi-core server.
        // (Or as the test's settings or the environment say: a benchmark compares counts.)
        let shards = env
            .iter()
            .find(|(k, _)| *k == "ONAIR_MEDIA_SHARDS")
            .map(|(_, v)| v.to_string())
            .or_else(|| std::env::var("ONAIR_MEDIA_SHARDS").ok())
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(2u16);
        let mut media_port = free_port_run(shards);
        while (media_port..media_port + shards).contains(&http_port) {
            media_port = free_port_run(shards);
        }
        let mut turn_port = free_port();
        while turn_port == http_port || (media_port..media_port + shards).contains(&turn_port) {
            turn_port = free_port();
        }
        let mut cmd = Command::new(bin);
        cmd.env("ONAIR_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
            .env("ONAIR_MEDIA_PORT", media_port.to_string())
            .env("ONAIR_MEDIA_SHARDS", shards.to_string())
            .env("ONAIR_TURN_PORT", turn_port.to_string())
            // Tests run side by side: TURN over TLS on a free port too, not 5349.
            .env("ONAIR_TURN_TLS_PORTS", format!("[{}]", free_port()))
            // Any free port: tests run side by side, and 1935 may be taken.
            .env("ONAIR_RTMP_LISTEN", "127.0.0.1:0")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        // TESTKIT_SERVER_LOG=FILE keeps the server's log (it goes to stdout) for debugging.
        match std::env::var("TESTKIT_SERVER_LOG")
            .ok()
            .and_then(|p| std::fs::File::create(p).ok())
        {
            Some(f) => cmd.stdout(f),
            None => cmd.stdout(Stdio::null()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("onair starts");
        let server = TestServer {
            child: Some(child),
            http_port,
            media_port,
            turn_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
            assert!(Instant::now() < deadline, "onair did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The signalling URL.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/rtc", self.http_port)
    }

    /// The process id, for reading its CPU time and memory.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
