//! Running the mount: in the foreground (the daemon, reporting on a pipe and to systemd
//! when it is live), or by re-executing ourselves detached in the background.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// `kmsfs mount --foreground`: mounts and serves until unmounted. `ready_fd`: the pipe of
/// the parent waiting in `spawn_background`, told "ok" or "error: ..." once.
pub(super) fn mount_foreground(
    backing: &Path,
    mountpoint: &Path,
    opts: &crate::fs::MountOptions,
    ready_fd: Option<i32>,
) -> Result<()> {
    super::logging::init_logging(true);
    crate::content::tune_allocator();
    // SAFETY: the descriptor number was given to us by our parent (spawn_background),
    // which kept it open across exec for us alone; nothing else in this process owns it.
    let mut ready = ready_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let mount = match crate::fs::mount(backing, mountpoint, opts) {
        Ok(m) => m,
        Err(e) => {
            report(
                &mut ready,
                &format!("error: {}\n", e.to_string().replace('\n', " ")),
            );
            return Err(e.into());
        }
    };
    mount.run(move || {
        report(&mut ready, "ok\n");
        // systemd Type=notify: the mount answers now
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    })?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}

fn report(ready: &mut Option<OwnedFd>, msg: &str) {
    if let Some(fd) = ready.take() {
        let _ = std::fs::File::from(fd).write_all(msg.as_bytes());
    }
}

/// Re-runs this binary as a detached `mount --foreground` and waits until it reports the
/// mount live (or why it failed) on a pipe.
pub(super) fn spawn_background(
    log_file: Option<&Path>,
    args: &OnceLock<Vec<OsString>>,
) -> Result<()> {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let exe = std::env::current_exe().context("cannot find the kmsfs binary")?;
    // The daemon runs with --foreground; one that would spawn another has a bug: refuse.
    if std::env::var_os("KMSFS_MOUNT_DAEMON").is_some() {
        bail!("internal error: the mount daemon tried to start another daemon");
    }
    let mut args: Vec<OsString> = args
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
        .into_iter()
        .skip(1)
        .collect();
    args.push("--foreground".into());
    args.push("--ready-fd".into());
    args.push(wr.as_raw_fd().to_string().into());
    let stderr = match log_file {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let wr_raw = wr.as_raw_fd();
    // Root keys this process unsealed (a passphrase asked here): handed to the daemon
    // over a pipe, never through its arguments or environment.
    let keys = crate::seal::export_to_pipe()?;
    let keys_raw = keys.as_ref().map(|fd| fd.as_raw_fd());
    let mut cmd = Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // a detached daemon is not the service's main process: it must not notify
        .env_remove("NOTIFY_SOCKET")
        .env("KMSFS_MOUNT_DAEMON", "1");
    if let Some(fd) = keys_raw {
        cmd.env("KMSFS_ROOT_KEYS_FD", fd.to_string());
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (setsid, fcntl) on a descriptor the child inherited.
    unsafe {
        cmd.pre_exec(move || {
            // detach from the terminal's session; keep the pipe across exec
            libc::setsid();
            let flags = libc::fcntl(wr_raw, libc::F_GETFD);
            libc::fcntl(wr_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            if let Some(k) = keys_raw {
                let flags = libc::fcntl(k, libc::F_GETFD);
                libc::fcntl(k, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    drop(wr);
    drop(keys);
    let mut msg = String::new();
    std::fs::File::from(rd).read_to_string(&mut msg)?;
    if msg.starts_with("ok") {
        return Ok(());
    }
    let status = child.wait()?;
    match msg.strip_prefix("error: ") {
        Some(m) => bail!("{}", m.trim()),
        None => bail!("mount daemon exited ({status}) before the mount was live"),
    }
}
