//! Processes of the test bed: the real binaries, free ports, and [`Proc`], a child that dies with
//! its guard (also on panic) and with the test process (`PR_SET_PDEATHSIG`), its output in a log
//! file that outlives it.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The Kubernetes release the newest test pair is built from.
pub const K8S_VERSION: &str = "v1.37.2";

/// The folder holding the built binaries, or a panic that says how to build them.
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("ATREST_K8S_BIN") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            cache.join("atrest/k8s").join(K8S_VERSION)
        }
    };
    for b in [
        "kube-apiserver",
        "kubectl",
        "etcd",
        "etcdctl",
        "etcdutl",
        "kms-plugin",
    ] {
        if !dir.join(b).is_file() {
            panic!(
                "the test bed needs the real Kubernetes binaries, but {} is missing.\n\
                 Build them with: scripts/k8s/build.sh   (or run scripts/test.sh, which does it)",
                dir.join(b).display()
            );
        }
    }
    dir
}

/// The release the test bed's kube-apiserver was built as (`kube-apiserver --version`:
/// `Kubernetes v1.34.4` gives `v1.34.4`): the version matrix points `ATREST_K8S_BIN` at
/// folders of other releases, and tests that expect a release's behaviour ask this.
pub fn kube_apiserver_version() -> String {
    version_of("kube-apiserver", |text| {
        text.split_whitespace().find(|w| w.starts_with('v'))
    })
}

/// The Kubernetes minor of [`kube_apiserver_version`] (`34` for `v1.34.4`).
pub fn kube_minor() -> u32 {
    minor_of(&kube_apiserver_version())
}

/// The release of the test bed's etcd (`etcd --version`: `etcd Version: 3.5.21`).
pub fn etcd_version() -> String {
    version_of("etcd", |text| {
        text.lines()
            .find_map(|l| l.strip_prefix("etcd Version: "))
            .map(str::trim)
    })
}

/// The etcd minor of [`etcd_version`] (`7` for `3.7.0`).
pub fn etcd_minor() -> u32 {
    minor_of(&etcd_version())
}

/// The second number of a release (`v1.34.4` or `3.7.0`), or a panic naming it.
fn minor_of(version: &str) -> u32 {
    version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no minor in {version}"))
}

/// What `find` picks out of `<bin> --version`, or a panic naming the binary.
fn version_of(bin: &str, find: impl Fn(&str) -> Option<&str>) -> String {
    let out = Command::new(bin_dir().join(bin))
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{bin} --version: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    find(&text)
        .unwrap_or_else(|| panic!("no version in {bin} --version: {text}"))
        .to_string()
}

/// A free TCP port on 127.0.0.1, picked outside the kernel's ephemeral range.
///
/// A port from `bind(0)` comes from that range, which every outgoing connection (the
/// apiserver's own to etcd, a test's to the apiserver) also draws from: between the pick and the
/// server's bind, one of them could take it (CI saw `bind: address already in use`). A random
/// port below the range is never handed to a connection; the bind check and the set of ports
/// already given out keep parallel tests apart.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = ephemeral_range();
    // Ports [10000, low) when the range starts high enough, else above it.
    let (from, to) = if low > 12_000 {
        (10_000u32, u32::from(low))
    } else {
        (u32::from(high) + 1, 65_535)
    };
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).unwrap();
        let port = (from + u32::from_le_bytes(b) % (to - from)) as u16;
        if given.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.insert(port);
        return port;
    }
    panic!("no free port on 127.0.0.1 in {from}..{to} after 1000 tries");
}

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default if
/// unreadable.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// A child process that dies with its guard and with the test process.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    /// The child process.
    pub child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    #[allow(unsafe_code)] // A system call with no safe wrapper in std.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child (SIGKILL) and reaps it; idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last 30 lines of its log, for a panic message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the tests run as root (some then run atrest as `nobody`).
#[allow(unsafe_code)] // A system call with no safe wrapper in std.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A pseudo-terminal pair (controller, terminal) of 40×120, for runs that must see a TTY.
#[allow(unsafe_code)] // A system call with no safe wrapper in std.
pub fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the integers given; no name buffer, no
    // termios, a winsize that lives across the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

/// Sends `sig` (`libc::SIGSTOP`, `SIGCONT`, …) to `pid`: a process frozen with SIGSTOP keeps
/// its sockets open and answers nothing, as a hung node does.
#[allow(unsafe_code)] // A system call with no safe wrapper in std.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(
        rc,
        0,
        "kill -{sig} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// Polls `f` until it gives a value; the cap only catches a hang, it is no timing requirement.
pub async fn poll<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not seen in {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
