//! Where a bare program name is on PATH, remembered like a shell's `hash`. Left to itself,
//! the child searches PATH by trying `execve` in each directory in turn (nine tries for
//! `true` on a typical PATH); with the program's full path it makes one, and the parent pays
//! one `access` per start to see the remembered file is still there.
//!
//! Only a child that inherits conc's own PATH is looked up here (one whose `env` option sets
//! or removes PATH, or that clears the environment, is left to the usual search), so the
//! search that is skipped is exactly the one the child would have made. A PATH with a
//! relative entry depends on the child's directory and is never looked up. As with a shell's
//! `hash`, a program installed later in an earlier PATH directory is not seen until the
//! remembered one goes away or PATH changes.

use nix::unistd::{access, AccessFlags};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Full paths by (PATH, name).
static FOUND: Mutex<Option<HashMap<(OsString, String), PathBuf>>> = Mutex::new(None);

/// The file `name` starts when searched for on `path`, if the search can be done here.
pub fn resolve(name: &str, path: &OsStr) -> Option<PathBuf> {
    if name.contains('/') || name.is_empty() {
        return None;
    }
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    let table = found.get_or_insert_with(HashMap::new);
    let key = (path.to_os_string(), name.to_string());
    if let Some(hit) = table.get(&key) {
        // One syscall: it was an executable file when found, so only whether it is still
        // there (and still executable) is in question.
        if access(hit, AccessFlags::X_OK).is_ok() {
            return Some(hit.clone());
        }
        table.remove(&key);
    }
    let hit = search(name, path)?;
    table.insert(key, hit.clone());
    Some(hit)
}

/// Forget where `name` was: starting it from there failed.
pub fn forget(name: &str, path: &OsStr) {
    if let Some(table) = FOUND.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        table.remove(&(path.to_os_string(), name.to_string()));
    }
}

/// The first executable regular file called `name` in PATH's directories, as `execvp` would
/// find it: a directory entry that is missing, not a file or not executable is passed over.
/// None when nothing is found (the child's own search then reports it) or a relative entry
/// comes first.
fn search(name: &str, path: &OsStr) -> Option<PathBuf> {
    for dir in std::env::split_paths(path) {
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(p) else { return false };
    meta.is_file() && meta.permissions().mode() & 0o111 != 0 && access(p, AccessFlags::X_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tool(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("conc-path-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("a")).unwrap();
        fs::create_dir_all(d.join("b")).unwrap();
        d
    }

    #[test]
    fn finds_the_first_executable_and_skips_the_rest() {
        let d = scratch("first");
        tool(&d.join("a"), "t", 0o644);
        fs::create_dir(d.join("a").join("sub")).unwrap();
        let want = tool(&d.join("b"), "t", 0o755);
        tool(&d.join("b"), "sub", 0o755);
        let path = std::env::join_paths([d.join("a"), d.join("b")]).unwrap();
        assert_eq!(resolve("t", &path), Some(want));
        assert_eq!(resolve("sub", &path), Some(d.join("b").join("sub")));
        assert_eq!(resolve("missing", &path), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_vanished_program_is_searched_for_again() {
        let d = scratch("vanish");
        let first = tool(&d.join("a"), "t", 0o755);
        let second = tool(&d.join("b"), "t", 0o755);
        let path = std::env::join_paths([d.join("a"), d.join("b")]).unwrap();
        assert_eq!(resolve("t", &path), Some(first.clone()));
        fs::remove_file(&first).unwrap();
        assert_eq!(resolve("t", &path), Some(second.clone()));
        fs::remove_file(&second).unwrap();
        assert_eq!(resolve("t", &path), None);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn paths_and_relative_entries_are_left_to_the_child() {
        let d = scratch("relative");
        tool(&d.join("b"), "t", 0o755);
        let path = std::env::join_paths([PathBuf::from("a"), d.join("b")]).unwrap();
        assert_eq!(resolve("t", &path), None);
        let empty_entry = OsString::from(format!(":{}", d.join("b").display()));
        assert_eq!(resolve("t", &empty_entry), None);
        let abs = std::env::join_paths([d.join("b")]).unwrap();
        assert_eq!(resolve("./t", &abs), None);
        assert_eq!(resolve(&d.join("b").join("t").display().to_string(), &abs), None);
        fs::remove_dir_all(&d).unwrap();
    }
}
