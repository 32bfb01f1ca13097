#!/usr/bin/env python3
"""Merge YAML configs: later files override earlier ones; nested dicts (``*_conf``) merge key by key.

Usage: ``local/merge_yaml.py base.yaml override.yaml [...] > merged.yaml``
"""
import sys

import yaml


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


if __name__ == "__main__":
    cfg: dict = {}
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            cfg = merge(cfg, yaml.safe_load(f) or {})
    yaml.safe_dump(cfg, sys.stdout, sort_keys=False)
