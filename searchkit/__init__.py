"""searchkit: multimodal semantic search over image folders."""

__version__ = "0.1.0"
