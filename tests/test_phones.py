"""`aezoo export --phone` and docs/phones.md: the phone folder holds what the app snippets use, and
every signature, input and output name in the snippets exists in the exported files."""

import json
import re
from pathlib import Path

import pytest
from export_helpers import train_briefly

from export import export_model, runtime
from export.builder.exporter import PHONE_DIR, PHONE_MODES, tflite_name

pytestmark = pytest.mark.slow  # an export with float16 and int8 files

ROOT = Path(__file__).resolve().parents[1]
PHONES_DOC = ROOT / "docs" / "phones.md"
SNIPPET = re.compile(r"```(kotlin|swift)\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def phone_export(tmp_path_factory):
    import zoo

    digits = zoo.data.load("digits")
    model = train_briefly("conv_ae", digits)
    card = tmp_path_factory.mktemp("card") / "card.md"
    card.write_text("# conv_ae on digits\n")
    out_dir = tmp_path_factory.mktemp("phone") / "export"
    report = export_model(model, out_dir, quantize="float32", calibration_data=digits, calibration_samples=50,
                          verify_samples=16, phone=True, card=card)
    return out_dir, report


def test_phone_folder_holds_the_float16_and_int8_files_card_and_contract(phone_export):
    out_dir, report = phone_export
    folder = out_dir / PHONE_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted([*map(tflite_name, PHONE_MODES), "MODEL_CARD.md", "README.md"])
    assert {check.mode for check in report.checks} >= {"float32", *PHONE_MODES}  # --phone added its modes
    metadata = json.loads((out_dir / runtime.METADATA_FILE).read_text())
    readme = (folder / "README.md").read_text()
    for mode in PHONE_MODES:
        assert (folder / tflite_name(mode)).read_bytes() == (out_dir / tflite_name(mode)).read_bytes()
        for signature, tensors in metadata["files"][tflite_name(mode)]["signatures"].items():
            for name, tensor in {**tensors["inputs"], **tensors["outputs"]}.items():
                row = f"| {signature} | {'input' if name in tensors['inputs'] else 'output'} | {name} | {tensor['shape']} |"
                assert row in readme
    assert (folder / "MODEL_CARD.md").read_text() == "# conv_ae on digits\n"


def _snippet_names(language):
    """The quoted names and the .tflite files a docs/phones.md snippet of `language` uses."""
    blocks = [code for lang, code in SNIPPET.findall(PHONES_DOC.read_text()) if lang == language]
    assert blocks, f"no {language} snippet in {PHONES_DOC}"
    code = "\n".join(blocks)
    files = set(re.findall(r'"(model_\w+)"(?:, ofType: "tflite")?', code)) | set(re.findall(r"(model_\w+)\.tflite", code))
    names = set(re.findall(r'"(\w+)"', code)) - files - {"tflite"}
    return names, {name if name.endswith(".tflite") else f"{name}.tflite" for name in files}


@pytest.mark.parametrize("language", ["kotlin", "swift"])
def test_every_name_a_snippet_uses_exists_in_the_phone_files(phone_export, language):
    out_dir, _ = phone_export
    names, files = _snippet_names(language)
    assert files and files <= {p.name for p in (out_dir / PHONE_DIR).glob("*.tflite")}
    for file in files:
        from ai_edge_litert.interpreter import Interpreter

        signatures = Interpreter(model_path=str(out_dir / PHONE_DIR / file)).get_signature_list()
        known = set(signatures) | {n for s in signatures.values() for n in (*s["inputs"], *s["outputs"])}
        assert names and names <= known, f"{language} snippet names {sorted(names - known)} that {file} lacks"
