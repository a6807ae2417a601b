//! A pausable TCP forwarder on 127.0.0.1, to cut one client off a server
//! (a network partition) while the rest of the bed keeps talking to it.
//!
//! It forwards bytes and nothing else, so TLS passes through untouched: point
//! a kubeconfig's server URL at [`TcpProxy::url`] and the server's
//! certificate still verifies as long as it is valid for 127.0.0.1 (the
//! bed's kcp and clusters' are).
//!
//! ```no_run
//! # async fn demo(server: std::net::SocketAddr) -> anyhow::Result<()> {
//! use tmc_tests::testbed::proxy::TcpProxy;
//! let proxy = TcpProxy::start(server).await?;
//! // ... clients connect to proxy.addr() ...
//! proxy.pause(); // nothing passes either way; connections stay open
//! proxy.cut(); // and now they are closed, held bytes dropped
//! proxy.resume(); // new connections work again
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bytes read at once from either side.
const CHUNK: usize = 16 * 1024;

/// A TCP forwarder from a loopback port to `upstream`; stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

struct Shared {
    paused: watch::Sender<bool>,
    /// Bumped by every cut: connections older than the cut close.
    cuts: watch::Sender<u64>,
    up: AtomicU64,
    down: AtomicU64,
    accepted: AtomicU64,
}

impl TcpProxy {
    /// Listens on a free 127.0.0.1 port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the proxy on 127.0.0.1")?;
        let addr = listener.local_addr().context("reading the proxy address")?;
        let shared = Arc::new(Shared {
            paused: watch::channel(false).0,
            cuts: watch::channel(0).0,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, upstream, shared.clone()));
        Ok(Self {
            addr,
            upstream,
            shared,
            _tasks: tasks,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the bytes go.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `https://<addr>`: the server URL for a kubeconfig.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops forwarding both ways: bytes already read are held, nothing more
    /// is read, new connections are accepted but not connected upstream.
    /// Connections stay open (see [`TcpProxy::cut`]).
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Forwards again, held bytes first.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Whether the proxy is paused.
    pub fn is_paused(&self) -> bool {
        *self.shared.paused.borrow()
    }

    /// Closes every open connection (both sides), dropping the bytes it
    /// holds; later connections are forwarded (or held, while paused).
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Bytes forwarded from clients to the upstream so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from the upstream to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        connections.spawn(connection(client, upstream, shared.clone()));
        // Reap finished connections.
        while connections.try_join_next().is_some() {}
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut cuts = shared.cuts.subscribe();
    cuts.mark_unchanged();
    let mut paused = shared.paused.subscribe();
    let server = tokio::select! {
        _ = cuts.changed() => return,
        server = async {
            let _ = paused.wait_for(|p| !p).await;
            TcpStream::connect(upstream).await
        } => match server {
            Ok(server) => server,
            Err(_) => return,
        },
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, &shared, &shared.up);
    let down = pipe(server_read, client_write, &shared, &shared.down);
    tokio::select! {
        _ = cuts.changed() => {}
        _ = async { futures::join!(up, down) } => {}
    }
}

/// Copies `from` into `to` while not paused, counting into `counter`.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    counter: &AtomicU64,
) {
    let mut paused = shared.paused.subscribe();
    let mut buf = vec![0u8; CHUNK];
    loop {
        if paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Paused while waiting: stop reading.
            _ = paused.wait_for(|p| *p) => continue,
        };
        // Paused after the read: hold these bytes until resumed.
        if paused.wait_for(|p| !p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        counter.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    /// An upstream echoing everything back, counting the bytes it received.
    async fn echo() -> (SocketAddr, Arc<AtomicU64>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        count.fetch_add(n as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        (addr, received)
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("answer in time")
            .expect("read");
        got
    }

    const QUIET: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn forwards_both_ways_and_counts() {
        let (upstream, received) = echo().await;
        let proxy = TcpProxy::start(upstream).await.expect("proxy");
        assert_eq!(proxy.upstream(), upstream);
        assert!(proxy.url().starts_with("https://127.0.0.1:"));
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, b"ping").await, b"ping");
        assert_eq!((proxy.bytes_up(), proxy.bytes_down()), (4, 4));
        assert_eq!(received.load(Ordering::SeqCst), 4);
        assert_eq!(proxy.connections(), 1);
    }

    #[tokio::test]
    async fn a_pause_holds_bytes_both_ways_until_resumed() {
        let (upstream, received) = echo().await;
        let proxy = TcpProxy::start(upstream).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, b"one").await, b"one");
        proxy.pause();
        assert!(proxy.is_paused());
        s.write_all(b"two").await.expect("write while paused");
        let mut buf = [0u8; 3];
        assert!(
            timeout(QUIET, s.read_exact(&mut buf)).await.is_err(),
            "nothing comes back while paused"
        );
        assert_eq!(
            received.load(Ordering::SeqCst),
            3,
            "nothing reached the upstream"
        );
        assert_eq!(proxy.bytes_up(), 3);
        // A new connection is accepted but not forwarded either.
        let mut late = TcpStream::connect(proxy.addr()).await.expect("connect");
        late.write_all(b"late").await.expect("write");
        proxy.resume();
        timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("held bytes flow after resume")
            .expect("read");
        assert_eq!(&buf, b"two");
        let mut got = [0u8; 4];
        timeout(Duration::from_secs(5), late.read_exact(&mut got))
            .await
            .expect("late connection forwarded after resume")
            .expect("read");
        assert_eq!(&got, b"late");
        assert_eq!(proxy.bytes_up(), 10);
    }

    #[tokio::test]
    async fn a_cut_closes_connections_and_drops_what_was_held() {
        let (upstream, received) = echo().await;
        let proxy = TcpProxy::start(upstream).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, b"abc").await, b"abc");
        proxy.pause();
        s.write_all(b"lost").await.expect("write while paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.cut();
        let mut buf = [0u8; 8];
        let closed = timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the client sees the cut");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        proxy.resume();
        // The held bytes never arrive; a new connection works.
        let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut again, b"new").await, b"new");
        assert_eq!(received.load(Ordering::SeqCst), 6, "abc + new, not lost");
        assert_eq!(proxy.bytes_up(), 6);
    }
}
