"""Integrations with other libraries, each imported lazily so pyflashattn depends on none of them.

``pyflashattn.integrations.transformers.register()``: Hugging Face transformers.
"""
