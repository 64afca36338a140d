//! A node wired as Kubernetes wires one: a "node" network namespace, and "pod" namespaces
//! each joined to it by a veth pair whose host end lives in the node. Nothing of ours is
//! attached in the pods. Everything is removed on drop.
use std::{
    fs,
    io::{self, BufRead, BufReader},
    net::{IpAddr, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

pub const SVC4: &str = "10.96.0.10";
pub const SVC6: &str = "fd00:10:96::a";

/// Runs `ip` with `args`, failing with its stderr.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// One network namespace, deleted on drop (with its resolv.conf override, if any).
/// Moves the calling thread (only it: setns is per thread) into the network namespace
/// `name`.
pub fn enter(name: &str) -> io::Result<()> {
    let file = fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: a valid namespace fd; only this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> io::Result<Self> {
        // A leftover from a killed run would make `add` fail; it is ours to remove.
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Self { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command run inside the namespace (`ip netns exec`, which also bind-mounts
    /// /etc/netns/<name>/resolv.conf over /etc/resolv.conf).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn output(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.cmd(program).args(args).output()
    }

    /// The resolv.conf that programs run with [`Netns::cmd`] see.
    pub fn set_resolv_conf(&self, text: &str) -> io::Result<()> {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("resolv.conf"), text)
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates live there).
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter(&name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread panicked"))?
    }

    /// Sends one UDP datagram from inside the namespace and waits for the reply.
    pub fn udp_exchange(
        &self,
        to: IpAddr,
        port: u16,
        msg: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let name = self.name.clone();
        let msg = msg.to_vec();
        let (tx, rx) = mpsc::channel();
        // setns affects only the calling thread, so the exchange gets a thread of its own.
        std::thread::spawn(move || {
            let r = (|| {
                enter(&name)?;
                let bind: IpAddr = if to.is_ipv4() {
                    "0.0.0.0".parse().unwrap()
                } else {
                    "::".parse().unwrap()
                };
                let s = UdpSocket::bind((bind, 0))?;
                s.set_read_timeout(Some(timeout))?;
                s.send_to(&msg, (to, port))?;
                let mut buf = vec![0u8; 65535];
                let n = s.recv(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            })();
            let _ = tx.send(r);
        });
        rx.recv().map_err(io::Error::other)?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// A pod: its namespace, the host end of its veth (in the node) and its addresses.
pub struct Pod {
    pub ns: Netns,
    pub host_if: String,
    pub addr4: IpAddr,
    pub addr6: IpAddr,
}

/// The node and its pods. Service addresses live on the node's loopback.
pub struct Topology {
    // Pods first: dropping them removes the veths before the node goes.
    pub pods: Vec<Pod>,
    pub node: Netns,
    pub prefix: String,
}

impl Topology {
    /// `prefix` names the namespaces (`<prefix>-node`, `<prefix>-pod<i>`) and must be unique
    /// among concurrent users; interface names are short, as Linux wants.
    pub fn new(prefix: &str, pods: usize) -> io::Result<Self> {
        let node = Netns::new(&format!("{prefix}-node"))?;
        // On lo: this kernel has no dummy driver, and lo works the same for local delivery.
        node.ip(&["addr", "add", &format!("{SVC4}/32"), "dev", "lo"])?;
        node.ip(&["addr", "add", &format!("{SVC6}/128"), "dev", "lo", "nodad"])?;
        let mut t = Topology {
            pods: Vec::new(),
            node,
            prefix: prefix.into(),
        };
        for _ in 0..pods {
            t.add_pod()?;
        }
        Ok(t)
    }

    /// An "upstream" host joined to the node (node 10.2.0.1, upstream 10.2.0.2), for real
    /// DNS servers the daemon forwards to.
    pub fn add_upstream(&self) -> io::Result<Netns> {
        let up = Netns::new(&format!("{}-up", self.prefix))?;
        self.node.ip(&[
            "link", "add", "uph", "type", "veth", "peer", "name", "eth0", "netns", &up.name,
        ])?;
        self.node
            .ip(&["addr", "add", "10.2.0.1/24", "dev", "uph"])?;
        self.node.ip(&["link", "set", "uph", "up"])?;
        up.ip(&["addr", "add", "10.2.0.2/24", "dev", "eth0"])?;
        up.ip(&["link", "set", "eth0", "up"])?;
        Ok(up)
    }

    /// Adds a pod namespace and its veth pair; returns its index.
    pub fn add_pod(&mut self) -> io::Result<usize> {
        let i = self.pods.len() + 1;
        let ns = Netns::new(&format!("{}-pod{i}", self.prefix))?;
        let host_if = format!("veth{i}h");
        self.node.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        self.node
            .ip(&["addr", "add", &format!("10.1.{i}.1/24"), "dev", &host_if])?;
        self.node.ip(&[
            "addr",
            "add",
            &format!("fd00:1:{i}::1/64"),
            "dev",
            &host_if,
            "nodad",
        ])?;
        self.node.ip(&["link", "set", &host_if, "up"])?;
        ns.ip(&["addr", "add", &format!("10.1.{i}.2/24"), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("fd00:1:{i}::2/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &format!("10.1.{i}.1")])?;
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:1:{i}::1"),
        ])?;
        self.pods.push(Pod {
            ns,
            host_if,
            addr4: format!("10.1.{i}.2").parse().unwrap(),
            addr6: format!("fd00:1:{i}::2").parse().unwrap(),
        });
        Ok(i - 1)
    }
}

/// A bpffs mounted on a private folder in the test's mount namespace, which `ip netns
/// exec` children still see: pins the test can read while the daemon runs. Unmounted on drop.
pub struct Bpffs {
    pub dir: PathBuf,
}

impl Bpffs {
    pub fn new(name: &str) -> io::Result<Self> {
        let dir = PathBuf::from("/run").join(name);
        let _ = Command::new("umount").arg(&dir).output();
        fs::create_dir_all(&dir)?;
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .status()?
            .success();
        if !ok {
            return Err(io::Error::other(format!(
                "mount -t bpf on {}",
                dir.display()
            )));
        }
        Ok(Self { dir })
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("xdns")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The `xdns` binary: `XDNS_BIN`, or next to (or one folder above) this executable.
pub fn daemon_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XDNS_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    for dir in exe.ancestors().skip(1).take(2) {
        let p = dir.join("xdns");
        if p.is_file() {
            return p;
        }
    }
    panic!("xdns binary not found: build it (`cargo build -p dns-userspace`) or set XDNS_BIN");
}

/// A running daemon; SIGTERM on drop, then SIGKILL if it does not exit.
pub struct Daemon {
    child: Child,
    /// Lines it printed on stdout, collected by a reader thread.
    lines: mpsc::Receiver<String>,
    pub stdout: Vec<String>,
}

impl Daemon {
    /// Starts `xdns run` inside `ns` with `args` and waits for it to say `ready`.
    pub fn start(ns: &Netns, args: &[String]) -> io::Result<Self> {
        let mut d = Self::spawn(ns, args)?;
        d.wait_ready(Duration::from_secs(30))?;
        Ok(d)
    }

    /// Runs `xdns run` inside `ns` to its exit (a daemon expected to refuse to start).
    pub fn run_to_exit(ns: &Netns, args: &[String]) -> io::Result<Output> {
        ns.cmd(daemon_bin().to_str().expect("utf-8 path"))
            .arg("run")
            .args(args)
            .output()
    }

    /// Starts `xdns run` inside `ns` without waiting for it.
    pub fn spawn(ns: &Netns, args: &[String]) -> io::Result<Self> {
        Self::spawn_logging(ns, args, Stdio::inherit())
    }

    /// Like [`Daemon::start`], its log (stderr) going to `log`.
    pub fn start_logging(ns: &Netns, args: &[String], log: fs::File) -> io::Result<Self> {
        Self::start_logging_within(ns, args, log, Duration::from_secs(30))
    }

    /// Like [`Daemon::start_logging`], waiting up to `ready_within` (a large cluster's
    /// first sync).
    pub fn start_logging_within(
        ns: &Netns,
        args: &[String],
        log: fs::File,
        ready_within: Duration,
    ) -> io::Result<Self> {
        let mut d = Self::spawn_logging(ns, args, Stdio::from(log))?;
        d.wait_ready(ready_within)?;
        Ok(d)
    }

    fn spawn_logging(ns: &Netns, args: &[String], stderr: Stdio) -> io::Result<Self> {
        let mut child = ns
            .cmd(daemon_bin().to_str().expect("utf-8 path"))
            .arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()?;
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Daemon {
            child,
            lines: rx,
            stdout: Vec::new(),
        })
    }

    /// Waits until the daemon says `ready` (after its first full view and attach).
    pub fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == "ready" => return Ok(()),
                Ok(l) => self.stdout.push(l),
                Err(_) => {
                    let status = self.child.try_wait()?;
                    return Err(io::Error::other(format!(
                        "daemon not ready ({status:?}); said {:?}",
                        self.stdout
                    )));
                }
            }
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns it (lines before it are
    /// kept in `stdout`).
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Some(l),
                Ok(l) => self.stdout.push(l),
                Err(_) => return None,
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon has exited (and is reaped).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL: no clean-up of any kind runs. Returns what it printed.
    pub fn kill9(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.stdout.push(l);
        }
        std::mem::take(&mut self.stdout)
    }

    /// SIGTERM, wait for exit, and return everything it printed.
    pub fn stop(mut self) -> io::Result<Vec<String>> {
        self.terminate();
        Ok(std::mem::take(&mut self.stdout))
    }

    fn terminate(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stdout.push(l);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// Writes `text` as `<dir>/<file>`, creating the folder.
pub fn write_manifest(dir: &Path, file: &str, text: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    // Write then rename, so the daemon never reads half a file.
    let tmp = dir.join(format!(".{file}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(tmp, dir.join(file))
}
