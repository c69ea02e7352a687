"""A private Docker engine for the image tests, and the base image they build on.

The engine is Debian's `docker.io`: its own `dockerd` (with the containerd it manages) whose
data root, exec root, socket, pid file and configuration all live in one temporary folder, with
no bridge, no iptables rules and no masquerading, so it touches nothing of the machine's network
and leaves nothing behind; containers and builds use the host network only. `Engine.stop()`
removes every container, stops the daemon and deletes the folder (the images with it).

The base image is made from Debian's packages, so no registry is needed: `debootstrap` of
bookworm (minbase, with python3, pip and the CA certificates), adjusted to look like
`python:3.11-slim-bookworm` where the Dockerfile relies on it, imported with `docker import`.
The tarball is cached in AUTH_IMAGE_BASE_CACHE (/var/cache/auth-image-base), named by a hash
of everything that goes into it, and made again when older than AUTH_IMAGE_BASE_MAX_AGE_DAYS
(7), so security updates arrive within a week.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# What the image tests found out (sizes, times), for the summary at the end of the run.
IMAGE_REPORT = pytest.StashKey[dict]()

# Debian's client, not another one earlier in PATH: it has BuildKit built in (a newer client
# wants the buildx plugin for it), and it matches the daemon's API.
DOCKER = Path("/usr/bin/docker")
DOCKERD = Path("/usr/sbin/dockerd")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")

CACHE_DIR = Path(os.environ.get("AUTH_IMAGE_BASE_CACHE", "/var/cache/auth-image-base"))
MAX_AGE_DAYS = float(os.environ.get("AUTH_IMAGE_BASE_MAX_AGE_DAYS", "7"))
# What the base is made of: change any of these and the cache key changes with it.
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-pip", "ca-certificates")
# Bump when base_rootfs() changes what it does to the tree.
RECIPE = 2
# The machine's CA bundle goes into the base: pip inside the build reaches the package index
# through whatever TLS interception this machine has, exactly as the machine's own pip does.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class EngineError(RuntimeError):
    """The engine or a docker command failed; the message carries its output."""


def missing_tools() -> list[str]:
    """What this machine lacks to run the image tests (empty: nothing)."""
    missing = [str(tool) for tool in (DOCKER, DOCKERD, DEBOOTSTRAP) if not tool.exists()]
    if os.geteuid() != 0:
        missing.append("root (dockerd and debootstrap need it)")
    return missing


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    prefix = str(path.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Unmount whatever is still mounted below `path`, then delete it, never crossing into
    another filesystem (a leftover bind mount of /dev or /proc must not be emptied)."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True)
    left = _mounts_under(path)
    if left:
        raise EngineError(f"still mounted, not deleting {path}: {left}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


@dataclass
class Engine:
    """One private dockerd. start(), docker(...), stop()."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="auth-engine-")))
    process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        """The daemon's API socket."""
        return self.root / "docker.sock"

    @property
    def log_path(self) -> Path:
        """dockerd's own output."""
        return self.root / "dockerd.log"

    def log_tail(self, lines: int = 40) -> str:
        """The end of dockerd's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def client_env(self) -> dict[str, str]:
        """The docker client's environment: this daemon, BuildKit, and a client configuration
        folder of its own (never the machine's ~/.docker, which may hold registry logins)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("DOCKER_")}
        env.update(
            DOCKER_HOST=f"unix://{self.socket}",
            DOCKER_CONFIG=str(self.root / "client"),
            DOCKER_BUILDKIT="1",
            DOCKER_CLI_HINTS="false",
        )
        return env

    def start(self, timeout: float = 90) -> Engine:
        """Start dockerd and wait until it answers; EngineError (with its log) if it does not."""
        (self.root / "client").mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        # Its identity key (20.10 keeps it in /etc/docker by default) lives here too.
        config.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        command = [
            str(DOCKERD),
            f"--config-file={config}",
            f"--data-root={self.root / 'data'}",
            f"--exec-root={self.root / 'exec'}",
            f"--pidfile={self.root / 'docker.pid'}",
            f"--host=unix://{self.socket}",
            # The machine's network is not ours to change: no docker0, no NAT, no firewall rules.
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--log-level=warn",
        ]
        with open(self.log_path, "wb") as log:
            # A session of its own: a Ctrl-C of the test run reaches pytest, which stops it in order.
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EngineError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise EngineError(f"dockerd did not answer within {timeout:g}s:\n{self.log_tail()}")
            time.sleep(0.25)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300, env: dict[str, str] | None = None, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run the docker client against this engine (text output captured unless redirected)."""
        kwargs.setdefault("capture_output", "stdout" not in kwargs)
        kwargs.setdefault("text", True)
        result = subprocess.run(
            [str(DOCKER), *args], env={**self.client_env(), **(env or {})}, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args)} exited with {result.returncode}:\n{result.stderr}")
        return result

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start the docker client against this engine without waiting (to stream its output)."""
        return subprocess.Popen([str(DOCKER), *args], env=self.client_env(), **kwargs)

    def inspect(self, *names: str, kind: str = "container") -> list[dict]:
        """`docker <kind> inspect`, parsed."""
        return json.loads(self.docker(kind, "inspect", *names).stdout)

    def stop(self) -> list[str]:
        """Remove every container, stop the daemon (and its containerd), delete the folder.

        Returns what could not be cleaned up (empty when everything went), so a fixture can fail
        on it after having tried everything.
        """
        problems = []
        if self.process is not None and self.process.poll() is None:
            listed = self.docker("ps", "--all", "--quiet", check=False, timeout=60)
            ids = listed.stdout.split()
            if ids:
                removed = self.docker("rm", "--force", "--volumes", *ids, check=False, timeout=120)
                if removed.returncode != 0:
                    problems.append(f"docker rm: {removed.stderr.strip()}")
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("dockerd ignored SIGTERM for 60 s; killed")
                self.process.kill()
                self.process.wait(timeout=30)
        # The containerd that dockerd started exits with it; if dockerd was killed it may not have.
        pid_file = self.root / "exec" / "containerd" / "containerd.pid"
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGTERM)
                problems.append(f"containerd {pid} outlived dockerd; stopped")
            except (ValueError, ProcessLookupError):
                pass
        time.sleep(0.2)
        lingering = processes_under(self.root)
        if lingering:
            problems.append(f"processes still using {self.root}: {lingering}")
            for pid in lingering:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            remove_tree(self.root)
        except (EngineError, subprocess.CalledProcessError) as error:
            problems.append(str(error))
        return problems


