//! Every effect on the machine that needs root or a real kernel, behind [`Host`]: running
//! e2fsprogs, loop devices, mounts. [`Linux`] does them; [`Recording`] records them and keeps
//! a pretend state of loop devices and mounts, so the logic of [`crate::local`] (idempotency,
//! refusals, order of steps) is unit-tested without root. Plain file operations in the data
//! dir (directories, sparse files, renames) are not behind the seam: tests run them for real
//! in a temporary directory.
//!
//! Loop devices are attached with `LOOP_CONFIGURE` and the autoclear flag: the kernel
//! detaches the device by itself when its last user closes it, which is the mount once
//! [`Host::attach_and_mount`] returns. So unmounting is all it takes to free a device, and a
//! failed mount (or a crash between attach and mount) cannot leak one.

use std::ffi::{OsStr, c_void};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use linux_raw_sys::loop_device::{
    LO_FLAGS_AUTOCLEAR, LOOP_CLR_FD, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LOOP_SET_CAPACITY,
    loop_config, loop_info64,
};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::ioctl::{Ioctl, IoctlOutput, NoArg, Opcode, Setter};
use rustix::mount::{MountFlags, UnmountFlags};

use crate::StorageError;
use crate::mountinfo::{self, Mount};

/// A tool's exit code and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub output: String,
}

/// A loop device bound to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub device: (u32, u32),
}

/// The machine effects the storage layer needs.
pub trait Host: Send + Sync {
    /// Runs `program` (an e2fsprogs tool) to completion.
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Outcome, StorageError>;
    /// The mounts this process sees.
    fn mounts(&self) -> Result<Vec<Mount>, StorageError>;
    /// The loop device `image` is bound to, if any.
    fn loop_device(&self, image: &Path) -> Result<Option<LoopDevice>, StorageError>;
    /// Binds `image` to a free loop device (autoclear) and mounts it as ext4 at `target`.
    fn attach_and_mount(&self, image: &Path, target: &Path) -> Result<(), StorageError>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> Result<(), StorageError>;
    /// Unbinds `device` (for a device left bound without a mount).
    fn detach(&self, device: &LoopDevice) -> Result<(), StorageError>;
    /// Makes `device` see its image's current size.
    fn refresh_capacity(&self, device: &LoopDevice) -> Result<(), StorageError>;
}

/// The real machine (root).
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

/// `LOOP_CTL_GET_FREE`: the number of a free loop device (made if none is free), returned as
/// the ioctl's result, which rustix's ready-made patterns discard.
struct GetFree;

// SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE as Opcode
    }

    fn as_ptr(&mut self) -> *mut c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<u32> {
        u32::try_from(out).map_err(|_| Errno::INVAL)
    }
}

fn open_rw(path: &Path) -> Result<File, StorageError> {
    let fd = rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| StorageError::io("opening", path)(e.into()))?;
    Ok(File::from(fd))
}

impl Linux {
    /// Binds `image` to a free loop device with autoclear; the device stays bound while the
    /// returned file (or anything else) holds it open.
    fn attach(image: &Path) -> Result<(PathBuf, File), StorageError> {
        let backing = open_rw(image)?;
        let control = open_rw(Path::new("/dev/loop-control"))?;
        let mut info: loop_info64 = zeroed_info();
        info.lo_flags = LO_FLAGS_AUTOCLEAR as u32;
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(info.lo_file_name.len() - 1);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&backing);
        let config = loop_config {
            fd: u32::try_from(fd).map_err(|_| StorageError::Task("negative fd".into()))?,
            block_size: 0,
            info,
            __reserved: [0; 8],
        };
        // Another process may take the free device between asking and binding (EBUSY): ask again.
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE on the loop control device.
            let number =
                unsafe { rustix::ioctl::ioctl(control.as_fd(), GetFree) }.map_err(|e| {
                    StorageError::io("finding a free loop device", "/dev/loop-control")(e.into())
                })?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = open_rw(&path)?;
            // SAFETY: LOOP_CONFIGURE takes a pointer to a loop_config, which this is.
            let configure =
                unsafe { Setter::<{ LOOP_CONFIGURE as Opcode }, loop_config>::new(config) };
            match unsafe { rustix::ioctl::ioctl(device.as_fd(), configure) } {
                Ok(()) => return Ok((path, device)),
                Err(Errno::BUSY) => {}
                Err(e) => return Err(StorageError::io("binding a loop device", path)(e.into())),
            }
        }
        Err(StorageError::Busy {
            volume: image.display().to_string(),
            why: "no loop device could be bound".into(),
        })
    }
}

