//! The Debian package, installed as an operator would, into a clean root
//! (`dpkg --root`, its maintainer scripts run against that root through
//! `DPKG_ROOT`): binary, prompts, dashboards, the example configuration as
//! a conffile, the unit; the `callrec` system user and group, the spool and
//! state folders (0750, callrec's); the unit passes `systemd-analyze
//! verify` and rates 2.5 or lower in `systemd-analyze security`; an upgrade
//! leaves the spool and the operator's configuration alone.
//!
//! The .deb is built by `cargo deb` (scripts/test.sh does, before the
//! tests); `CALLREC_DEB` may name another. Without one the test skips
//! with a message.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_deb() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CALLREC_DEB") {
        return Some(PathBuf::from(p));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let want = format!("callrec_{}-1_", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&want))
                && p.extension().is_some_and(|x| x == "deb")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// An empty root with what dpkg and the maintainer scripts need: dpkg's
/// database and empty user and group files.
fn clean_root(root: &Path) {
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "etc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(root.join("etc/gshadow"), "root:*::\n").unwrap();
}

fn dpkg_install(root: &Path, deb: &Path) -> String {
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-confold",
            "--log=/dev/null",
            "-i",
        ])
        .arg(deb))
}

/// The id of `name` in the root's passwd or group file.
fn id_in(root: &Path, file: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(root.join("etc").join(file))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .and_then(|l| l.split(':').nth(2)?.parse().ok())
}

fn mode_owner(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn exposure(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure in {text}"));
    let after = line.split(':').nth(1).unwrap().trim();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn deb_installs_into_a_clean_root_and_upgrades_without_touching_the_spool() {
    let Some(deb) = find_deb() else {
        eprintln!(
            "SKIP deb_installs_into_a_clean_root: no target/debian/callrec_*.deb (scripts/test.sh builds it with cargo deb)"
        );
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP deb_installs_into_a_clean_root: dpkg --root needs root");
        return;
    }
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/callrec",
        "./etc/callrec/callrec.toml",
        "/callrec.service",
        "./usr/share/callrec/guidance-audio/guidance5.wav",
        "./usr/share/callrec/dashboards/callrec.json",
        "./usr/share/callrec/dashboards/callrec-alerts.yml",
        "./usr/share/doc/callrec/README.md",
    ] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    clean_root(&root);
    dpkg_install(&root, &deb);
    let conffiles =
        std::fs::read_to_string(root.join("var/lib/dpkg/info/callrec.conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/callrec/callrec.toml"),
        "{conffiles}"
    );

    // The user, the group, and their folders.
    let uid = id_in(&root, "passwd", "callrec").expect("callrec user");
    let gid = id_in(&root, "group", "callrec").expect("callrec group");
    assert!(uid < 1000 && uid > 0, "a system uid: {uid}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(":/var/lib/callrec:/usr/sbin/nologin"),
        "{passwd}"
    );
    for d in ["var/spool/callrec", "var/lib/callrec"] {
        assert_eq!(mode_owner(&root.join(d)), (0o750, uid, gid), "{d}");
    }
    assert_eq!(
        mode_owner(&root.join("etc/callrec/callrec.toml")),
        (0o640, 0, gid),
        "configuration readable by the service only"
    );
    assert_eq!(mode_owner(&root.join("usr/bin/callrec")).0, 0o755);
    let version = run(Command::new(root.join("usr/bin/callrec")).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The shipped configuration validates against the shipped prompts.
    let shipped = std::fs::read_to_string(root.join("etc/callrec/callrec.toml")).unwrap();
    let local = shipped
        .replace(
            "/usr/share/callrec",
            &root.join("usr/share/callrec").display().to_string(),
        )
        .lines()
        .filter(|l| !l.starts_with("group ="))
        .collect::<Vec<_>>()
        .join("\n");
    let local_cfg = dir.path().join("check.toml");
    std::fs::write(&local_cfg, local).unwrap();
    run(Command::new(root.join("usr/bin/callrec"))
        .args(["check-config", "--config"])
        .arg(&local_cfg));

    // The unit: verified, and hardened to 2.5 or lower.
    let unit = [
        "lib/systemd/system/callrec.service",
        "usr/lib/systemd/system/callrec.service",
    ]
    .iter()
    .map(|u| root.join(u))
    .find(|p| p.exists())
    .expect("the unit is installed");
    let rel = unit.strip_prefix(&root).unwrap();
    // What the package's target system brings and an empty root lacks: the
    // systemd targets the unit is ordered against, and kill(1) (procps,
    // a dependency) for ExecReload.
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for e in std::fs::read_dir("/usr/lib/systemd/system")
        .unwrap()
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "target") && p.is_file() {
            std::fs::copy(&p, units.join(e.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.join("bin/kill")).unwrap();
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(Path::new("/").join(rel)));
    let sec = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(Path::new("/").join(rel)));
    let level = exposure(&sec);
    assert!(level <= 2.5, "exposure {level} > 2.5:\n{sec}");
    println!("systemd-analyze security: exposure {level}");
    // The capture agent's unit: shipped beside it, verified and hardened
    // the same way; its buffer folder made by the postinst, its example
    // configuration valid.
    let agent = unit.with_file_name("callrec-forward.service");
    assert!(agent.exists(), "the capture agent's unit is installed");
    let rel_agent = agent.strip_prefix(&root).unwrap();
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(Path::new("/").join(rel_agent)));
    let sec = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(Path::new("/").join(rel_agent)));
    let level = exposure(&sec);
    assert!(level <= 2.5, "agent exposure {level} > 2.5:\n{sec}");
    assert!(root.join("var/spool/callrec-forward").is_dir());
    assert!(
        root.join("usr/share/doc/callrec/examples/forward.toml")
            .is_file()
    );
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "TimeoutStopSec=",
        "UMask=0027",
    ] {
        assert!(unit_text.contains(want), "{want} missing from the unit");
    }

    // An operator's spool and configuration: an upgrade leaves both alone.
    let spool = root.join("var/spool/callrec");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o770)).unwrap();
    let rec = spool.join("queue/acme/ready/rec.json");
    std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
    std::fs::write(&rec, b"{\"schema\":1}").unwrap();
    std::fs::set_permissions(&rec, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = root.join("etc/callrec/callrec.toml");
    let mut edited = std::fs::read_to_string(&cfg).unwrap();
    edited.push_str("\n# edited by the operator\n");
    std::fs::write(&cfg, &edited).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    dpkg_install(&root, &deb);
    assert_eq!(mode_owner(&spool).0, 0o770, "spool mode kept");
    assert_eq!(std::fs::read(&rec).unwrap(), b"{\"schema\":1}");
    assert_eq!(mode_owner(&rec).0, 0o600);
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        edited,
        "conffile kept"
    );
    assert_eq!(mode_owner(&cfg).0, 0o600, "the operator's mode kept");
    let users = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    let entries = users.lines().filter(|l| l.starts_with("callrec:")).count();
    assert_eq!(entries, 1, "{users}");
}
