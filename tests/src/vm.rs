//! A Debian bookworm machine booted under qemu-system-x86_64 (TCG: software emulation) with
//! systemd as PID 1, from the image `scripts/install-vm.sh` builds once; the packages' test
//! installs the box's `.deb` into it. Commands are typed into root's serial console; one
//! TCP port of the guest is forwarded to loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Vm {
    qemu: Child,
    console: ChildStdin,
    output: Arc<Mutex<String>>,
    /// The host's loopback port forwarded to the guest's `guest_port`.
    pub port: u16,
    commands: u32,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Boots the image in `image` (a copy-on-write overlay: the image is left as it is) with
    /// `files` on a second disk, mounted at `/mnt`, and the guest's `guest_port` forwarded;
    /// returns once root's shell answers.
    pub fn boot(image: &Path, files: &[&Path], guest_port: u16) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(image.join("root.img"))
            .arg(&overlay)
            .status()
            .expect("qemu-img");
        assert!(status.success());
        let shared = dir.path().join("files");
        std::fs::create_dir(&shared).unwrap();
        for file in files {
            std::fs::copy(file, shared.join(file.file_name().unwrap())).unwrap();
        }
        let disk = dir.path().join("files.img");
        let status = Command::new("mkfs.ext4")
            .args(["-q", "-L", "files", "-d"])
            .arg(&shared)
            .arg(&disk)
            .arg("256M")
            .stdout(Stdio::null())
            .status()
            .expect("mkfs.ext4");
        assert!(status.success());
        let port = crate::cloud::free_port();
        let mut qemu = Command::new("qemu-system-x86_64")
            .args([
                "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
            ])
            .arg("-kernel")
            .arg(image.join("vmlinuz"))
            .arg("-initrd")
            .arg(image.join("initrd.img"))
            .args(["-append", "root=/dev/vda rw console=ttyS0 quiet"])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()))
            .args(["-netdev"])
            .arg(format!(
                "user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{guest_port}"
            ))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (scripts/install-vm.sh installs it)");
        let console = qemu.stdin.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(qemu.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(qemu.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
            });
        }
        let mut vm = Vm {
            qemu,
            console,
            output,
            port,
            commands: 0,
            _dir: dir,
        };
        vm.wait_for("login: root (automatic login)", Duration::from_secs(180));
        // Quiet from here: no echo of what is typed, no kernel messages on the console.
        vm.sh("stty -echo; PS1=; PS2=; dmesg -n 1; mount -L files /mnt");
        vm
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let output = self.output.lock().unwrap();
                if output.contains(needle) {
                    return output.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "the VM never printed {needle:?}; its console:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last part of the console, for failure messages.
    pub fn console_tail(&self) -> String {
        let output = self.output.lock().unwrap();
        let start = output.len().saturating_sub(6000);
        let start = (start..output.len())
            .find(|&i| output.is_char_boundary(i))
            .unwrap_or(0);
        output[start..].to_string()
    }

    /// Runs a shell command as root in the guest; returns its exit code and output (stdout
    /// and stderr).
    pub fn run(&mut self, command: &str) -> (i32, String) {
        self.commands += 1;
        let n = self.commands;
        let start = self.output.lock().unwrap().len();
        // The marker is only ever printed, never typed as such: `$?` and the arithmetic are
        // expanded by the guest's shell.
        writeln!(
            self.console,
            "{{ {command} ; }} 2>&1; echo \"@@done-$?-$((0+{n}))@@\""
        )
        .unwrap();
        self.console.flush().unwrap();
        let suffix = format!("-{n}@@");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            {
                let output = self.output.lock().unwrap();
                let tail = &output[start..];
                if let Some(end) = tail.find(&suffix) {
                    let head = &tail[..end];
                    if let Some(marker) = head.rfind("@@done-") {
                        let code = head[marker + 7..].parse().unwrap_or(-1);
                        return (code, head[..marker].replace('\r', ""));
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{command:?} never finished in the VM; its console:\n{}",
                self.console_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a command that must succeed; returns its output.
    pub fn sh(&mut self, command: &str) -> String {
        let (code, output) = self.run(command);
        assert_eq!(code, 0, "{command:?} failed in the VM:\n{output}");
        output
    }

    /// Runs `command` every second until it succeeds, for up to `seconds`; returns whether
    /// it did, and its last output.
    pub fn until(&mut self, command: &str, seconds: u64) -> (bool, String) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let (code, output) = self.run(command);
            if code == 0 {
                return (true, output);
            }
            if Instant::now() >= deadline {
                return (false, output);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}
