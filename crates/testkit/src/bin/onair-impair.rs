//! `onair-impair`: a UDP relay that impairs the path between a client and the server, for
//! end-to-end tests (this machine's kernel has no netem).
//!
//! ```text
//! onair-impair --listen 198.51.100.3:40000 --server 198.51.100.1:40000 \
//!     [--up SPEC] [--down SPEC] [--seed N] [--for SECONDS]
//! SPEC: delay=80ms jitter=20ms loss=10% burst=ENTER/LEAVE/LOSS reorder=1% rate=300k queue=200ms
//! ```
//!
//! It prints `listening ADDR` once ready. Lines on stdin change it while it runs: `up SPEC`,
//! `down SPEC` (a spec replaces the direction's whole impairment; an empty one makes it
//! clean), `counts` (one JSON line per call). It stops when stdin closes or after `--for`
//! seconds (600 by default), so a test that dies does not leave it running.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use std::io::BufRead;
use testkit::impair::Impairment;
use testkit::relay::{Direction, Relay};

fn usage() -> ! {
    eprintln!(
        "usage: onair-impair --listen ADDR --server ADDR [--up SPEC] [--down SPEC] [--seed N] [--for SECONDS]\n\
         SPEC: delay=80ms jitter=20ms loss=10% burst=ENTER/LEAVE/LOSS reorder=1% rate=300k queue=200ms"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen: Option<SocketAddr> = None;
    let mut server: Option<SocketAddr> = None;
    let mut up = Impairment::default();
    let mut down = Impairment::default();
    let mut seed = 1u64;
    let mut lifetime = Duration::from_secs(600);
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_else(|| usage());
        let spec = |v: &str| {
            Impairment::parse(v).unwrap_or_else(|e| {
                eprintln!("onair-impair: {e}");
                std::process::exit(2)
            })
        };
        match args[i].as_str() {
            "--listen" => listen = value.parse().ok(),
            "--server" => server = value.parse().ok(),
            "--up" => up = spec(&value),
            "--down" => down = spec(&value),
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            "--for" => lifetime = Duration::from_secs(value.parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
        i += 2;
    }
    let (Some(listen), Some(server)) = (listen, server) else {
        usage()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onair-impair: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let relay = match Relay::start(listen, server, up, down, seed).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("onair-impair: listening on {listen}: {e}");
                std::process::exit(1);
            }
        };
        println!("listening {}", relay.local);
        let _ = std::io::stdout().flush();
        // Stdin is read on a thread of its own (blocking reads), its lines handed over.
        let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = tokio::time::sleep(lifetime);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                line = lines.recv() => {
                    let Some(line) = line else { break };
                    let (cmd, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
                    let dir = match cmd {
                        "up" => Direction::Up,
                        "down" => Direction::Down,
                        "counts" => {
                            let (u, d) = (relay.counts(Direction::Up), relay.counts(Direction::Down));
                            println!(
                                "{{\"up\":{{\"passed\":{},\"lost\":{},\"overflowed\":{}}},\"down\":{{\"passed\":{},\"lost\":{},\"overflowed\":{}}}}}",
                                u.passed, u.lost, u.overflowed, d.passed, d.lost, d.overflowed
                            );
                            let _ = std::io::stdout().flush();
                            continue;
                        }
                        "" => continue,
                        other => {
                            eprintln!("onair-impair: unknown command '{other}' (up, down, counts)");
                            continue;
                        }
                    };
                    match Impairment::parse(rest) {
                        Ok(imp) => {
                            relay.set(dir, imp);
                            println!("ok {cmd}");
                            let _ = std::io::stdout().flush();
                        }
                        Err(e) => eprintln!("onair-impair: {e}"),
                    }
                }
            }
        }
    });
}
