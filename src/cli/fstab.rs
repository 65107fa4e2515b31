//! `mount.fuse3` (fstab `fuse.kmsfs`, `mount -t fuse.kmsfs`) runs
//! `kmsfs SOURCE MOUNTPOINT -o OPTIONS`: turned into `kmsfs mount ...` here.

use super::Cli;

/// The command line with a mount-helper call (`kmsfs SOURCE MOUNTPOINT -o OPTIONS`)
/// turned into `kmsfs mount SOURCE MOUNTPOINT --option ...`; others unchanged.
pub(super) fn mount_helper_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    let is_sub = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == first);
    if first.starts_with('-') || is_sub || args.len() < 3 {
        return args;
    }
    let mut out: Vec<std::ffi::OsString> = vec![
        args[0].clone(),
        "mount".into(),
        args[1].clone(),
        args[2].clone(),
    ];
    let mut it = args[3..].iter();
    while let Some(a) = it.next() {
        if a != "-o" {
            continue; // -n, -s, -v from mount(8): nothing to do for us
        }
        let Some(opts) = it.next().and_then(|o| o.to_str()) else {
            break;
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            let (k, v) = o
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((o, None));
            match (k, v) {
                ("kms", Some(v)) => out.extend(["--kms".into(), v.into()]),
                ("expect_key", Some(v)) => out.extend(["--expect-key".into(), v.into()]),
                ("allow_other", None) => out.push("--allow-other".into()),
                ("log", Some(v)) => out.extend(["--log-file".into(), v.into()]),
                ("threads", Some(v)) => out.extend(["--threads".into(), v.into()]),
                ("key_cache", Some(v)) => out.extend(["--key-cache".into(), v.into()]),
                ("key_cache_ttl", Some(v)) => out.extend(["--key-cache-ttl".into(), v.into()]),
                ("dek_pool", Some(v)) => out.extend(["--dek-pool".into(), v.into()]),
                ("no_writeback_cache", None) => out.push("--no-writeback-cache".into()),
                ("open_requests", None) => out.push("--open-requests".into()),
                ("files_ahead", None) => out.push("--files-ahead".into()),
                ("no_files_ahead", None) => out.push("--no-files-ahead".into()),
                ("attr_timeout", Some(v)) => out.extend(["--attr-timeout".into(), v.into()]),
                // generic mount options: the kernel or mount(8) handles (or ignores) them
                (
                    "rw"
                    | "ro"
                    | "suid"
                    | "nosuid"
                    | "dev"
                    | "nodev"
                    | "exec"
                    | "noexec"
                    | "auto"
                    | "noauto"
                    | "user"
                    | "nouser"
                    | "users"
                    | "defaults"
                    | "nofail"
                    | "_netdev"
                    | "atime"
                    | "noatime"
                    | "relatime"
                    | "default_permissions",
                    _,
                ) => {}
                (k, _) if k.starts_with("x-") || k.starts_with("comment=") => {}
                _ => eprintln!("kmsfs: ignoring unknown mount option {o:?}"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mount_helper_args;
    use clap::Parser;

    fn parsed(opts: &str) -> Vec<String> {
        let args = ["kmsfs", "/srv/v.enc", "/srv/v", "-o", opts]
            .map(Into::into)
            .to_vec();
        let out = mount_helper_args(args);
        // what the helper makes must parse as a mount command line
        super::super::Cli::try_parse_from(&out).expect("parses");
        out.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn files_made_ahead_can_be_turned_off_from_fstab() {
        let out = parsed("kms=local:/k,no_files_ahead,rw");
        assert_eq!(out[1..4], ["mount", "/srv/v.enc", "/srv/v"]);
        assert!(out.contains(&"--no-files-ahead".to_string()), "{out:?}");
        // the old opt-in still mounts (it is the default now)
        assert!(parsed("files_ahead").contains(&"--files-ahead".to_string()));
        // both at once is refused rather than guessed
        let both = ["kmsfs", "/a", "/b", "-o", "files_ahead,no_files_ahead"].map(Into::into);
        let out = mount_helper_args(both.to_vec());
        assert!(super::super::Cli::try_parse_from(&out).is_err());
    }
}