fn zeroed_info() -> loop_info64 {
    loop_info64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

impl Host for Linux {
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Outcome, StorageError> {
        let output = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| StorageError::Tool {
                program: program.into(),
                status: "not started".into(),
                output: e.to_string(),
            })?;
        let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        let code = output.status.code().ok_or_else(|| StorageError::Tool {
            program: program.into(),
            status: output.status.to_string(),
            output: text.clone(),
        })?;
        Ok(Outcome { code, output: text })
    }

    fn mounts(&self) -> Result<Vec<Mount>, StorageError> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(StorageError::io("reading", path))?;
        Ok(mountinfo::parse(&text))
    }

    fn loop_device(&self, image: &Path) -> Result<Option<LoopDevice>, StorageError> {
        let image = match image.canonicalize() {
            Ok(image) => image,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("resolving", image)(e)),
        };
        let sys = Path::new("/sys/block");
        let entries = std::fs::read_dir(sys).map_err(StorageError::io("listing", sys))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
                continue;
            };
            // No backing_file: the device is not bound.
            let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            else {
                continue;
            };
            if Path::new(backing.trim_end_matches('\n')) != image {
                continue;
            }
            let dev = std::fs::read_to_string(entry.path().join("dev")).unwrap_or_default();
            let device = dev
                .trim()
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .unwrap_or((0, 0));
            return Ok(Some(LoopDevice {
                path: Path::new("/dev").join(name),
                device,
            }));
        }
        Ok(None)
    }

    fn attach_and_mount(&self, image: &Path, target: &Path) -> Result<(), StorageError> {
        let (device, held) = Linux::attach(image)?;
        let mounted = rustix::mount::mount(&device, target, "ext4", MountFlags::empty(), None)
            .map_err(|e| StorageError::io("mounting", target)(e.into()));
        // The mount (if any) now holds the device; dropping ours lets autoclear free it with
        // the mount, or at once if the mount failed.
        drop(held);
        mounted
    }

    fn unmount(&self, target: &Path) -> Result<(), StorageError> {
        rustix::mount::unmount(target, UnmountFlags::empty())
            .map_err(|e| StorageError::io("unmounting", target)(e.into()))
    }

    fn detach(&self, device: &LoopDevice) -> Result<(), StorageError> {
        let file = open_rw(&device.path)?;
        // SAFETY: LOOP_CLR_FD takes no argument.
        match unsafe {
            rustix::ioctl::ioctl(file.as_fd(), NoArg::<{ LOOP_CLR_FD as Opcode }>::new())
        } {
            // ENXIO: not bound any more.
            Ok(()) | Err(Errno::NXIO) => Ok(()),
            Err(e) => Err(StorageError::io("unbinding", &device.path)(e.into())),
        }
    }

    fn refresh_capacity(&self, device: &LoopDevice) -> Result<(), StorageError> {
        let file = open_rw(&device.path)?;
        // SAFETY: LOOP_SET_CAPACITY takes no argument.
        unsafe {
            rustix::ioctl::ioctl(
                file.as_fd(),
                NoArg::<{ LOOP_SET_CAPACITY as Opcode }>::new(),
            )
        }
        .map_err(|e| StorageError::io("refreshing the capacity of", &device.path)(e.into()))
    }
}

