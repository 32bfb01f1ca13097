"""Entry points: ``python -m espnet_kd.bin.asr_kd_train`` (also ``espnet2.bin.asr_kd_train``)."""
