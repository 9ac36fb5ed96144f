"""`aezoo verify EXPORT_DIR --platform aarch64|x86_64`: an export's .tflite files re-run and recorded.

`--platform x86_64` re-runs every .tflite file of an export in ai-edge-litert and in
tflite-runtime 2.14 on this machine against the outputs the export saved in reference.npz.
`--platform aarch64` does that too, then runs the files in both interpreters for aarch64, in a
Debian arm64 CPython 3.11 emulated by qemu-user on a Cortex-A72 (Pi 4) and/or Cortex-A76 (Pi 5),
and compares each with the same interpreter's x86_64 outputs. Each file is held to the contract
its export wrote in metadata.json (`verify_contract`): float files within `FLOAT_TARGET` of the
same interpreter's outputs (`CROSS_RUNTIME_FLOAT_TARGET` of another's); int8 files, everywhere,
to the export's accuracy target against Keras (PSNR of reference.npz's reconstructions), their
output steps from the baseline reported; with `--kernels reference` also within
`INT8_STEPS_TARGET` steps of the same interpreter's x86_64 outputs on every CPU. Each result is
added to metadata.json as a `runtimes.verified_on` entry (runtime, version, platform, CPU, the
difference found), written atomically.

Each platform's environment is built once and cached in $AEZOO_VERIFY_CACHE/<platform> (default
~/.cache/aezoo/<platform>): one site folder of unpacked wheels per interpreter (pinned by
export/constraints-verify-*.txt; tflite-runtime 2.14 needs numpy < 2, hence two), run by this
Python with -S on x86_64; for aarch64 also the Debian packages of an arm64 CPython 3.11 unpacked
with `dpkg -x` into a sysroot. It needs Python 3.11 on an x86_64 host, pip, and for aarch64
qemu-user-static, dpkg and apt-get (as root). Two traps are handled here:
ai-edge-litert >= 2.2 reads /proc/cpuinfo when the interpreter is created and crashes on the
host's x86 one, so the sysroot carries an ARM /proc/cpuinfo (qemu's -L serves sysroot files
first); qemu's default CPU (`max`, with newer vector extensions) gives wrong int8 results in
XNNPACK, so a named CPU is always passed.

Inside the emulated Python only numpy, the interpreter and `export.edge.runtime` are imported
(`export.edge.run_files`, one process per CPU and interpreter running every file).

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

from export.builder.quality import psnr
from export.edge import runtime
from export.edge.runtime import EdgeError

PLATFORMS = ("x86_64", "aarch64")
CPUS = ("cortex-a72", "cortex-a76")  # Raspberry Pi 4, Raspberry Pi 5
CACHE_ENV = "AEZOO_VERIFY_CACHE"
QEMU = "qemu-aarch64-static"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding export/, put on the run's PYTHONPATH
PINS_FOLDER = PACKAGE_ROOT / "export"
# An arm64 CPython 3.11 and the shared libraries it and the interpreters' wheels load.
DEBIAN_PACKAGES = (
    "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libexpat1", "zlib1g",
    "libffi8", "libstdc++6", "libgcc-s1", "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1",
)
# interpreter -> (package, its pins); each gets its own site folder (tflite-runtime needs numpy < 2).
SITES = {
    "ai_edge_litert": ("ai-edge-litert", PINS_FOLDER / "constraints-verify-ai-edge-litert.txt"),
    "tflite_runtime": ("tflite-runtime", PINS_FOLDER / "constraints-verify-tflite-runtime.txt"),
}
# Wheel tags (2.17 under its legacy name too: pip does not alias them); Debian 12 has glibc 2.36.
WHEEL_GLIBC = ("manylinux_2_34", "manylinux_2_27", "manylinux_2_17", "manylinux2014")
# A Cortex-A72's /proc/cpuinfo: ai-edge-litert >= 2.2 parses it in Interpreter() and crashes on the host's x86 one.
CPUINFO = (
    "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
)
# Outputs of the same interpreter on aarch64 and x86_64, or x86_64 against reference.npz:
FLOAT_TARGET = 1e-5  # float files, max abs diff
INT8_STEPS_TARGET = 2  # int8 files, output quantization steps
# Float files in tflite_runtime 2.14 against ai_edge_litert (reference.npz), or in the other kernel set.
CROSS_RUNTIME_FLOAT_TARGET = 1e-4
REFERENCE_FILE = "reference.npz"


@dataclasses.dataclass(frozen=True)
class Environment:
    """The cached interpreters of one platform (aarch64: with the emulated Python) and how to start them."""

    platform: str
    folder: Path
    qemu: str | None  # aarch64 only

    def command(self, cpu):
        """The Python to run `export.edge.run_files` with: emulated on `cpu`, or this one without its site-packages."""
        if self.platform == "x86_64":
            return [sys.executable, "-S"]  # -S: only the pinned site folder, not this virtualenv's packages
        sysroot = self.folder / "sysroot"
        return [self.qemu, "-cpu", cpu, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11")]

    def site(self, interpreter):
        return self.folder / "site" / interpreter


def cache_folder(platform):
    """Where a platform's environment lives: $AEZOO_VERIFY_CACHE/<platform>, else ~/.cache/aezoo/<platform>."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "aezoo") / platform


