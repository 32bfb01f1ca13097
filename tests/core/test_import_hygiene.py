"""The core must stay toolkit-neutral: importing it must not import ESPnet or fairseq."""
import subprocess
import sys


def test_core_does_not_import_toolkits():
    code = ("import sys, kd_core, kd_core.students, kd_core.losses, kd_core.teachers, kd_core.streaming;"
            "bad = [m for m in ('espnet2', 'fairseq', 'espnet_model_zoo') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
