"""`aezoo verify EXPORT_DIR --platform aarch64|x86_64`: an export's .tflite files re-run and recorded.

`--platform aarch64` runs every .tflite file of an export in ai-edge-litert and in tflite-runtime
2.14 for aarch64, each in a Debian arm64 CPython 3.11 emulated by qemu-user on a Cortex-A72 (Pi 4)
and/or Cortex-A76 (Pi 5), and compares the outputs with the x86 ones the export saved in
reference.npz: float files within `FLOAT_TARGET`, int8 files within `INT8_STEPS_TARGET`
quantization steps. `--platform x86_64` re-runs the files in this machine's interpreter against
the same reference. Each result is added to metadata.json as a `runtimes.verified_on` entry
(runtime, version, platform, CPU, the difference found), written atomically.

The emulated environment is built once and cached in $AEZOO_AARCH64_CACHE (default
~/.cache/aezoo/aarch64): the Debian packages of an arm64 Python unpacked with `dpkg -x` into a
sysroot, and one site folder of unpacked aarch64 wheels per interpreter (pinned by
export/constraints-aarch64-*.txt; tflite-runtime 2.14 needs numpy < 2, hence two). It needs
qemu-user-static, dpkg, apt-get (run as root) and pip. Two traps are handled here:
ai-edge-litert >= 2.2 reads /proc/cpuinfo when the interpreter is created and crashes on the
host's x86 one, so the sysroot carries an ARM /proc/cpuinfo (qemu's -L serves sysroot files
first); qemu's default CPU (`max`, with newer vector extensions) gives wrong int8 results in
XNNPACK, so a named CPU is always passed.

Inside the emulated Python only numpy, the interpreter and `export.runtime` are imported
(`export.run_files`, one process per CPU and interpreter running every file).

Example:
    aezoo verify runs/conv/export --platform aarch64 --cpu cortex-a72,cortex-a76
"""

import dataclasses
import hashlib
import json
import os
import platform as host_platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from export import runtime
from export.runtime import EdgeError

PLATFORMS = ("x86_64", "aarch64")
CPUS = ("cortex-a72", "cortex-a76")  # Raspberry Pi 4, Raspberry Pi 5
CACHE_ENV = "AEZOO_AARCH64_CACHE"
QEMU = "qemu-aarch64-static"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding export/, put on the emulated PYTHONPATH
# An arm64 CPython 3.11 and the shared libraries it and the interpreters' wheels load.
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libstdc++6", "libgcc-s1", "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1",
)
# interpreter -> (package, its pins); each gets its own site folder (tflite-runtime needs numpy < 2).
SITES = {
    "ai_edge_litert": ("ai-edge-litert", Path(__file__).with_name("constraints-aarch64-ai-edge-litert.txt")),
    "tflite_runtime": ("tflite-runtime", Path(__file__).with_name("constraints-aarch64-tflite-runtime.txt")),
}
WHEEL_TAGS = ("manylinux_2_34_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")  # Debian 12: glibc 2.36
# A Cortex-A72's /proc/cpuinfo: ai-edge-litert >= 2.2 parses it in Interpreter() and crashes on the host's x86 one.
CPUINFO = (
    "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
)
FLOAT_TARGET = 1e-5  # max abs diff of float outputs from the x86 ones
INT8_STEPS_TARGET = 2  # int8 outputs: quantization steps from the x86 ones
REFERENCE_FILE = "reference.npz"


@dataclasses.dataclass(frozen=True)
class Environment:
    """The cached emulated aarch64 Python: how to start it, and its site folder per interpreter."""

    folder: Path
    qemu: str

    @property
    def sysroot(self):
        return self.folder / "sysroot"

    def command(self, cpu):
        return [self.qemu, "-cpu", cpu, "-L", str(self.sysroot), str(self.sysroot / "usr/bin/python3.11")]

    def site(self, interpreter):
        return self.folder / "site" / interpreter


