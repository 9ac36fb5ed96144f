"""Every shipped preset's default export verified on both interpreters, on x86_64 and an emulated Cortex-A72.

Not a test. Each preset is exported as `aezoo export PRESET --out ROOT/PRESET` makes it (float32
and int8, calibrated on the preset's own data), then `aezoo verify ROOT/* --platform aarch64`
runs them all (one emulated process per interpreter). The table gives per preset the int8 file's
PSNR (dB, on the export's held-out examples) and its largest distance in output steps from the
baseline on each runtime and platform, its target (the export's verify_contract) and the verdict.

Example:
    python -m recipes.tools.verify_presets /tmp/presets --docs
    python -m recipes.tools.verify_presets /tmp/presets --reuse   # the exports already in ROOT
"""

import argparse
import json
import sys
from pathlib import Path

INT8_FILE = "model_int8.tflite"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("root", type=Path, help="the folder the exports are written to, one per preset")
    parser.add_argument("--reuse", action="store_true", help="keep exports already in ROOT (export only missing ones)")
    parser.add_argument("--platform", choices=("x86_64", "aarch64"), default="aarch64", help="as aezoo verify's")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/boards.md")
    args = parser.parse_args(argv)
    import zoo
    from export import export_model
    from export.builder import aarch64

    folders = {name: args.root / name for name in zoo.list_presets()}
    for name, folder in folders.items():
        if not (args.reuse and (folder / "metadata.json").is_file()):
            dataset = zoo.preset_info(name)["dataset"]
            print(export_model(zoo.from_preset(name), folder, "float32,int8", calibration_data=dataset), file=sys.stderr)
    reports = aarch64.verify(list(folders.values()), args.platform, ("cortex-a72",))
    text = table(dict(zip(folders, reports)), f"python -m recipes.tools.verify_presets ROOT --platform {args.platform}")
    print(text)
    if args.docs:
        from recipes.tools.doc_tables import write_docs_section

        write_docs_section("verify-presets", text)
    return 1 if any(report.missed for report in reports) else 0


def table(reports, command):
    """Markdown: per preset, the int8 file's PSNR / steps per runtime and platform, its target, the verdict."""
    columns = [("ai_edge_litert", "x86_64"), ("tflite_runtime", "x86_64"), ("ai_edge_litert", "aarch64"),
               ("tflite_runtime", "aarch64")]
    rows = [f"`{command}`", "",
            "| preset | Keras PSNR | int8 target | " + " | ".join(f"{r} {p}: PSNR / steps" for r, p in columns)
            + " | verdict |", "|---" * (len(columns) + 4) + "|"]
    for name, report in reports.items():
        contract = json.loads((report.export_dir / "metadata.json").read_text())["files"][INT8_FILE]["verify_contract"]
        cells = []
        for runtime_name, platform in columns:
            ran = [r for r in report.results if r.file == INT8_FILE and r.runtime == runtime_name and r.platform == platform]
            cells += [f"{r.psnr_db:.2f} / {r.max_int8_steps:g}" for r in ran] or ["-"]  # "-": not run (--platform x86_64)
        verdict = "MISSED: " + ", ".join(f"{r.file} {r.runtime} {r.platform}" for r in report.missed) if report.missed \
            else "verified"
        rows.append(f"| `{name}` | {contract['keras_psnr_db']:.2f} | >= {contract['psnr_db_min']:.2f} | "
                    + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