/// Records the calls, in a readable form, and keeps a pretend state: [`Host::attach_and_mount`]
/// binds the image to a new loop device and mounts it, [`Host::unmount`] unmounts and (as
/// autoclear would) unbinds. Tool runs succeed with exit code 0 unless [`Recording::fail`]
/// names the program.
#[derive(Debug, Default)]
pub struct Recording {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<String>,
    /// (image, device)
    loops: Vec<(PathBuf, LoopDevice)>,
    mounts: Vec<Mount>,
    next_minor: u32,
    failing: Vec<(String, i32)>,
}

impl Recording {
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Runs of `program` exit with `code` from now on.
    pub fn fail(&self, program: &str, code: i32) {
        self.lock().failing.push((program.to_string(), code));
    }

    /// Pretends `image` is bound to a loop device that nothing has mounted.
    pub fn bind_unmounted(&self, image: &Path) {
        let mut state = self.lock();
        let minor = state.next_minor;
        state.next_minor += 1;
        state.loops.push((
            image.to_path_buf(),
            LoopDevice {
                path: PathBuf::from(format!("/dev/loop{minor}")),
                device: (7, minor),
            },
        ));
    }

    /// Pretends something is mounted at `target` (a pod's bind mount of `root`).
    pub fn mount_bind(&self, root: &Path, device: (u32, u32), target: &Path) {
        self.lock().mounts.push(Mount {
            device,
            root: root.to_path_buf(),
            mount_point: target.to_path_buf(),
            fs_type: "ext4".into(),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Host for Recording {
    fn run(&self, program: &str, args: &[&OsStr]) -> Result<Outcome, StorageError> {
        let mut state = self.lock();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        state.calls.push(format!("{program} {}", args.join(" ")));
        let code = state
            .failing
            .iter()
            .find(|(p, _)| p == program)
            .map_or(0, |(_, code)| *code);
        Ok(Outcome {
            code,
            output: String::new(),
        })
    }

    fn mounts(&self) -> Result<Vec<Mount>, StorageError> {
        Ok(self.lock().mounts.clone())
    }

    fn loop_device(&self, image: &Path) -> Result<Option<LoopDevice>, StorageError> {
        Ok(self
            .lock()
            .loops
            .iter()
            .find(|(i, _)| i == image)
            .map(|(_, d)| d.clone()))
    }

    fn attach_and_mount(&self, image: &Path, target: &Path) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.calls.push(format!(
            "attach+mount {} {}",
            image.display(),
            target.display()
        ));
        let minor = state.next_minor;
        state.next_minor += 1;
        let device = LoopDevice {
            path: PathBuf::from(format!("/dev/loop{minor}")),
            device: (7, minor),
        };
        state.mounts.push(Mount {
            device: device.device,
            root: PathBuf::from("/"),
            mount_point: target.to_path_buf(),
            fs_type: "ext4".into(),
        });
        state.loops.push((image.to_path_buf(), device));
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), StorageError> {
        let mut state = self.lock();
        state.calls.push(format!("unmount {}", target.display()));
        let Some(index) = state.mounts.iter().rposition(|m| m.mount_point == target) else {
            return Err(StorageError::io("unmounting", target)(
                std::io::Error::from_raw_os_error(22),
            ));
        };
        let mount = state.mounts.remove(index);
        if !state.mounts.iter().any(|m| m.device == mount.device) {
            state.loops.retain(|(_, d)| d.device != mount.device);
        }
        Ok(())
    }

    fn detach(&self, device: &LoopDevice) -> Result<(), StorageError> {
        let mut state = self.lock();
        state
            .calls
            .push(format!("detach {}", device.path.display()));
        state.loops.retain(|(_, d)| d != device);
        Ok(())
    }

    fn refresh_capacity(&self, device: &LoopDevice) -> Result<(), StorageError> {
        self.lock()
            .calls
            .push(format!("refresh {}", device.path.display()));
        Ok(())
    }
}