def cache_folder():
    """Where the emulated environment lives: $AEZOO_AARCH64_CACHE, else ~/.cache/aezoo/aarch64."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aezoo" / "aarch64")


def _recipe_digest():
    """Changes whenever what the environment is built from changes (packages, pins, cpuinfo)."""
    parts = [" ".join(DEBIAN_PACKAGES), " ".join(WHEEL_TAGS), CPUINFO]
    parts += [f"{name} {package} {pins.read_text()}" for name, (package, pins) in SITES.items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def environment():
    """The emulated environment, built into the cache folder first if missing or outdated.

    Raises:
        EdgeError: qemu-user-static, dpkg, apt-get or pip missing, or a step failing (one line each).
    """
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EdgeError(f"{QEMU} not found: apt-get install qemu-user-static (aarch64 emulation)")
    folder = cache_folder()
    stamp = folder / "recipe.sha256"
    digest = _recipe_digest()
    if not (stamp.is_file() and stamp.read_text() == digest):
        _build(folder, digest)
    return Environment(folder, qemu)


def _build(folder, digest):
    """Builds the environment in a temp folder beside `folder`, then renames it into place."""
    for tool, hint in (("dpkg", "a Debian or Ubuntu host"), ("apt-get", "a Debian or Ubuntu host")):
        if shutil.which(tool) is None:
            raise EdgeError(f"{tool} not found: building the aarch64 sysroot needs {hint}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).split():
            _run(["dpkg", "--add-architecture", "arm64"], "adding the arm64 architecture (run as root)")
            _run(["apt-get", "update", "-q"], "apt-get update")
        debs = staging / "debs"
        debs.mkdir()
        _run(["apt-get", "download", "-q", *(f"{name}:arm64" for name in DEBIAN_PACKAGES)],
             "downloading the arm64 Python packages (apt-get update first?)", cwd=debs)
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(staging / "sysroot")], f"unpacking {deb.name}")
        shutil.rmtree(debs)
        (staging / "sysroot/proc").mkdir()
        (staging / "sysroot/proc/cpuinfo").write_text(CPUINFO)
        for name, (package, pins) in SITES.items():
            wheels = staging / "wheels" / name
            platforms = [option for tag in WHEEL_TAGS for option in ("--platform", tag)]
            _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *platforms, "--python-version",
                  "3.11", "--implementation", "cp", "-c", str(pins), "-d", str(wheels), package],
                 f"downloading the aarch64 wheels of {package}")
            for wheel in sorted(wheels.glob("*.whl")):
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(staging / "site" / name)
        shutil.rmtree(staging / "wheels")
        (staging / "recipe.sha256").write_text(digest)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _run(command, what="", cwd=None):
    """stdout of a setup command; an EdgeError with its last error line when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise EdgeError(f"{what or command[0]} failed: {lines[-1] if lines else f'exit code {result.returncode}'}")
    return result.stdout


# --- verification ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """One .tflite file run by one interpreter on one platform and CPU, against reference.npz."""

    file: str
    mode: str
    runtime: str
    version: str
    platform: str
    cpu: str
    emulated: str | None  # the emulator, e.g. "qemu-aarch64 7.2.22"; None: run natively
    max_abs_diff: float | None
    max_int8_steps: float | None  # int8 files: the largest difference in output quantization steps
    emulated_ms: float | None  # a single-example reconstruct, under emulation (not a board's latency)
    refused: str | None = None  # the runtime's error when it cannot run the file (e.g. 2.14 and dynamic)

    @property
    def met(self):
        if self.refused:
            return None
        if self.max_int8_steps is not None:
            return self.max_int8_steps <= INT8_STEPS_TARGET
        return self.max_abs_diff <= FLOAT_TARGET

    def to_json(self):
        entry = {"runtime": self.runtime, "version": self.version, "platform": self.platform, "cpu": self.cpu,
                 "emulated": self.emulated, "compared_with": f"{REFERENCE_FILE} (x86_64 outputs of the export)"}
        if self.refused:
            return {**entry, "refused": self.refused}
        return {**entry, "max_abs_diff": self.max_abs_diff, "max_int8_steps": self.max_int8_steps,
                "target": f"<= {INT8_STEPS_TARGET} steps" if self.max_int8_steps is not None else f"max abs diff <= {FLOAT_TARGET:g}",
                "met": self.met, "emulated_ms": self.emulated_ms}

    def summary(self):
        """A few words for report tables: 'match (0 steps)', 'MISMATCH (67 steps)', 'refused'."""
        if self.refused:
            return "refused"
        diff = f"{self.max_int8_steps:g} steps" if self.max_int8_steps is not None else f"{self.max_abs_diff:.1e}"
        return f"{'match' if self.met else 'MISMATCH'} ({diff})"


