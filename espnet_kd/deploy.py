"""An ``asr_kd`` ESPnet student as the core's :class:`~kd_core.deploy.wenet_onnx.DeployableStudent` (for
``python -m kd_core.export_onnx --checkpoint exp/asr_kd/valid.loss.ave.pth --config exp/asr_kd/config.yaml``)."""
from __future__ import annotations

import torch

from kd_core.deploy.wenet_onnx import DeployableStudent
from kd_core.errors import require


def deployable_student(config: str, model_file: str) -> DeployableStudent:
    """Build the trained model with ESPnet's own loader and hand over its core front-end, encoder, CTC head and
    token list; ``global_mvn`` (a per-frame affine map of the front-end output) goes into the graph as one."""
    from espnet2.layers.global_mvn import GlobalMVN

    from espnet_kd.bin.asr_kd_inference import check_streamable
    from espnet_kd.task import ASRKDTask

    model, _ = ASRKDTask.build_model_from_file(config, model_file, "cpu")
    model.eval()
    check_streamable(model, "export_onnx")
    scale = shift = None
    norm = model.normalize
    if isinstance(norm, GlobalMVN):
        mean, std = norm.mean.float(), norm.std.float()  # ESPnet keeps the statistics in float64
        scale = 1.0 / std if norm.norm_vars else torch.ones_like(std)
        shift = -mean * scale if norm.norm_means else torch.zeros_like(mean)
    require(model.ctc is not None, f"{model_file}: the model has no CTC head (ctc_weight 0); the runtime decodes CTC")
    return DeployableStudent(model.frontend.net, model.encoder.net, model.ctc.ctc_lo, list(model.token_list),
                             word_boundary="<space>", frame_scale=scale, frame_shift=shift)