def _recipe_digest(platform):
    """Changes whenever what the environment is built from changes (packages, pins, cpuinfo)."""
    parts = [platform, " ".join(WHEEL_GLIBC)] + ([" ".join(DEBIAN_PACKAGES), CPUINFO] if platform == "aarch64" else [])
    parts += [f"{name} {package} {pins.read_text()}" for name, (package, pins) in SITES.items()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def environment(platform):
    """A platform's environment, built into its cache folder first if missing or outdated.

    Raises:
        EdgeError: qemu-user-static, dpkg, apt-get or pip missing, a host that cannot run the
            platform, or a step failing (one line each).
    """
    if host_platform.machine() != "x86_64" or sys.version_info[:2] != (3, 11):
        raise EdgeError(
            f"aezoo verify runs the cp311 wheels on an x86_64 host with Python 3.11; this is "
            f"{host_platform.machine()} with Python {sys.version_info[0]}.{sys.version_info[1]}"
        )
    qemu = None
    if platform == "aarch64":
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise EdgeError(f"{QEMU} not found: apt-get install qemu-user-static (aarch64 emulation)")
    folder = cache_folder(platform)
    stamp = folder / "recipe.sha256"
    digest = _recipe_digest(platform)
    if not (stamp.is_file() and stamp.read_text() == digest):
        _build(platform, folder, digest)
    return Environment(platform, folder, qemu)


def _build(platform, folder, digest):
    """Builds an environment in a temp folder beside `folder`, then renames it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        if platform == "aarch64":
            _build_sysroot(staging / "sysroot")
        for name, (package, pins) in SITES.items():
            wheels = staging / "wheels" / name
            tags = [option for glibc in WHEEL_GLIBC for option in ("--platform", f"{glibc}_{platform}")]
            _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *tags, "--python-version",
                  "3.11", "--implementation", "cp", "-c", str(pins), "-d", str(wheels), package],
                 f"downloading the {platform} wheels of {package}")
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


def _build_sysroot(sysroot):
    """Debian's arm64 Python unpacked (dpkg -x) into `sysroot`, with an ARM /proc/cpuinfo."""
    for tool in ("dpkg", "apt-get"):
        if shutil.which(tool) is None:
            raise EdgeError(f"{tool} not found: the aarch64 sysroot is built from Debian packages (a Debian or Ubuntu host)")
    if "arm64" not in _run(["dpkg", "--print-foreign-architectures"]).split():
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64 (run as root)")
        _run(["apt-get", "update", "-q"], "apt-get update")
    debs = sysroot.with_name("debs")
    debs.mkdir()
    _run(["apt-get", "download", "-q", *(f"{name}:arm64" for name in DEBIAN_PACKAGES)],
         "apt-get download of the arm64 Python (try apt-get update)", cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(sysroot)], f"dpkg -x {deb.name}")
    shutil.rmtree(debs)
    (sysroot / "proc").mkdir()
    (sysroot / "proc/cpuinfo").write_text(CPUINFO)


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
    """One .tflite file run by one interpreter on one platform and CPU, against a baseline's outputs."""

    file: str
    mode: str
    runtime: str
    version: str
    platform: str
    cpu: str
    emulated: str | None  # the emulator, e.g. "qemu-aarch64 7.2.22"; None: run natively
    compared_with: str
    cross_runtime: bool  # the baseline came from another interpreter (looser targets)
    max_abs_diff: float | None = None  # of the output nearest its limit (float files: runtime.float_limit)
    output_peak: float = 1.0  # that output's largest |value| in the baseline
    max_int8_steps: float | None = None  # int8 files: the largest difference in output quantization steps
    ms: float | None = None  # median single-example reconstruct; under emulation when `emulated`
    refused: str | None = None  # the interpreter's error when it cannot run the file (2.14 and a dynamic file)
    kernels: str = "default"  # the interpreter's kernels (runtime.KERNELS)
    psnr_db: float | None = None  # int8 files: of the reconstruction of reference.npz's inputs
    psnr_min: float | None = None  # int8 files judged by PSNR: the export's target (verify_contract)

    @property
    def judged_by(self):
        """'psnr', 'steps' (int8 files, reference kernels against the same interpreter) or 'max_abs_diff'."""
        if self.max_int8_steps is None:
            return "max_abs_diff"
        return "psnr" if self.psnr_min is not None else "steps"

    @property
    def target(self):
        if self.judged_by == "psnr":
            return f"PSNR >= {self.psnr_min:.2f} dB"
        if self.judged_by == "steps":
            return f"<= {INT8_STEPS_TARGET} steps"
        return f"max abs diff <= {self._float_limit:.2g}"

    @property
    def _float_limit(self):
        return runtime.float_limit(CROSS_RUNTIME_FLOAT_TARGET if self.cross_runtime else FLOAT_TARGET, self.output_peak)

    @property
    def met(self):
        if self.refused:
            return None
        if self.judged_by == "psnr":
            return self.psnr_db >= self.psnr_min
        if self.judged_by == "steps":
            return self.max_int8_steps <= INT8_STEPS_TARGET
        return self.max_abs_diff <= self._float_limit

    def to_json(self):
        entry = {"runtime": self.runtime, "version": self.version, "kernels": self.kernels, "platform": self.platform,
                 "cpu": self.cpu, "emulated": self.emulated, "compared_with": self.compared_with}
        if self.refused:
            return {**entry, "refused": self.refused}
        timing = {("emulated_ms" if self.emulated else "ms"): self.ms} if self.ms is not None else {}
        accuracy = {"psnr_db": self.psnr_db} if self.psnr_db is not None else {}
        return {**entry, "max_abs_diff": self.max_abs_diff, "max_int8_steps": self.max_int8_steps, **accuracy,
                "judged_by": self.judged_by, "target": self.target, "met": self.met, **timing}

    @property
    def difference(self):
        """'PSNR 23.41 dB, 12 steps' (int8 files judged by PSNR), '2 steps' (int8) or '1.0e-06' (max abs diff)."""
        if self.judged_by == "psnr":
            return f"PSNR {self.psnr_db:.2f} dB, {self.max_int8_steps:g} steps"
        return f"{self.max_int8_steps:g} steps" if self.max_int8_steps is not None else f"{self.max_abs_diff:.1e}"

    def summary(self):
        """A few words for report tables: 'match (0 steps)', 'MISMATCH (67 steps)', 'refused'."""
        if self.refused:
            return "refused"
        return f"{'match' if self.met else 'MISMATCH'} ({self.difference})"


