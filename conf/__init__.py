"""The pipeline's Hydra configs, installed with the package as ``pipeline.conf`` (pyproject.toml)."""
