"""visinstruct: build visual instruction-tuning datasets in the LLaVA format."""

__version__ = "0.1.0"
