"""espnet_kd.export: the exported config is a stock ESPnet ASR config, with no KD-only option left."""
import yaml
from espnet2.tasks.asr import ASRTask

from espnet_kd.export import kd_only_options, student_config
from espnet_kd.task import ASRKDTask


def test_exported_config_has_no_kd_option_and_only_asr_train_options():
    config = ASRKDTask.get_default_config()
    config.update(teacher_type="fairseq", teacher_path="/train/machine/hubert.pt", teacher_cache_dir="/train/machine/cache",
                  kd_den_graph_source="teacher", kd_init_from_teacher=True, kd_loss="layerwise",
                  kd_loss_conf={"layer_map": "4:2"})
    options, model_conf = kd_only_options()
    # every option the task adds is derived (the hand-kept list had fallen behind these)
    assert {"teacher_cache_dir", "teacher_cache_mode", "teacher_cache_dtype", "kd_den_graph_source",
            "kd_den_graph_max_utts", "kd_init_from_teacher", "teacher_type", "teacher_path", "teacher_conf",
            "kd_loss", "kd_loss_conf"} <= set(options)
    assert set(model_conf) == {"kd_weight", "asr_weight", "kd_max_nonfinite"}
    cfg, stock = student_config(yaml.safe_load(yaml.safe_dump(config)))
    assert not set(cfg) & set(options) and not set(cfg["model_conf"]) & set(model_conf)
    assert "/train/machine" not in yaml.safe_dump(cfg)  # no path from the training machine
    assert cfg["model"] == "espnet"
    assert set(cfg) <= set(ASRTask.get_default_config()), sorted(set(cfg) - set(ASRTask.get_default_config()))
    assert stock == (cfg.get("frontend") != "kd_streaming" and cfg.get("encoder") != "kd_chunked")
