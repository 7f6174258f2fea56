//! `panda-server datasets`: the operator's side of the local dataset catalogue, which stands
//! in for Rucio: `add` records files as a dataset (name, scope, GUID, size, adler32) and, with
//! `--se`, copies them onto the local storage element where the pilot's `mv` copytool finds
//! them (`<se>/<scope fields>/<md5[0:2]>/<md5[2:4]>/<lfn>`, the md5 of `scope:lfn`, as Rucio's
//! deterministic paths); `list` shows the datasets, or one dataset's files.
//!
//! Who may call it: whoever can read the configuration and its password file (root and the
//! `panda` group). Inputs are the operator's own files; names are checked as the catalogue
//! needs them.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use panda_store::{CatalogFile, Store};

/// Files one `datasets add` records at most.
pub const MAX_FILES_PER_ADD: usize = 100_000;

/// Adler-32 of a file, streamed, with its size.
fn adler32_and_size(path: &Path) -> std::io::Result<(u32, u64)> {
    let mut file = std::fs::File::open(path)?;
    let (mut a, mut b) = (1u32, 0u32);
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        for chunk in buffer[..n].chunks(5552) {
            for byte in chunk {
                a += u32::from(*byte);
                b += a;
            }
            a %= 65521;
            b %= 65521;
        }
    }
    Ok(((b << 16) | a, size))
}

/// Where Rucio's deterministic layout (and the pilot's `mv` copytool) puts a file.
pub fn se_path(se: &Path, scope: &str, lfn: &str) -> anyhow::Result<PathBuf> {
    panda_service::catalog::se_path(se, scope, lfn)
        .ok_or_else(|| anyhow::anyhow!("no storage path for {scope}:{lfn}"))
}

fn check_name(what: &str, name: &str, max: usize) -> anyhow::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    anyhow::ensure!(
        plain,
        "{what} {name:?} must be 1 to {max} letters, digits, '.', '_', '-' or ':' (no leading dot, no '..')"
    );
    Ok(())
}

/// `datasets add`: records `files` as (part of) `dataset` in `scope`, copying them to the
/// storage element `se` when given. Returns the report it prints.
pub async fn add(
    store: &Store,
    dataset: &str,
    scope: &str,
    se: Option<&Path>,
    files: &[PathBuf],
) -> anyhow::Result<String> {
    check_name("the dataset", dataset.trim_end_matches('/'), 255)?;
    check_name("the scope", scope, 30)?;
    anyhow::ensure!(!files.is_empty(), "name at least one file");
    anyhow::ensure!(
        files.len() <= MAX_FILES_PER_ADD,
        "{} files; at most {MAX_FILES_PER_ADD} per call",
        files.len()
    );
    let mut entries = Vec::with_capacity(files.len());
    for file in files {
        let lfn = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} has no file name", file.display()))?
            .to_string();
        check_name("the file name", &lfn, 255)?;
        let (adler, size) = adler32_and_size(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let path = match se {
            Some(se) => {
                let target = se_path(se, scope, &lfn)?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::copy(file, &target).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot copy {} to {}: {e}",
                        file.display(),
                        target.display()
                    )
                })?;
                target
            }
            None => std::fs::canonicalize(file)?,
        };
        entries.push(CatalogFile {
            dataset: dataset.trim_end_matches('/').to_string(),
            scope: scope.to_string(),
            lfn,
            guid: panda_service::task_processing::new_guid(),
            fsize: i64::try_from(size).unwrap_or(i64::MAX),
            checksum: Some(format!("ad:{adler:08x}")),
            path: path.display().to_string(),
        });
    }
    let added = store.add_catalog_files(&entries).await?;
    Ok(format!(
        "{dataset}: {added} files added, {} already there\n",
        entries.len() as u64 - added
    ))
}

/// `datasets list`: the datasets with their file counts and sizes, or one dataset's files.
pub async fn list(store: &Store, dataset: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    match dataset {
        None => {
            writeln!(out, "DATASET\tFILES\tBYTES")?;
            for d in store.catalog_datasets(10_000).await? {
                writeln!(out, "{}\t{}\t{}", d.name, d.files, d.bytes)?;
            }
        }
        Some(name) => {
            writeln!(out, "LFN\tSCOPE\tGUID\tSIZE\tCHECKSUM\tPATH")?;
            for f in store
                .catalog_files(name.trim_end_matches('/'), 100_000)
                .await?
            {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    f.lfn,
                    f.scope,
                    f.guid,
                    f.fsize,
                    f.checksum.as_deref().unwrap_or("-"),
                    f.path
                )?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adler32_is_zlibs() {
        let dir = std::env::temp_dir().join(format!("panda-adler-{}", std::process::id()));
        std::fs::write(&dir, b"Wikipedia").expect("write");
        // The well-known Adler-32 of "Wikipedia".
        assert_eq!(adler32_and_size(&dir).expect("read"), (0x11E6_0398, 9));
        std::fs::remove_file(&dir).ok();
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("d", "user.tester.in1", 255).is_ok());
        for bad in ["", "../x", ".x", "a b", "a/b"] {
            assert!(check_name("d", bad, 255).is_err(), "{bad}");
        }
    }
}
