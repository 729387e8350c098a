//! Binary upgrade without dropping a request. SIGUSR2 starts the binary at the path this
//! process was started from (where the package manager or `install` put the new one; the path
//! as given, so a repointed symlink is followed) with the same arguments. The new process
//! connects back over an abstract Unix socket with a random name it finds in its environment;
//! only a connection from that child's PID (`SO_PEERCRED`) is served. It receives with
//! `SCM_RIGHTS`
//! every listening socket — the proxy listeners' (one per worker with `SO_REUSEPORT`) and the
//! admin listener's — and the SQLite node lock. It starts on them and says it is serving; then
//! this process drains as at SIGTERM and exits. Nothing is closed in between, so connections
//! that arrive meanwhile queue on the shared sockets for whichever process accepts them: none
//! is refused. A new process that exits, or does not say it is serving within
//! [`READY_TIMEOUT`], is stopped and this one carries on serving.
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) the new process tells the manager its
//! PID with `MAINPID=` and `READY=1` ([`notify`]).

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Names the abstract socket the new process connects back to; only the old process sets it.
pub const ENV: &str = "PORTCULLIS_UPGRADE_FROM";
/// How long the new process has to open the store, bind what it must and start serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most descriptors one hand-over carries (the kernel allows 253 in one message).
const MAX_FDS: usize = 200;
const MAGIC: &str = "portcullis-upgrade/1";

/// Why an upgrade did not happen; the old process keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no random source for the hand-over socket's name")]
    Random,
    #[error("cannot open the hand-over socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot start {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("the new process exited before it was serving ({0}); see its log lines above")]
    Exited(std::process::ExitStatus),
    #[error("the new process was not serving within {0:?}; it was stopped")]
    Timeout(Duration),
    #[error("hand-over to the new process failed: {0}")]
    Handover(std::io::Error),
    #[error("the new process went away before it said it was serving")]
    GaveUp,
    #[error("an upgrade is for `portcullis serve`; this process runs something else")]
    NotServe,
}

/// What a new process receives from the one it replaces.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("cannot reach the process being upgraded ({ENV}): {0}")]
    Connect(std::io::Error),
    #[error("reading the hand-over: {0}")]
    Read(std::io::Error),
    #[error("the hand-over is malformed: {0}")]
    Malformed(String),
}

/// What to run for an upgrade: this process's binary path and arguments, read at start (the
/// path names the new binary once it is replaced; `/proc/self/exe` would still name the old).
pub struct Upgrader {
    exe: Option<PathBuf>,
    args: Vec<OsString>,
}

/// The descriptors an upgrade hands over, borrowed from their owners.
pub struct Handoff<'a> {
    pub sockets: Vec<BorrowedFd<'a>>,
    pub lock: Option<BorrowedFd<'a>>,
}

/// The new process, serving: kept until this one exits (its end of the link closing is how
/// the new process learns that this one is gone).
pub struct Successor {
    pub pid: u32,
    _link: tokio::net::UnixStream,
}

/// Kills the new process unless it made it to serving: the upgrade failed, or was given up
/// because this process was told to stop meanwhile (the future dropped).
struct Unless(Option<tokio::process::Child>);

impl Drop for Unless {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

impl Upgrader {
    /// `serve`: this process can be upgraded. The demo cannot (its arguments start a demo).
    pub fn new(serve: bool) -> Self {
        Self {
            exe: serve.then(started_from).flatten(),
            args: std::env::args_os().skip(1).collect(),
        }
    }