@dataclasses.dataclass
class VerifyReport:
    """What `verify` ran; `str()` gives the table `aezoo verify` prints."""

    export_dir: Path
    platform: str
    results: list

    @property
    def missed(self):
        return [result for result in self.results if result.met is False]

    def emulated_summary(self, file):
        """A file's aarch64 result for report columns, each interpreter's worst over the CPUs:
        'ai_edge_litert match (0 steps); tflite_runtime MISMATCH (21 steps); cortex-a72, 41.0 ms
        emulated' (the first interpreter's time), or '-' when it did not run emulated."""
        ran = [r for r in self.results if r.file == file and r.platform == "aarch64" and not r.refused]
        if not ran:
            return "-"
        parts = []
        for name in dict.fromkeys(r.runtime for r in ran):
            worst = max((r for r in ran if r.runtime == name), key=lambda r: (not r.met, r.max_int8_steps or 0, r.max_abs_diff))
            parts.append(f"{name} {'match' if worst.met else 'MISMATCH'} ({worst.difference})")
        timing = f", {ran[0].ms:.1f} ms emulated" if ran[0].ms is not None else ""
        return f"{'; '.join(parts)}; {', '.join(sorted({r.cpu for r in ran}))}{timing}"

    def __str__(self):
        rows = [
            f"verified {self.export_dir} on {self.platform}; results added to {runtime.METADATA_FILE}",
            "| file | runtime | platform | CPU | compared with | result | ms (reconstruct, 1 example) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            timing = "-" if r.ms is None else f"{r.ms:.1f}" + (" emulated" if r.emulated else "")
            rows.append(f"| {r.file} | {r.runtime} {r.version}{runtime.KERNEL_LABELS[r.kernels]} | {r.platform} | "
                        f"{r.cpu} | {r.compared_with} | {r.summary()} | {timing} |")
        rows += [f"refused: {r.file} on {r.runtime} {r.version}: {r.refused}" for r in self.results if r.refused]
        rows += [f"MISSED: {r.file} on {r.runtime} {r.platform} {r.cpu}: {r.summary()}, target {r.target}"
                 for r in self.missed]
        return "\n".join(rows)


def parse_cpus(text):
    """('cortex-a72', 'cortex-a76') from a comma string; an EdgeError naming the valid CPUs otherwise."""
    cpus = tuple(dict.fromkeys(cpu.strip() for cpu in text.split(",") if cpu.strip()))
    unknown = [cpu for cpu in cpus if cpu not in CPUS]
    if unknown or not cpus:
        raise EdgeError(f"unknown --cpu {', '.join(unknown) or repr(text)}; choose from: {', '.join(CPUS)}")
    return cpus


def verify(export_dirs, platform="aarch64", cpus=CPUS[:1], timing_runs=0, kernels="default"):
    """Runs every .tflite file of exports on `platform` and records the results in their metadata.json.

    Every interpreter of `SITES` runs natively on x86_64 against reference.npz (the outputs the
    export saved); with platform "aarch64" each also runs emulated on every CPU of `cpus`,
    against its own x86_64 outputs. One process per interpreter and CPU runs every export.

    Args:
        export_dirs: folders written by `aezoo export` (one path or a list).
        platform: "x86_64" or "aarch64".
        cpus: the CPUs of `CPUS` to emulate (aarch64).
        timing_runs: timed single-example reconstruct calls per file (0: no timing).
        kernels: the interpreters' "default" or "reference" kernels (`runtime.KERNELS`); reference
            kernels are compared with reference.npz as another runtime's outputs (looser target).

    Returns:
        [VerifyReport] per export; differences beyond the targets are reported (`missed`), not raised.

    Raises:
        EdgeError: no such export, no reference.npz or .tflite files, an unknown platform or CPU,
            a missing piece of the environment, a run that failed.

    Example:
        >>> [report] = verify("export/conv", "aarch64", ("cortex-a72", "cortex-a76"))
    """
    runtime.check_kernels(kernels)
    export_dirs = [Path(export_dirs)] if isinstance(export_dirs, (str, os.PathLike)) else [Path(d) for d in export_dirs]
    metadata = [_read_export(export_dir) for export_dir in export_dirs]
    if platform not in PLATFORMS:
        raise EdgeError(f"unknown --platform {platform!r}; choose from: {', '.join(PLATFORMS)}")
    runs, emulator = _planned_runs(platform, parse_cpus(",".join(cpus)))
    outputs = _run_everywhere(runs, export_dirs, timing_runs, kernels)
    reports = []
    for i, export_dir in enumerate(export_dirs):
        per_run = {key: per_export[i] for key, per_export in outputs.items()}
        results = _export_results(export_dir, metadata[i], per_run, kernels, emulator)
        _record(export_dir, results)
        reports.append(VerifyReport(export_dir, platform, results))
    return reports


def _planned_runs(platform, cpus):
    """([(environment, CPU, interpreter)] that `verify` runs, the emulator's name or None on x86_64)."""
    x86 = environment("x86_64")
    runs = [(x86, host_cpu(), name) for name in SITES]
    emulator = None
    if platform == "aarch64":
        arm = environment("aarch64")
        emulator = f"qemu-aarch64 {_run([arm.qemu, '--version']).split()[2]}"
        runs += [(arm, cpu, name) for cpu in cpus for name in SITES]
    return runs, emulator


def _run_everywhere(runs, export_dirs, timing_runs, kernels):
    """{(platform, CPU, interpreter): [(run.json, outputs)] per export}: all runs at once, one process each."""
    with tempfile.TemporaryDirectory(prefix="aezoo-verify-") as scratch:
        processes = [_start(env, cpu, name, export_dirs, Path(scratch) / str(i), timing_runs, kernels)
                     for i, (env, cpu, name) in enumerate(runs)]
        outputs = {}
        for (process, out_dir), (env, cpu, name) in zip(processes, runs):
            _, stderr = process.communicate()
            if process.returncode != 0:
                lines = stderr.strip().splitlines()
                raise EdgeError(f"{name} on {env.platform} {cpu} failed: {lines[-1] if lines else f'exit code {process.returncode}'}")
            outputs[env.platform, cpu, name] = [_read_run(out_dir / str(i)) for i in range(len(export_dirs))]
    return outputs


def _export_results(export_dir, metadata, runs, kernels, emulator):
    """[Result] of one export's files in every run ({(platform, CPU, interpreter): (run.json, outputs)}):
    x86_64 runs against reference.npz, emulated ones against the same interpreter on x86_64."""
    with np.load(export_dir / REFERENCE_FILE) as saved:
        reference = dict(saved)
    results = []
    for (run_platform, cpu, name), (run, values) in runs.items():
        if run_platform == "x86_64":
            baseline, against = reference, f"{REFERENCE_FILE} (the export's)"
            # reference.npz holds the outputs of the exporting ai_edge_litert's default kernels.
            cross = not (name == "ai_edge_litert" and run["version"] == metadata["created_with"]["ai_edge_litert"]
                         and kernels == "default")
        else:
            baseline, against, cross = runs["x86_64", host_cpu(), name][1], f"{name} on x86_64", False
        fields = dict(platform=run_platform, cpu=cpu, compared_with=against, cross_runtime=cross, kernels=kernels,
                      emulated=emulator if run_platform == "aarch64" else None)
        # The reference kernels promise the same int8 outputs on every CPU; the accuracy target holds everywhere.
        same_outputs = kernels == "reference" and run_platform == "aarch64"
        results += _compare(metadata, run, values, baseline, fields, None if same_outputs else reference["inputs/x"])
    return results


def _read_run(out_dir):
    """(run.json, {key: array}) that `export.edge.run_files` wrote for one export."""
    with np.load(out_dir / "outputs.npz") as saved:
        return json.loads((out_dir / "run.json").read_text()), dict(saved)


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


def host_cpu():
    """This machine's CPU model name (from /proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host_platform.machine()


def _start(env, cpu, interpreter, export_dirs, out_dir, timing_runs, kernels):
    """Starts `python -m export.edge.run_files` seeing only the interpreter's site folder and this package."""
    variables = {**os.environ, "PYTHONPATH": f"{env.site(interpreter)}{os.pathsep}{PACKAGE_ROOT}", "PYTHONNOUSERSITE": "1"}
    arguments = ["-m", "export.edge.run_files", *(str(d.resolve()) for d in export_dirs), "--out", str(out_dir),
                 "--timing-runs", str(timing_runs), "--kernels", kernels]
    process = subprocess.Popen([*env.command(cpu), *arguments], env=variables, cwd=PACKAGE_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, out_dir


def _compare(metadata, run, values, baseline, fields, inputs=None):
    """Results of one run's files against the baseline outputs (int8: in the file's output steps).

    With `inputs` (reference.npz's x), int8 files are judged by the PSNR of their reconstructions
    against the target of their `verify_contract`, else by their steps from the baseline.
    """
    results = []
    for file, ran in run["files"].items():
        entry = metadata["files"].get(file, {})
        base = dict(file=file, mode=entry.get("mode", "?"), runtime=run["runtime"], version=run["version"], **fields)
        if "refused" in ran:
            results.append(Result(**base, refused=ran["refused"]))
            continue
        diffs, steps = [], []  # diffs: (max abs diff, baseline peak |value|) per output
        for key in (k for k in values if k.startswith(f"{file}/")):
            _, signature, name = key.split("/")
            diffs.append((float(np.abs(values[key] - baseline[key]).max()), float(np.abs(baseline[key]).max())))
            scale = entry["signatures"][signature]["outputs"][name].get("scale")
            if scale:
                steps.append(round(diffs[-1][0] / scale, 2))
        diff, peak = max(diffs, key=lambda d: d[0] / runtime.float_limit(1.0, d[1]))
        accuracy = _accuracy(file, entry, values, inputs) if steps and inputs is not None else {}
        results.append(Result(**base, max_abs_diff=diff, output_peak=peak, max_int8_steps=max(steps) if steps else None,
                              ms=ran["ms"], **accuracy))
    return results


def _accuracy(file, entry, values, inputs):
    """{psnr_db, psnr_min} of an int8 file's reconstructions of `inputs`, with the target its export wrote."""
    contract = entry.get("verify_contract", {})
    if contract.get("judged_by") != "psnr":
        raise EdgeError(f"{file}: its metadata.json entry states no verify_contract (an export written before "
                        "int8 files were verified by accuracy); export it again")
    estimate = values[f"{file}/reconstruct/reconstruction"]
    return {"psnr_db": psnr(inputs, estimate, contract["psnr_peak"]), "psnr_min": contract["psnr_db_min"]}


def _record(export_dir, results):
    """Adds each result to its file's runtimes.verified_on, atomically; an earlier entry of the same runtime,
    platform, CPU and baseline is replaced (the export's own entry, against Keras, stays)."""
    path = export_dir / runtime.METADATA_FILE
    metadata = json.loads(path.read_text())
    for result in results:
        runtimes = metadata["files"][result.file].setdefault("runtimes", {})
        fields = ("runtime", "version", "kernels", "platform", "cpu", "compared_with")
        same = tuple(result.to_json()[field] for field in fields)
        runtimes["verified_on"] = [
            entry for entry in runtimes.get("verified_on", [])
            # Strings: exports written before the entries named platform and CPU; no kernels: default ones.
            if isinstance(entry, str) or tuple(entry.get(field, "default" if field == "kernels" else None)
                                               for field in fields) != same
        ] + [result.to_json()]
    runtime.write_atomically(path, lambda f: f.write((json.dumps(metadata, indent=2) + "\n").encode()))
