"""LoRA adapters: their manifests, and managing them on running vLLM servers."""
