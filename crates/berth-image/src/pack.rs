//! `berth image pack`: an image made from one program on this machine, with no registry and
//! no Dockerfile. The image has one layer holding the program at `/bin/<file name>`, its ELF
//! interpreter and the shared libraries it needs at the paths this machine's loader resolves
//! them to, plus empty `/etc` and `/tmp`; its Entrypoint is `/bin/<file name>`.
//!
//! **How the libraries are found.** A small ELF reader ([`elf_interpreter`]) reads the
//! program's `PT_INTERP`: a program without one is static and needs nothing else. For a
//! dynamic program the interpreter itself is asked: `<interp> --list <program>` is what glibc's
//! (and musl's) `ldd` runs underneath, without the `ldd` script. The loader is the authority
//! on where a library comes from (`ld.so.cache`, hwcaps subdirectories, `DT_RUNPATH` with
//! `$ORIGIN`, the distribution's multiarch directories, transitive `DT_NEEDED`s); parsing
//! `DT_NEEDED` ourselves would mean re-implementing that search and getting a second, subtly
//! different answer. In list mode the loader maps the libraries but runs none of the
//! program's code (no constructors, no `main`). Libraries a program `dlopen`s at run time
//! (NSS modules, plugins) are invisible to both approaches and are not packed.
//!
//! **How it is stored.** The image is written as an OCI-layout tarball to a temporary file and
//! loaded with [`ImageStore::import`], exactly as `berth image import` does, so it is
//! digest-checked, listed by `berth image ls` and resolved for pods like any other image.
//! Entries have owner root and a fixed mtime, so packing the same files gives the same layer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::{ImageStore, ImportedImage};

/// The mtime of every entry in a packed layer (2000-01-01), so that the layer depends only
/// on the files' contents and modes.
const ENTRY_MTIME: u64 = 946_684_800;
/// `PT_INTERP`'s path is short; a longer one is not a real program.
const MAX_INTERP_BYTES: u64 = 4096;
const PT_INTERP: u32 = 3;

/// One file of a packed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedFile {
    /// Where the content is read from on this machine (symlinks followed).
    pub source: PathBuf,
    /// Its path inside the image, relative (`bin/adder`, `lib/x86_64-linux-gnu/libc.so.6`).
    pub path: String,
}

/// What an image made from a program holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPlan {
    /// The program first, then its interpreter and libraries, in the loader's order.
    pub files: Vec<PackedFile>,
    /// The image's Entrypoint: `/bin/<file name>`.
    pub entrypoint: String,
    /// The directories the libraries are in, for `LD_LIBRARY_PATH`, so a loader without this
    /// machine's `ld.so.cache` finds them wherever the distribution keeps them.
    pub library_dirs: Vec<String>,
}