    /// Starts the new process and hands `what` to it; `Ok` once it says it is serving.
    pub async fn run(&self, what: &Handoff<'_>) -> Result<Successor, UpgradeError> {
        let Some(exe) = &self.exe else {
            return Err(UpgradeError::NotServe);
        };
        let name = format!(
            "portcullis-upgrade-{}-{}",
            std::process::id(),
            base::seal::random_token(12).map_err(|_| UpgradeError::Random)?
        );
        let listener = UnixAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::UnixListener::from_std)
            .map_err(UpgradeError::Socket)?;
        let child = tokio::process::Command::new(exe)
            .args(&self.args)
            .env(ENV, &name)
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                exe: exe.display().to_string(),
                source,
            })?;
        let pid = child.id().unwrap_or(0);
        let mut child = Unless(Some(child));
        tracing::info!(pid, exe = %exe.display(), "upgrade: new process started; handing the listening sockets over");
        let handshake = async {
            use tokio::io::AsyncReadExt;
            let mut stream = loop {
                let (stream, _) = listener.accept().await.map_err(UpgradeError::Handover)?;
                let peer =
                    rustix::net::sockopt::socket_peercred(&stream).map_err(|e| UpgradeError::Handover(e.into()))?;
                let peer = peer.pid.as_raw_nonzero().get();
                if u32::try_from(peer).ok() == Some(pid) {
                    break stream;
                }
                // The name is random, not secret (/proc/net/unix lists it): another local
                // process may connect; it gets nothing.
                tracing::warn!(
                    peer,
                    "upgrade: a process other than the new one connected to the hand-over socket; dropped"
                );
            };
            send(&stream, what).await.map_err(UpgradeError::Handover)?;
            let mut ready = [0u8; 6];
            match stream.read_exact(&mut ready).await {
                Ok(_) if &ready == b"ready\n" => Ok(stream),
                Ok(_) | Err(_) => Err(UpgradeError::GaveUp),
            }
        };
        let exited = async {
            match child.0.as_mut() {
                Some(c) => c.wait().await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            done = handshake => done,
            status = exited => Err(match status {
                Ok(s) => UpgradeError::Exited(s),
                Err(e) => UpgradeError::Handover(e),
            }),
            () = tokio::time::sleep(READY_TIMEOUT) => Err(UpgradeError::Timeout(READY_TIMEOUT)),
        };
        match outcome {
            Ok(link) => {
                // It serves: systemd follows it from now on (it says so itself too), and it
                // must outlive this process.
                notify(&format!("MAINPID={pid}"));
                child.0 = None;
                Ok(Successor { pid, _link: link })
            }
            Err(e) => {
                // It may be half started: it must not serve beside this process.
                if let Some(mut c) = child.0.take() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
                Err(e)
            }
        }
    }
}

/// The kinds of the descriptors as text, with the first batch of descriptors attached; the
/// rest [`MAX_FDS`] at a time, each with a `+` (on a stream socket each batch stays with the
/// bytes it was sent with).
async fn send(stream: &tokio::net::UnixStream, what: &Handoff<'_>) -> std::io::Result<()> {
    let mut kinds = vec!["tcp"; what.sockets.len()];
    let mut fds = what.sockets.clone();
    if let Some(lock) = what.lock {
        kinds.push("sqlite-lock");
        fds.push(lock);
    }
    let first = format!("{MAGIC}\n{}\n", kinds.join(" "));
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    for (i, batch) in fds.chunks(MAX_FDS).enumerate() {
        let text = if i == 0 { first.as_str() } else { "+" };
        stream
            .async_io(tokio::io::Interest::WRITABLE, || {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !control.push(SendAncillaryMessage::ScmRights(batch)) {
                    return Err(std::io::Error::other("too many descriptors for one message"));
                }
                let sent = rustix::net::sendmsg(
                    stream,
                    &[IoSlice::new(text.as_bytes())],
                    &mut control,
                    SendFlags::empty(),
                )?;
                if sent == text.len() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("the hand-over message was cut short"))
                }
            })
            .await?;
    }
    Ok(())
}

/// The path this process was started from, as given (`argv[0]`, made absolute against the
/// directory it started in), not resolved: a symlink repointed at a new version is followed.
/// A bare name (found through `PATH`) falls back to the resolved executable.
fn started_from() -> Option<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.components().count() > 1 {
        Some(std::env::current_dir().ok()?.join(argv0))
    } else {
        std::env::current_exe().ok()
    }
}

/// One message of the hand-over: its text; its descriptors are added to `fds`.
fn receive_batch(link: &UnixStream, fds: &mut Vec<OwnedFd>) -> Result<String, ReceiveError> {
    let mut text = [0u8; 4096];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        link,
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| ReceiveError::Read(e.into()))?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Err(ReceiveError::Read(std::io::ErrorKind::UnexpectedEof.into()));
    }
    std::str::from_utf8(&text[..got.bytes])
        .map(str::to_string)
        .map_err(|e| ReceiveError::Malformed(e.to_string()))
}

/// What this process received from the one it replaces; empty when it was started afresh.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<TcpListener>,
    pub lock: Option<std::fs::File>,
    link: Option<UnixStream>,
}