def processes_under(root: Path) -> list[int]:
    """Processes whose command line names something inside `root` (dockerd, containerd, shims)."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def base_key() -> str:
    """What the base tarball is made of, hashed: its name in the cache."""
    architecture = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    recipe = {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": PACKAGES,
        "architecture": architecture,
        "recipe": RECIPE,
        "ca_bundle": hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _sha256_of(path: Path) -> str:
    """A file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fresh(tarball: Path) -> bool:
    """Whether a cached tarball may be used: young enough, and exactly as it was written."""
    checksum = tarball.with_name(tarball.name + ".sha256")
    if not (tarball.exists() and checksum.exists()):
        return False
    if time.time() - tarball.stat().st_mtime > MAX_AGE_DAYS * 86400:
        return False
    return checksum.read_text().strip() == _sha256_of(tarball)


def base_rootfs(rootfs: Path, log: Path) -> None:
    """debootstrap the base into `rootfs`, then make it stand in for python:3.11-slim-bookworm."""
    with open(log, "ab") as output:
        subprocess.run(
            [str(DEBOOTSTRAP), f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs)],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True, timeout=1500,
        )  # fmt: skip
    # pip may install into this Python (PEP 668's marker is Debian's; the image has no other use).
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
    # The official image's names for them.
    for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
        link = rootfs / "usr/local/bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    # Nothing of this machine in the image: Docker provides these at run time.
    for name in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / name).unlink(missing_ok=True)
    # As the official image does: Python's own test suite and the tests vendored packages carry
    # are not needed to run anything.
    for python in (rootfs / "usr/lib").glob("python3*"):
        for folder in sorted(python.rglob("*"), reverse=True):
            if folder.is_dir() and not folder.is_symlink() and folder.name in ("test", "tests", "idle_test"):
                shutil.rmtree(folder)
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/man", "usr/share/info", "tmp"):
        target = rootfs / folder
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                elif child.name != "lock":
                    child.unlink()


def base_tarball(say: Callable[[str], None] = print) -> tuple[Path, bool]:
    """The cached base tarball, made first if missing or stale; (path, whether it was cached)."""
    CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = base_key()
    tarball = CACHE_DIR / f"{SUITE}-{VARIANT}-{key}.tar"
    with open(CACHE_DIR / ".lock", "w") as lock:
        # One maker at a time on this machine; the others wait and then use its tarball.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _fresh(tarball):
            return tarball, True
        say(f"making the base image {tarball.name} with debootstrap (a few minutes; cached afterwards)")
        work = Path(tempfile.mkdtemp(prefix="make-", dir=CACHE_DIR))
        try:
            rootfs = work / "rootfs"
            base_rootfs(rootfs, CACHE_DIR / "debootstrap.log")
            partial = work / "base.tar"
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial),
                 "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "."],
                check=True, timeout=600,
            )  # fmt: skip
            checksum = _sha256_of(partial)
            # Older tarballs (other keys, or this one stale) go; the new one appears whole or not at all.
            for old in CACHE_DIR.glob(f"{SUITE}-{VARIANT}-*.tar*"):
                old.unlink()
            os.replace(partial, tarball)
            tarball.with_name(tarball.name + ".sha256").write_text(checksum + "\n")
        finally:
            remove_tree(work)
        return tarball, False


def import_base(engine: Engine, tarball: Path) -> str:
    """Load the base tarball into the engine; its tag."""
    tag = f"auth-image-base:{tarball.stem.rsplit('-', 1)[-1]}"
    engine.docker(
        "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(tarball), tag, timeout=600
    )
    return tag