fn pack_error(program: &Path, reason: impl Into<String>) -> Error {
    Error::Pack {
        program: program.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_at(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
    let context = format!("{what} {}", path.display());
    move |source| Error::Io { context, source }
}

/// The `PT_INTERP` path of the ELF file at `path`, or `None` for a static program. Reads only
/// the ELF header, the program headers and the interpreter string.
pub fn elf_interpreter(path: &Path) -> Result<Option<PathBuf>> {
    let file = File::open(path).map_err(io_at("opening", path))?;
    let not_elf = || pack_error(path, "not an ELF executable (scripts cannot be packed)");
    let mut ident = [0u8; 64];
    let read = read_at_most(&file, &mut ident, 0).map_err(io_at("reading", path))?;
    if read < 52 || ident[..4] != *b"\x7fELF" {
        return Err(not_elf());
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(not_elf()),
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return Err(not_elf()),
    };
    let header = Fields { big };
    let (phoff, phentsize, phnum) = if wide {
        if read < 64 {
            return Err(not_elf());
        }
        (
            header.u64(&ident, 32),
            header.u16(&ident, 54),
            header.u16(&ident, 56),
        )
    } else {
        (
            u64::from(header.u32(&ident, 28)),
            header.u16(&ident, 42),
            header.u16(&ident, 44),
        )
    };
    let min_entry = if wide { 56 } else { 32 };
    if usize::from(phentsize) < min_entry {
        return Err(pack_error(path, "malformed ELF program headers"));
    }
    let mut entry = vec![0u8; usize::from(phentsize)];
    for i in 0..u64::from(phnum) {
        let at = phoff.saturating_add(i * u64::from(phentsize));
        file.read_exact_at(&mut entry, at)
            .map_err(|_| pack_error(path, "truncated ELF program headers"))?;
        if header.u32(&entry, 0) != PT_INTERP {
            continue;
        }
        let (offset, size) = if wide {
            (header.u64(&entry, 8), header.u64(&entry, 32))
        } else {
            (
                u64::from(header.u32(&entry, 4)),
                u64::from(header.u32(&entry, 16)),
            )
        };
        if size == 0 || size > MAX_INTERP_BYTES {
            return Err(pack_error(path, "malformed PT_INTERP"));
        }
        let mut raw = vec![0u8; size as usize];
        file.read_exact_at(&mut raw, offset)
            .map_err(|_| pack_error(path, "truncated PT_INTERP"))?;
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        let interp =
            std::str::from_utf8(raw).map_err(|_| pack_error(path, "PT_INTERP is not UTF-8"))?;
        if !interp.starts_with('/') {
            return Err(pack_error(
                path,
                format!("its interpreter {interp:?} is not an absolute path"),
            ));
        }
        return Ok(Some(PathBuf::from(interp)));
    }
    Ok(None)
}

/// Reads as much of `buf` as the file has from `offset`.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Fixed-size integers of an ELF file in its byte order.
struct Fields {
    big: bool,
}

impl Fields {
    fn bytes<const N: usize>(&self, data: &[u8], at: usize) -> [u8; N] {
        // Callers index within a buffer they sized for the field; a short one reads as 0.
        let mut out = [0u8; N];
        if let Some(src) = data.get(at..at + N) {
            out.copy_from_slice(src);
        }
        out
    }
    fn u16(&self, data: &[u8], at: usize) -> u16 {
        let b = self.bytes(data, at);
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }
    fn u32(&self, data: &[u8], at: usize) -> u32 {
        let b = self.bytes(data, at);
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
    fn u64(&self, data: &[u8], at: usize) -> u64 {
        let b = self.bytes(data, at);
        if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    }
}

/// Parses the loader's `--list` output into the absolute paths of the objects it loaded
/// (libraries and the loader itself), in order. The vDSO, which the kernel provides, has no
/// path and is skipped. Libraries the loader could not find are an error naming them all.
pub fn parse_loader_list(output: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    let mut missing = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // `name => /path (0xaddr)`, `name => not found`, `/path (0xaddr)`, `linux-vdso.so.1 (0x…)`.
        let (name, target) = match line.split_once(" => ") {
            Some((name, target)) => (name, target.trim()),
            None => (line, line),
        };
        if target.starts_with("not found") {
            missing.push(name.trim().to_string());
            continue;
        }
        let path = match target.rfind(" (0x") {
            Some(at) => &target[..at],
            None => target,
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        } else if line.split_once(" => ").is_some() {
            // `name => something-relative` is not a form any loader prints.
            return Err(format!("unexpected loader output line {line:?}"));
        }
        // Else a name without a path: the vDSO (the kernel maps it; there is no file).
    }
    if !missing.is_empty() {
        return Err(format!("libraries not found: {}", missing.join(", ")));
    }
    Ok(paths)
}

/// An absolute host path as a relative path inside the image, refusing `..` and the root.
fn image_path(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty() && path.is_absolute()).then(|| parts.join("/"))
}

/// What packing `program` would put into the image; runs the program's loader in list mode
/// if it has one (see the module docs).
pub fn plan(program: &Path) -> Result<PackPlan> {
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| pack_error(program, "the program's file name is not a plain name"))?;
    let meta = fs::metadata(program).map_err(io_at("reading", program))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(pack_error(program, "not an executable file"));
    }
    let mut files = vec![PackedFile {
        source: program.to_path_buf(),
        path: format!("bin/{name}"),
    }];
    let mut library_dirs: Vec<String> = Vec::new();
    if let Some(interp) = elf_interpreter(program)? {
        let output = Command::new(&interp)
            .arg("--list")
            .arg(program)
            // Resolve as the container will: without this shell's LD_LIBRARY_PATH/LD_PRELOAD.
            .env_clear()
            .output()
            .map_err(io_at("running the program's loader", &interp))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let listed = parse_loader_list(&stdout).map_err(|e| pack_error(program, e))?;
        if !output.status.success() {
            return Err(pack_error(
                program,
                format!(
                    "{} --list failed ({}): {}",
                    interp.display(),
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        // The interpreter is fetched by the kernel at exactly the PT_INTERP path, whatever
        // the loader prints for itself.
        let objects = std::iter::once(interp.clone()).chain(listed);
        for object in objects {
            let path = image_path(&object)
                .ok_or_else(|| pack_error(program, format!("odd library path {object:?}")))?;
            if files.iter().any(|f| f.path == path) {
                continue;
            }
            if object != interp
                && let Some((dir, _)) = path.rsplit_once('/')
            {
                let dir = format!("/{dir}");
                if !library_dirs.contains(&dir) {
                    library_dirs.push(dir);
                }
            }
            files.push(PackedFile {
                source: object,
                path,
            });
        }
    }
    Ok(PackPlan {
        files,
        entrypoint: format!("/bin/{name}"),
        library_dirs,
    })
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(ENTRY_MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// The layer tar of a plan: every parent directory once (0755), `etc` and `tmp` (1777) for
/// what the node agent mounts and programs expect, then the files with their own modes.
pub fn layer(plan: &PackPlan) -> Result<Vec<u8>> {
    let mut dirs = std::collections::BTreeSet::from(["etc".to_string(), "tmp".to_string()]);
    for f in &plan.files {
        let mut at = f.path.as_str();
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirs.insert(parent.to_string());
            at = parent;
        }
    }
    let tar_err = |e: io::Error| Error::Io {
        context: "building the image layer".into(),
        source: e,
    };
    let mut b = tar::Builder::new(Vec::new());
    // BTreeSet order puts every parent before its children.
    for dir in &dirs {
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, 0, mode);
        b.append_data(&mut h, dir, io::empty()).map_err(tar_err)?;
    }
    for f in &plan.files {
        let data = fs::read(&f.source).map_err(io_at("reading", &f.source))?;
        let mode = fs::metadata(&f.source)
            .map_err(io_at("reading", &f.source))?
            .permissions()
            .mode()
            & 0o777;
        // No setuid bits or group/other write into an image: nothing packed needs them.
        let mut h = header(tar::EntryType::Regular, data.len() as u64, mode & 0o755);
        b.append_data(&mut h, &f.path, &data[..]).map_err(tar_err)?;
    }
    b.into_inner().map_err(tar_err)
}

fn sha256_hex(bytes: &[u8]) -> String {
    crate::archive::hex(&Sha256::digest(bytes))
}

/// The OCI platform name of this machine's architecture.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An RFC 3339 UTC timestamp from Unix seconds (Howard Hinnant's civil-from-days).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An OCI-layout tarball of the image: `reference` (already normalized), the given layer, a
/// config with the plan's Entrypoint and environment, `created` as given.
pub fn oci_archive(
    plan: &PackPlan,
    reference: &str,
    layer: &[u8],
    created: &str,
) -> Result<Vec<u8>> {
    let mut env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    if !plan.library_dirs.is_empty() {
        env.push(format!("LD_LIBRARY_PATH={}", plan.library_dirs.join(":")));
    }
    let layer_digest = format!("sha256:{}", sha256_hex(layer));
    let json_err = |e| Error::Json {
        context: "encoding the packed image".into(),
        source: e,
    };
    let config = serde_json::to_vec(&json!({
        "created": created,
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": [plan.entrypoint],
            "Env": env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": "berth image pack"}],
    }))
    .map_err(json_err)?;
    let descriptor = |media_type: &str, data: &[u8]| json!({"mediaType": media_type, "digest": format!("sha256:{}", sha256_hex(data)), "size": data.len()});
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }))
    .map_err(json_err)?;
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": reference,
        "org.opencontainers.image.ref.name": reference,
    });
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
            .map_err(json_err)?;
    let tar_err = |e: io::Error| Error::Io {
        context: "building the image archive".into(),
        source: e,
    };
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        b.append_data(&mut h, path, data).map_err(tar_err)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&manifest[..], &config[..], layer] {
        add(&format!("blobs/sha256/{}", sha256_hex(blob)), blob)?;
    }
    b.into_inner().map_err(tar_err)
}