impl Inherited {
    /// Connects to the process being upgraded when [`ENV`] names it, and takes what it hands
    /// over. The variable is removed, so that nothing this process starts sees it.
    pub fn receive() -> Result<Self, ReceiveError> {
        let Some(name) = std::env::var_os(ENV) else {
            return Ok(Self::default());
        };
        std::env::remove_var(ENV);
        let link = UnixAddr::from_abstract_name(name.as_encoded_bytes())
            .and_then(|a| UnixStream::connect_addr(&a))
            .map_err(ReceiveError::Connect)?;
        link.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(ReceiveError::Read)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        let text = receive_batch(&link, &mut fds)?;
        let kinds = parse(&text).map_err(ReceiveError::Malformed)?;
        while fds.len() < kinds.len() {
            let before = fds.len();
            if receive_batch(&link, &mut fds)? != "+" || fds.len() == before {
                return Err(ReceiveError::Malformed("a further batch without descriptors".into()));
            }
        }
        if kinds.len() != fds.len() {
            return Err(ReceiveError::Malformed(format!(
                "{} descriptors announced, {} received",
                kinds.len(),
                fds.len()
            )));
        }
        let mut me = Self {
            link: Some(link),
            ..Self::default()
        };
        for (kind, fd) in kinds.into_iter().zip(fds) {
            match kind {
                Kind::Tcp => {
                    let socket = TcpListener::from(fd);
                    socket
                        .local_addr()
                        .map_err(|e| ReceiveError::Malformed(format!("not a TCP socket: {e}")))?;
                    me.sockets.push(socket);
                }
                Kind::Lock => me.lock = Some(std::fs::File::from(fd)),
            }
        }
        Ok(me)
    }

    /// Started by an upgrade.
    pub fn is_upgrade(&self) -> bool {
        self.link.is_some()
    }

    /// The inherited listening socket for `address`, if there is one (the admin listener).
    pub fn take(&mut self, address: std::net::SocketAddr) -> Option<TcpListener> {
        let i = self
            .sockets
            .iter()
            .position(|s| s.local_addr().is_ok_and(|a| a == address))?;
        Some(self.sockets.swap_remove(i))
    }

    /// An inherited socket for `address` exists.
    pub fn has(&self, address: std::net::SocketAddr) -> bool {
        self.sockets.iter().any(|s| s.local_addr().is_ok_and(|a| a == address))
    }

    /// The remaining sockets (the proxy listeners'), for the data plane.
    pub fn take_sockets(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.sockets)
    }

    /// This process is serving: tells the process it replaces (which then drains and exits)
    /// and systemd. `parent_gone` runs once the replaced process has exited.
    pub fn serving(self, parent_gone: impl FnOnce() + Send + 'static) {
        let Some(mut link) = self.link else {
            notify("READY=1");
            return;
        };
        // systemd first: once told, the old process may exit at once, and the manager must
        // know by then which process is the service's now.
        notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
        if let Err(e) = link.write_all(b"ready\n") {
            tracing::error!(error = %e, "upgrade: cannot tell the old process that this one is serving");
        }
        let watch = std::thread::Builder::new()
            .name("portcullis-upgrade".into())
            .spawn(move || {
                let _ = link.set_read_timeout(None);
                let mut sink = [0u8; 16];
                // The old process never writes; its end closes when it exits.
                while matches!(link.read(&mut sink), Ok(n) if n > 0) {}
                tracing::info!("upgrade: the old process has exited");
                parent_gone();
            });
        if let Err(e) = watch {
            tracing::warn!(error = %e, "upgrade: cannot watch for the old process's exit");
        }
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    Tcp,
    Lock,
}

fn parse(text: &str) -> Result<Vec<Kind>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!("it does not start with {MAGIC:?}"));
    }
    let kinds = lines.next().unwrap_or_default();
    kinds
        .split_whitespace()
        .map(|k| match k {
            "tcp" => Ok(Kind::Tcp),
            "sqlite-lock" => Ok(Kind::Lock),
            other => Err(format!("unknown descriptor kind {other:?}")),
        })
        .collect()
}

/// Tells systemd (`$NOTIFY_SOCKET`, a path or an abstract `@name`) `state`; nothing when the
/// variable is unset. A failure is logged: the unit's start then times out, which says why.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&target, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn notify_to(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let bytes = target.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(target)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_over_text_is_checked() {
        assert_eq!(
            parse(&format!("{MAGIC}\ntcp sqlite-lock tcp\n")).unwrap(),
            vec![Kind::Tcp, Kind::Lock, Kind::Tcp]
        );
        assert_eq!(parse(&format!("{MAGIC}\n\n")).unwrap(), vec![]);
        assert!(parse("portcullis-upgrade/0\ntcp\n").is_err());
        assert!(parse(&format!("{MAGIC}\ntcp udp\n")).unwrap_err().contains("udp"));
        assert!(parse("").is_err());
    }

    #[test]
    fn systemd_is_told_on_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "MAINPID=42\nREADY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42\nREADY=1");
        let name = format!("portcullis-test-{}", std::process::id());
        let abstract_manager =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = abstract_manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
