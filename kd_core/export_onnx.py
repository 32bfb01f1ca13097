"""Export a trained streaming student for sherpa-onnx: ``model-streaming.onnx`` (+ int8) and ``tokens.txt``.

    python -m kd_core.export_onnx --checkpoint exp/asr_kd/valid.loss.ave.pth [--config exp/asr_kd/config.yaml] --out DIR
    python -m kd_core.export_onnx --checkpoint checkpoints/checkpoint_best.pt [--data <manifest dir>] --out DIR
        [--left-chunks N] [--int8]

An ESPnet ``asr_kd`` model is recognised by its ``config.yaml`` (``--config``, or next to the checkpoint as
``asr.sh`` writes it); a ``.pt`` file without one is read as a fairseq ``kd_streaming_student`` checkpoint.
The student needs the ``kaldi_fbank`` front-end, a chunk size > 0 and no encoder look-ahead; chunk size and
history are fixed in the exported model (metadata ``chunk_size``, ``left_chunks``). The graph's interface is
documented in :mod:`kd_core.deploy.wenet_onnx`; :mod:`kd_core.deploy.runtime` runs it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from .errors import KDConfigError, require, write_error


def load_deployable(checkpoint: str, config: Optional[str] = None, data: Optional[str] = None):
    """The student in ``checkpoint`` (ESPnet or fairseq, see the module docstring) as a ``DeployableStudent``."""
    ckpt = Path(checkpoint)
    require(ckpt.is_file(), f"--checkpoint {ckpt}: no such file; give a trained ESPnet .pth or fairseq .pt student")
    if config is None and ckpt.suffix == ".pth" and (ckpt.parent / "config.yaml").is_file():
        config = str(ckpt.parent / "config.yaml")
    if config is not None:
        require(Path(config).is_file(), f"--config {config}: no such file; give the ESPnet training run's config.yaml")
        from espnet_kd.deploy import deployable_student

        return deployable_student(config, str(ckpt))
    require(ckpt.suffix == ".pt", f"--checkpoint {ckpt}: unknown checkpoint kind; an ESPnet model needs --config "
            "config.yaml, a fairseq student is a .pt file")
    from fairseq_kd.decode import deployable_student

    try:
        return deployable_student(str(ckpt), data)
    except (KeyError, AttributeError, RuntimeError) as e:
        raise KDConfigError(f"--checkpoint {ckpt}: not a fairseq kd_streaming_student checkpoint ({type(e).__name__}: "
                            f"{str(e)[:80]}); ESPnet models need --config") from None


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="ESPnet model file (.pth) or fairseq checkpoint (.pt)")
    p.add_argument("--config", help="ESPnet training config.yaml (default: next to --checkpoint)")
    p.add_argument("--data", help="fairseq: the manifest folder with the dictionary, if it moved since training")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--left-chunks", type=int, default=None, help="history in chunks (default: the student's own)")
    p.add_argument("--int8", action="store_true", help="also write model-streaming.int8.onnx (dynamic int8 MatMul weights)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        from .deploy.wenet_onnx import export_wenet_ctc

        paths = export_wenet_ctc(load_deployable(a.checkpoint, a.config, a.data), a.out, a.left_chunks, a.int8)
    except KDConfigError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # --out under a file, a read-only or full disk
        sys.exit(f"error: {write_error(e, 'ONNX export')}")
    sys.stdout.write("".join(f"{kind}: {path}\n" for kind, path in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
