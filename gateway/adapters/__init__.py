"""Managing LoRA adapters on running vLLM servers (`nanoroute adapters`); their manifests are read by
the config loader (`gateway/config/manifest.py`)."""
