"""The package's layering: inference and pseudo masks load model files without training code."""

import subprocess
import sys


def test_inference_cams_and_evaluation_do_not_import_lightning():
    code = (
        "import sys, segmix.models, segmix.cam, segmix.eval, segmix.infer\n"
        "print(sorted(m for m in ('lightning', 'torchmetrics', 'segmix.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_training_stages_do_import_it():  # the check above can fail: it sees Lightning when it is there
    code = "import sys, segmix.train\nprint('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