/// Removes the temporary archive however packing ends.
struct TempArchive(PathBuf);

impl Drop for TempArchive {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Packs `program` as the image `name` (e.g. `adder:latest`) into `store`, replacing any
/// image of that name. See the module docs for what the image holds.
pub fn pack(store: &ImageStore, program: &Path, name: &str) -> Result<ImportedImage> {
    let reference = Reference::parse(name)?.to_string();
    let plan = plan(program)?;
    let layer = layer(&plan)?;
    let modified = fs::metadata(program)
        .and_then(|m| m.modified())
        .map_err(io_at("reading", program))?;
    let created = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => rfc3339(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        Err(_) => rfc3339(0),
    };
    let archive = oci_archive(&plan, &reference, &layer, &created)?;
    drop(layer);
    // Outside the store's tmp/, which an import in another process sweeps.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("berth-pack-{}-{n}.tar", std::process::id()));
    let _ = fs::remove_file(&path);
    let guard = TempArchive(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&guard.0)
        .map_err(io_at("creating", &guard.0))?;
    file.write_all(&archive)
        .map_err(io_at("writing", &guard.0))?;
    drop(file);
    let mut imported = store.import(&guard.0)?;
    imported
        .pop()
        .ok_or_else(|| Error::Archive("the packed archive held no image".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_lists_parse_into_paths() {
        let glibc = "\tlinux-vdso.so.1 (0x00007ffd5e1f2000)\n\
            \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f897379b000)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f897321e000)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f89737ce000)\n";
        assert_eq!(
            parse_loader_list(glibc).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let musl = "\t/lib/ld-musl-x86_64.so.1 (0x7f0d5d3a1000)\n\
            \tlibc.musl-x86_64.so.1 => /lib/ld-musl-x86_64.so.1 (0x7f0d5d3a1000)\n";
        assert_eq!(parse_loader_list(musl).unwrap().len(), 2);
        // A path with a space survives (only the trailing address is cut).
        let spaced = "\tlibx.so => /opt/my libs/libx.so (0x1000)\n";
        assert_eq!(
            parse_loader_list(spaced).unwrap(),
            [PathBuf::from("/opt/my libs/libx.so")]
        );
    }

    #[test]
    fn missing_libraries_are_named() {
        let out = "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\tlibbar.so => not found\n";
        let err = parse_loader_list(out).unwrap_err();
        assert!(
            err.contains("libfoo.so.1") && err.contains("libbar.so"),
            "{err}"
        );
        assert!(parse_loader_list("\tlibx.so => relative/libx.so (0x1)\n").is_err());
    }

    #[test]
    fn image_paths_are_relative_and_never_escape() {
        assert_eq!(
            image_path(Path::new("/lib/x/libc.so.6")).as_deref(),
            Some("lib/x/libc.so.6")
        );
        assert_eq!(image_path(Path::new("/lib/./x")).as_deref(), Some("lib/x"));
        assert_eq!(image_path(Path::new("/lib/../etc/x")), None);
        assert_eq!(image_path(Path::new("/")), None);
        assert_eq!(image_path(Path::new("lib/x")), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(ENTRY_MTIME as i64), "2000-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    /// A minimal ELF: the header and program headers only, with or without a PT_INTERP.
    fn fake_elf(wide: bool, big: bool, interp: Option<&str>) -> Vec<u8> {
        let put16 = |v: u16| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let put32 = |v: u32| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let put64 = |v: u64| {
            if big {
                v.to_be_bytes().to_vec()
            } else {
                v.to_le_bytes().to_vec()
            }
        };
        let (ehsize, phentsize) = if wide { (64usize, 56usize) } else { (52, 32) };
        let interp_at = ehsize + 2 * phentsize;
        let interp_bytes = interp
            .map(|i| format!("{i}\0").into_bytes())
            .unwrap_or_default();
        let mut out = vec![
            0x7f,
            b'E',
            b'L',
            b'F',
            if wide { 2 } else { 1 },
            if big { 2 } else { 1 },
            1,
        ];
        out.resize(16, 0);
        out.extend(put16(3)); // e_type: ET_DYN
        out.extend(put16(62)); // e_machine
        out.extend(put32(1)); // e_version
        if wide {
            out.extend(put64(0)); // e_entry
            out.extend(put64(ehsize as u64)); // e_phoff
            out.extend(put64(0)); // e_shoff
        } else {
            out.extend(put32(0));
            out.extend(put32(ehsize as u32));
            out.extend(put32(0));
        }
        out.extend(put32(0)); // e_flags
        out.extend(put16(ehsize as u16));
        out.extend(put16(phentsize as u16));
        out.extend(put16(2)); // e_phnum
        out.extend(put16(0));
        out.extend(put16(0));
        out.extend(put16(0));
        assert_eq!(out.len(), ehsize);
        // A PT_LOAD first, then PT_INTERP (or a second PT_LOAD for a static program).
        for (i, kind) in [1u32, if interp.is_some() { PT_INTERP } else { 1 }]
            .into_iter()
            .enumerate()
        {
            let start = out.len();
            out.extend(put32(kind));
            let (offset, size) = if i == 1 {
                (interp_at as u64, interp_bytes.len() as u64)
            } else {
                (0, 0)
            };
            if wide {
                out.extend(put32(0)); // p_flags
                out.extend(put64(offset));
                out.extend(put64(0));
                out.extend(put64(0));
                out.extend(put64(size));
                out.extend(put64(size));
                out.extend(put64(1));
            } else {
                out.extend(put32(offset as u32));
                out.extend(put32(0));
                out.extend(put32(0));
                out.extend(put32(size as u32));
                out.extend(put32(size as u32));
                out.extend(put32(0));
                out.extend(put32(1));
            }
            assert_eq!(out.len() - start, phentsize);
        }
        out.extend(interp_bytes);
        out
    }

    #[test]
    fn the_interpreter_is_read_in_every_elf_shape() {
        let dir = tempfile::tempdir().unwrap();
        for wide in [false, true] {
            for big in [false, true] {
                let path = dir.path().join("prog");
                fs::write(&path, fake_elf(wide, big, Some("/lib/ld.so.1"))).unwrap();
                assert_eq!(
                    elf_interpreter(&path).unwrap(),
                    Some(PathBuf::from("/lib/ld.so.1")),
                    "wide {wide} big {big}"
                );
                fs::write(&path, fake_elf(wide, big, None)).unwrap();
                assert_eq!(elf_interpreter(&path).unwrap(), None);
            }
        }
    }

    #[test]
    fn non_elf_and_broken_elf_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(elf_interpreter(&path), Err(Error::Pack { .. })));
        let mut truncated = fake_elf(true, false, Some("/lib/ld.so.1"));
        truncated.truncate(70);
        fs::write(&path, truncated).unwrap();
        assert!(matches!(elf_interpreter(&path), Err(Error::Pack { .. })));
        let relative = fake_elf(true, false, Some("ld.so"));
        fs::write(&path, relative).unwrap();
        assert!(matches!(elf_interpreter(&path), Err(Error::Pack { .. })));
    }

    /// This test binary is itself a dynamic program of this machine: its plan has the loader
    /// and libc, and the layer has their parents and the program at bin/.
    #[test]
    fn a_real_program_plans_its_loader_and_libraries() {
        let exe = std::env::current_exe().unwrap();
        let plan = plan(&exe).unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(plan.entrypoint, format!("/bin/{name}"));
        assert_eq!(plan.files[0].path, format!("bin/{name}"));
        let interp = elf_interpreter(&exe)
            .unwrap()
            .expect("a dynamic test binary");
        assert_eq!(plan.files[1].path, image_path(&interp).unwrap());
        assert!(
            plan.files.iter().any(|f| f.path.contains("libc.so")),
            "{plan:?}"
        );
        assert!(!plan.library_dirs.is_empty());
        let layer = layer(&plan).unwrap();
        let mut archive = tar::Archive::new(&layer[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        let bin = names
            .iter()
            .position(|n| n.trim_end_matches('/') == "bin")
            .unwrap();
        let prog = names
            .iter()
            .position(|n| *n == format!("bin/{name}"))
            .unwrap();
        assert!(bin < prog, "{names:?}");
        assert!(names.iter().any(|n| n.trim_end_matches('/') == "tmp"));
        // Packing the same files twice gives the same layer.
        assert_eq!(layer, super::layer(&plan).unwrap());
    }

    #[test]
    fn refuses_what_is_not_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        fs::write(&path, "x").unwrap();
        assert!(matches!(plan(&path), Err(Error::Pack { .. })));
        assert!(matches!(plan(dir.path()), Err(Error::Pack { .. })));
        assert!(matches!(
            plan(&dir.path().join("missing")),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn packs_into_the_store_like_an_import() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images")).unwrap();
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_string();
        let imported = pack(&store, &exe, "packed:v1").unwrap();
        assert_eq!(imported.references, ["docker.io/library/packed:v1"]);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].reference, "docker.io/library/packed:v1");
        let resolved = store.resolve("packed:v1").unwrap();
        let config = resolved.config.config().as_ref().unwrap();
        assert_eq!(
            config.entrypoint().as_deref(),
            Some(&[format!("/bin/{name}")][..])
        );
        assert!(
            config
                .env()
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.starts_with("LD_LIBRARY_PATH=/"))
        );
        let layer = &resolved.layer_dirs[0];
        let packed = fs::read(layer.join("bin").join(&name)).unwrap();
        assert_eq!(packed, fs::read(&exe).unwrap());
        // Packing again under the same name replaces it and leaves nothing behind.
        pack(&store, &exe, "packed:v1").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(pack(&store, &exe, "Not A Name").is_err());
    }
}
