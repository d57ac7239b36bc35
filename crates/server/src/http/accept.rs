//! The HTTP(S) accept loop. `axum::serve` offers neither TLS nor limits, so each connection is
//! taken here: counted against its address (`limits.connections_per_ip`; over it, closed at
//! once), wrapped in rustls when there is a certificate (ALPN settles HTTP/2 or HTTP/1.1), and
//! handed to hyper's auto builder with the peer's address on every request (for the rate
//! limits) and two deadlines: the request's headers must arrive within
//! `limits.header_deadline_secs`, and a connection that moves no byte either way for
//! `limits.idle_secs` is closed (a slowloris, or thousands of idle sockets, must not hold file
//! descriptors forever). An upgraded WebSocket leaves the watch: its own pings decide.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::debug;

use crate::limits::{Door, Limits, Slot};

/// A TLS handshake must finish within this, or the connection is dropped: a client that
/// connects and says nothing must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings for HTTPS: `config` with ALPN offering HTTP/2 first.
pub fn acceptor(config: &rustls::ServerConfig) -> TlsAcceptor {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Accepts connections on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Arc<Limits>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    debug!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = limits.connect(Door::Http, peer.ip()) else {
            debug!(%peer, "HTTP connection closed: limits.connections_per_ip reached");
            continue; // dropping the stream closes it
        };
        crate::net::tune_http_stream(&tcp);
        let io = Watched::new(tcp, slot);
        let activity = io.activity.clone();
        let tls = tls.clone();
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(io, peer, app, activity, limits).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => connection(tls, peer, app, activity, limits).await,
                        Ok(Err(e)) => debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves one connection until it ends, is upgraded, or idles past `limits.idle_secs`.
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    activity: Arc<Activity>,
    limits: Arc<Limits>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = app.map_request(move |mut r: hyper::Request<hyper::body::Incoming>| {
        r.extensions_mut().insert(ConnectInfo(peer));
        r
    });
    let service = TowerToHyperService::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.settings.header_deadline);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            debug!(%peer, "HTTP connection: {e}");
        },
        () = activity.silent_for(limits.settings.idle) => {
            limits.refused.idle.fetch_add(1, Relaxed);
            debug!(%peer, "HTTP connection closed: idle for {:?}", limits.settings.idle);
        }
    }
}

/// When a connection last moved a byte.
pub struct Activity {
    /// Milliseconds since [`epoch`].
    last: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Activity {
    fn touch(&self) {
        self.last.store(now_ms(), Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn silent_for(&self, idle: Duration) {
        loop {
            let quiet = Duration::from_millis(now_ms().saturating_sub(self.last.load(Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet + Duration::from_millis(50)).await;
        }
    }
}

/// A connection's socket, noting each byte moved, and holding its address's slot.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<T> Watched<T> {
    fn new(inner: T, slot: Slot) -> Watched<T> {
        Watched {
            inner,
            activity: Arc::new(Activity {
                last: AtomicU64::new(now_ms()),
            }),
            _slot: slot,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