@dataclasses.dataclass
class VerifyReport:
    """What `verify` ran; `str()` gives the table `aezoo verify` prints."""

    export_dir: Path
    platform: str
    results: list

    @property
    def missed(self):
        return [result for result in self.results if result.met is False]

    def __str__(self):
        rows = [
            f"verified {self.export_dir} on {self.platform} against {REFERENCE_FILE}; results added to {runtime.METADATA_FILE}",
            "| file | runtime | platform | CPU | result | emulated ms (reconstruct, 1 example) |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.results:
            timing = "-" if r.emulated_ms is None else f"{r.emulated_ms:.1f}" + ("" if r.emulated else " (native)")
            rows.append(f"| {r.file} | {r.runtime} {r.version} | {r.platform} | {r.cpu} | {r.summary()} | {timing} |")
        rows += [f"refused: {r.file} on {r.runtime}: {r.refused}" for r in self.results if r.refused]
        rows += [f"MISSED: {r.file} on {r.runtime} {r.cpu}: {r.summary()}" for r in self.missed]
        return "\n".join(rows)


def parse_cpus(text):
    """('cortex-a72', 'cortex-a76') from a comma string; an EdgeError naming the valid CPUs otherwise."""
    cpus = tuple(dict.fromkeys(cpu.strip() for cpu in text.split(",") if cpu.strip()))
    unknown = [cpu for cpu in cpus if cpu not in CPUS]
    if unknown or not cpus:
        raise EdgeError(f"unknown --cpu {', '.join(unknown) or repr(text)}; choose from: {', '.join(CPUS)}")
    return cpus


def verify(export_dir, platform="aarch64", cpus=CPUS[:1], timing_runs=0):
    """Runs every .tflite file of an export on `platform` and records the results in its metadata.json.

    Args:
        export_dir: a folder written by `aezoo export`.
        platform: "aarch64" (emulated, every interpreter of `SITES` on each CPU) or "x86_64"
            (this machine's interpreter; needs an x86_64 host).
        cpus: aarch64 only: CPUs of `CPUS` to emulate.
        timing_runs: timed single-example reconstruct calls per file (0: no timing).

    Returns:
        VerifyReport.

    Raises:
        EdgeError: no such export, no reference.npz or .tflite files, an unknown platform or CPU,
            a missing piece of the emulated environment, a run that failed.

    Example:
        >>> print(verify("export/conv", "aarch64", ("cortex-a72", "cortex-a76")))
    """
    export_dir = Path(export_dir)
    metadata = _read_export(export_dir)
    if platform not in PLATFORMS:
        raise EdgeError(f"unknown --platform {platform!r}; choose from: {', '.join(PLATFORMS)}")
    if platform == "aarch64":
        env = environment()
        version = _run([env.qemu, "--version"]).split()[2]
        runs = [(env.command(cpu), env.site(name), cpu, f"qemu-aarch64 {version}") for cpu in cpus for name in SITES]
    else:
        if host_platform.machine() != "x86_64":
            raise EdgeError(f"--platform x86_64 re-runs the files natively, and this machine is {host_platform.machine()}")
        runs = [([sys.executable], None, _host_cpu(), None)]
    with tempfile.TemporaryDirectory(prefix="aezoo-verify-") as scratch:
        processes = [_start(command, site, export_dir, Path(scratch) / str(i), timing_runs)
                     for i, (command, site, _, _) in enumerate(runs)]
        results = []
        for (process, out_dir), (_, _, cpu, emulated) in zip(processes, runs):
            _, stderr = process.communicate()
            if process.returncode != 0:
                lines = stderr.strip().splitlines()
                raise EdgeError(f"the {platform} run failed on {cpu}: {lines[-1] if lines else f'exit code {process.returncode}'}")
            results += _compare(export_dir, metadata, out_dir, platform, cpu, emulated)
    _record(export_dir, results)
    return VerifyReport(export_dir, platform, results)


def _read_export(export_dir):
    if not export_dir.is_dir():
        raise EdgeError(f"{export_dir}: no such export folder")
    metadata_path = export_dir / runtime.METADATA_FILE
    if not metadata_path.is_file() or not (export_dir / REFERENCE_FILE).is_file():
        raise EdgeError(f"{export_dir} holds no {runtime.METADATA_FILE} and {REFERENCE_FILE}: give a folder written by 'aezoo export'")
    if not any(export_dir.glob("*.tflite")):
        raise EdgeError(f"{export_dir} holds no .tflite files to verify; export with --quantize float32,int8")
    try:
        return json.loads(metadata_path.read_text())
    except ValueError as error:
        raise EdgeError(f"{metadata_path} is not valid JSON ({error}); re-export") from None


def _host_cpu():
    """This machine's CPU model name (from /proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host_platform.machine()


def _start(command, site, export_dir, out_dir, timing_runs):
    """Starts `python -m export.run_files` (the emulated Python sees only its site folder and this package)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (site, PACKAGE_ROOT) if p)}
    if site is not None:
        env["PYTHONNOUSERSITE"] = "1"
    arguments = ["-m", "export.run_files", str(export_dir.resolve()), str(out_dir), "--timing-runs", str(timing_runs)]
    process = subprocess.Popen([*command, *arguments], env=env, cwd=PACKAGE_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    return process, out_dir


def _compare(export_dir, metadata, out_dir, platform, cpu, emulated):
    run = json.loads((out_dir / "run.json").read_text())
    results = []
    with np.load(export_dir / REFERENCE_FILE) as reference, np.load(out_dir / "outputs.npz") as outputs:
        for file, ran in run["files"].items():
            entry = metadata["files"].get(file, {})
            base = dict(file=file, mode=entry.get("mode", "?"), runtime=run["runtime"], version=run["version"],
                        platform=run["machine"], cpu=cpu, emulated=emulated)
            if "refused" in ran:
                results.append(Result(**base, max_abs_diff=None, max_int8_steps=None, emulated_ms=None, refused=ran["refused"]))
                continue
            diffs, steps = [], []
            for key in (k for k in outputs.files if k.startswith(f"{file}/")):
                _, signature, name = key.split("/")
                diff = float(np.abs(outputs[key] - reference[key]).max())
                diffs.append(diff)
                scale = entry["signatures"][signature]["outputs"][name].get("scale")
                if scale:
                    steps.append(round(diff / scale, 3))
            results.append(Result(**base, max_abs_diff=max(diffs), max_int8_steps=max(steps) if steps else None,
                                  emulated_ms=ran["ms"] if emulated else None))
    return results


def _record(export_dir, results):
    """Adds each result to its file's runtimes.verified_on (replacing the same runtime, platform and CPU), atomically."""
    path = export_dir / runtime.METADATA_FILE
    metadata = json.loads(path.read_text())
    for result in results:
        runtimes = metadata["files"][result.file].setdefault("runtimes", {})
        same = (result.runtime, result.version, result.platform, result.cpu)
        runtimes["verified_on"] = [
            entry for entry in runtimes.get("verified_on", [])
            if not isinstance(entry, dict) or (entry["runtime"], entry["version"], entry["platform"], entry["cpu"]) != same
        ] + [result.to_json()]
    handle, temp = tempfile.mkstemp(dir=export_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(json.dumps(metadata, indent=2) + "\n")
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
