//! A TCP proxy for fault injection.

#![allow(unused_imports)]

use super::*;

pub(crate) struct ProxyShared {
    target: SocketAddr,
    forwarding: AtomicBool,
    shutdown: AtomicBool,
    /// Open connections: (id, client side, upstream side once connected).
    conns: Mutex<Vec<(usize, TcpStream, Option<TcpStream>)>>,
    next_id: AtomicUsize,
    accepted: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Armed by `drop_after_upload_over`: close the connection right after forwarding a
    /// client-to-server chunk larger than this many bytes (0 = disarmed).
    drop_after_upload_over: AtomicUsize,
    /// How many connections that trap has closed.
    trapped: AtomicUsize,
}

impl ProxyShared {
    fn stopped(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
    fn is_open(&self, id: usize) -> bool {
        lock(&self.conns).iter().any(|(i, _, _)| *i == id)
    }
    fn close(&self, id: usize) {
        let mut conns = lock(&self.conns);
        if let Some(pos) = conns.iter().position(|(i, _, _)| *i == id) {
            let (_, c, u) = conns.remove(pos);
            let _ = c.shutdown(Shutdown::Both);
            if let Some(u) = u {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A TCP proxy on 127.0.0.1:<random port> that forwards to `target`.
///
/// - `set_forwarding(false)`: a partition without closed sockets. No byte moves in either
///   direction (what was in flight is held back and delivered when forwarding resumes), and new
///   connections are accepted but not connected onwards until then.
/// - `drop_all()`: closes every current connection (both sides); new ones are still accepted.
///
/// Dropping the proxy closes everything and joins its threads.
pub struct Proxy {
    port: u16,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target` (anything `ToSocketAddrs`, e.g. "127.0.0.1:2181").
    pub fn new(target: impl ToSocketAddrs) -> Proxy {
        let target = target
            .to_socket_addrs()
            .expect("proxy target address")
            .next()
            .expect("proxy target resolves to no address");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy listener");
        listener
            .set_nonblocking(true)
            .expect("nonblocking proxy listener");
        let port = listener.local_addr().expect("proxy local addr").port();
        let shared = Arc::new(ProxyShared {
            target,
            forwarding: AtomicBool::new(true),
            shutdown: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            drop_after_upload_over: AtomicUsize::new(0),
            trapped: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{port}-accept"))
            .spawn(move || Self::accept_loop(listener, sh))
            .expect("spawn proxy thread");
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A proxy to 127.0.0.1:`port`.
    pub fn to_port(port: u16) -> Proxy {
        Proxy::new(("127.0.0.1", port))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, to put in a connect string.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    pub fn set_forwarding(&self, on: bool) {
        self.shared.forwarding.store(on, Ordering::SeqCst);
    }

    pub fn is_forwarding(&self) -> bool {
        self.shared.forwarding.load(Ordering::SeqCst)
    }

    /// Closes all current connections, both sides.
    pub fn drop_all(&self) {
        let mut conns = lock(&self.shared.conns);
        for (_, c, u) in conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
            if let Some(u) = u {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }

    /// Arms a one-shot trap: the next client-to-server chunk larger than `bytes` (a request,
    /// not a ping) is forwarded, and then its connection is closed before any reply gets back.
    /// This is "the connection dropped right after the request passed".
    pub fn drop_after_upload_over(&self, bytes: usize) {
        self.shared.drop_after_upload_over.store(bytes.max(1), Ordering::SeqCst);
    }

    /// How many connections the trap has closed.
    pub fn trapped(&self) -> usize {
        self.shared.trapped.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections accepted since the proxy started.
    pub fn accepted_connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn spawn_worker(sh: &Arc<ProxyShared>, name: String, f: impl FnOnce() + Send + 'static) {
        let h = thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("spawn proxy thread");
        let mut threads = lock(&sh.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(h);
    }

    fn accept_loop(listener: TcpListener, sh: Arc<ProxyShared>) {
        while !sh.stopped() {
            match listener.accept() {
                Ok((client, _)) => {
                    sh.accepted.fetch_add(1, Ordering::SeqCst);
                    let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
                    let Ok(c2) = client.try_clone() else { continue };
                    lock(&sh.conns).push((id, c2, None));
                    let sh2 = sh.clone();
                    Self::spawn_worker(&sh, format!("proxy-conn-{id}"), move || {
                        Self::connection(id, client, sh2)
                    });
                }
                Err(ref e) if e.kind() == io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn connection(id: usize, client: TcpStream, sh: Arc<ProxyShared>) {
        let _ = client.set_nonblocking(false);
        // A partition: hold the new connection until forwarding resumes (or it is dropped).
        while !sh.forwarding.load(Ordering::SeqCst) {
            if sh.stopped() || !sh.is_open(id) {
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let upstream = match TcpStream::connect_timeout(&sh.target, Duration::from_secs(2)) {
            Ok(u) => u,
            Err(_) => {
                sh.close(id);
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let _ = client.set_nodelay(true);
        {
            let mut conns = lock(&sh.conns);
            match conns.iter_mut().find(|(i, _, _)| *i == id) {
                Some(entry) => entry.2 = upstream.try_clone().ok(),
                None => {
                    // Dropped while we were connecting.
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = upstream.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            sh.close(id);
            return;
        };
        let sh_up = sh.clone();
        let up = thread::Builder::new()
            .name(format!("proxy-conn-{id}-up"))
            .spawn(move || Self::pump(id, client, upstream, sh_up, true))
            .expect("spawn proxy pump");
        Self::pump(id, u2, c2, sh.clone(), false);
        let _ = up.join();
        sh.close(id);
    }

    /// Copies `from` -> `to` while the connection is open, holding bytes while not forwarding.
    fn pump(id: usize, mut from: TcpStream, mut to: TcpStream, sh: Arc<ProxyShared>, upward: bool) {
        let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if sh.stopped() {
                break;
            }
            // While partitioned, read nothing (the sender's kernel buffers fill up).
            if !sh.forwarding.load(Ordering::SeqCst) {
                if !sh.is_open(id) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => {
                    // Half-close onwards; the other direction may still be talking.
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => n,
                Err(ref e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(ref e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            // Bytes read just as forwarding stopped are held until it resumes.
            while !sh.forwarding.load(Ordering::SeqCst) {
                if sh.stopped() || !sh.is_open(id) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
            if sh.stopped() || !sh.is_open(id) || to.write_all(&buf[..n]).is_err() {
                break;
            }
            if upward {
                let limit = sh.drop_after_upload_over.load(Ordering::SeqCst);
                if limit > 0
                    && n > limit
                    && sh.drop_after_upload_over.compare_exchange(limit, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                {
                    sh.trapped.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        sh.close(id);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.drop_all();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        // Threads exit within ~50 ms of seeing the shutdown flag / closed sockets.
        let threads: Vec<JoinHandle<()>> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.drop_all();
    }
}
