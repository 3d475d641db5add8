"""domain-embed: turn a general text-embedding model into a domain specialist.

One module per pipeline stage (``trainer.ingest``, ...), driven alike by the CLI
(``python -m trainer``), YAML configs and the Gradio Space.
"""

__version__ = "0.1.0"
