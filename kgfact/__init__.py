"""kgfact: measure and explain how fine-tuning data changes what a language model gets right."""

__version__ = "0.1.0"
