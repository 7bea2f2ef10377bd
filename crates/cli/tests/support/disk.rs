//! A small filesystem of its own (tmpfs) mounted over a folder, to fill up for disk-full
//! tests; unmounted when dropped. Needs the right to mount (root, or CAP_SYS_ADMIN).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a folder; unmounted (lazily, if still busy) when dropped.
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `4m`) over the folder
    /// `path` (created if missing). The error says why it could not (not root, ...).
    pub fn mount(path: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(path)
            .map_err(|err| format!("creating {}: {err}", path.display()))?;
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path))?;
        Ok(SmallDisk {
            path: path.to_owned(),
        })
    }

    /// Gives the filesystem `size` in all (a tmpfs is resized in place, its files kept).
    pub fn resize(&self, size: &str) {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path))
        .unwrap_or_else(|why| panic!("resizing the tmpfs at {}: {why}", self.path.display()));
    }

    /// Bytes still free for files.
    pub fn available(&self) -> u64 {
        let output = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .nth(1)
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("df of {}: {output:?}", self.path.display()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if run(Command::new("umount").arg(&self.path)).is_err() {
            // Still busy (a process that outlived its test): detach it now, it goes
            // when the last file on it closes.
            let _ = run(Command::new("umount").arg("-l").arg(&self.path));
        }
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|err| format!("running {command:?}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
